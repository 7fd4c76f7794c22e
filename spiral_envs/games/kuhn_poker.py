"""Kuhn Poker rules (SPIRAL's KuhnPoker-v1): several hands of three-card poker, chip leader wins.

Each round both players ante, get one card of J < Q < K (dealt without replacement) and bet
once at most: opener check -> other check (showdown) | other bet -> opener call (showdown) or
fold; opener bet -> other call (showdown) or fold. A bet or a call adds one chip to the pot.
Player 1 opens the first round by default and the opener alternates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral_envs.core import Game, GameState

CARDS = ("J", "Q", "K")
CHECK, BET, CALL, FOLD = range(4)
ACTION_NAMES = ("[check]", "[bet]", "[call]", "[fold]")
_VERBS = ("checks", "bets 1 chip", "calls", "folds")
REWARDS = ("win", "chips")
OBJECTIVES = {
    "win": "Whoever has won more chips after the last hand wins the game; equal chips is a draw.",
    "chips": "Your score is the chips you win or lose: every chip counts.",
}
# Legal actions after each betting history of a round (histories not listed are over).
_LEGAL = {(): [CHECK, BET], (CHECK,): [CHECK, BET], (BET,): [CALL, FOLD], (CHECK, BET): [CALL, FOLD]}


class KuhnPoker(Game):
    """Kuhn poker over ``rounds`` hands; ``rounds=1`` is the standard single-hand game.

    Args:
        rounds: hands played (default 5).
        ante: chips each player puts in the pot before every hand (default 1).
        first_opener: player who acts first in the first hand (default 1, as in SPIRAL).
        reward: ``"win"`` (default, as in SPIRAL and TextArena): +1 / -1 / 0 for having won
            more / fewer / as many chips as the opponent after the last hand; ``"chips"``: the
            chips won, divided by ``rounds * (ante + 1)`` (the most a player can win) so that
            it lies in [-1, 1]. Exploitability is measured in chips: with one hand and
            ``"win"``, folding and calling with the lowest card both lose 1, so the game
            trained is not the one measured (calling is never worse than folding).
    """

    id = "KuhnPoker-v1"
    actions = ACTION_NAMES
    observation_shape = (20,)
    observation_low = -1.0
    observation_high = 1.0
    legend = "P0 = player_0, P1 = player_1; chips = chips won so far; betting = this hand's actions"

    def __init__(self, rounds: int = 5, ante: int = 1, first_opener: int = 1, reward: str = "win") -> None:
        if not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"rounds must be a positive int, got {rounds!r}")
        if not isinstance(ante, int) or ante < 1:
            raise ValueError(f"ante must be a positive int, got {ante!r}")
        if first_opener not in (0, 1):
            raise ValueError(f"first_opener must be 0 or 1, got {first_opener!r}")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        self.rounds, self.ante, self.first_opener, self.reward = rounds, ante, first_opener, reward
        self.max_turns = 4 * rounds + 10
        self.chip_scale = float(rounds * (ante + 1))

    def rules(self, player: int) -> str:
        hands = "one hand" if self.rounds == 1 else f"{self.rounds} hands"
        return (
            f"You are Player {player} in Kuhn Poker, a two-player zero-sum card game of "
            f"{hands}, against Player {1 - player}.\n"
            f"The deck has three cards, J < Q < K. Every hand, each player antes {self.ante} "
            "chip(s) into the pot and is dealt one card that only they can see. The opener "
            "acts first; Player {0} opens the first hand and the opener alternates.\n"
            "Betting: the opener may [check] or [bet]. After a check the other player may "
            "[check] (showdown) or [bet]; facing a bet a player may [call] (showdown) or "
            "[fold] (the bettor takes the pot). A bet or a call adds 1 chip to the pot. At a "
            "showdown the higher card takes the pot.\n"
            f"{OBJECTIVES[self.reward]} Write your action in square brackets, e.g. [bet].\n"
        ).format(self.first_opener)

    def new_state(self, rng: np.random.Generator) -> KuhnPokerState:
        return KuhnPokerState(self, rng)


class KuhnPokerState(GameState):
    game: KuhnPoker

    def __init__(self, game: KuhnPoker, rng: np.random.Generator) -> None:
        super().__init__(game, rng)
        self.round = 0
        self.chips = [0, 0]
        self.round_results: list[dict[str, Any]] = []
        self._deal()

    def _deal(self) -> None:
        game = self.game
        self.round += 1
        self.opener = game.first_opener if self.round % 2 == 1 else 1 - game.first_opener
        self.current_player = self.opener
        self.cards = [int(c) for c in self.rng.permutation(3)[:2]]
        self.contributed = [game.ante, game.ante]
        self.history: list[int] = []
        self.log.game(
            f"Hand {self.round} of {game.rounds}: both players ante {game.ante}; "
            f"Player {self.opener} opens."
        )
        for p in range(2):
            self.log.game(f"Your card for hand {self.round} is {CARDS[self.cards[p]]}.", to=p)

    def legal_actions(self) -> list[int]:
        return _LEGAL[tuple(self.history)]

    def apply(self, move: int) -> None:
        player = self.current_player
        self.history.append(move)
        self.log.game(f"Player {player} {_VERBS[move]}.")
        if move in (BET, CALL):
            self.contributed[player] += 1
        if move == FOLD:
            self._settle(winner=1 - player, showdown=False)
        elif self.history in ([CHECK, CHECK], [BET, CALL], [CHECK, BET, CALL]):
            winner = 0 if self.cards[0] > self.cards[1] else 1
            self._settle(winner=winner, showdown=True)
        else:
            self.current_player = 1 - player

    def _settle(self, winner: int, showdown: bool) -> None:
        pot = sum(self.contributed)
        won = self.contributed[1 - winner]
        self.chips[winner] += won
        self.chips[1 - winner] -= won
        if showdown:
            self.log.game(
                f"Showdown: Player 0 shows {CARDS[self.cards[0]]}, Player 1 shows "
                f"{CARDS[self.cards[1]]}. Player {winner} wins the pot of {pot} chips."
            )
        else:
            self.log.game(f"Player {winner} wins the pot of {pot} chips without a showdown.")
        self.round_results.append(
            {
                "round": self.round,
                "cards": [CARDS[c] for c in self.cards] if showdown else None,
                "actions": [ACTION_NAMES[a] for a in self.history],
                "winner": winner,
                "pot": pot,
                "chip_change": [won if p == winner else -won for p in range(2)],
            }
        )
        self.log.game(f"Chips after hand {self.round}: Player 0 {self.chips[0]:+d}, Player 1 {self.chips[1]:+d}.")
        if self.round == self.game.rounds:
            self.terminal = True
            c0, c1 = self.chips
            result = "a draw" if c0 == c1 else f"Player {0 if c0 > c1 else 1} wins the game"
            self.log.game(f"The last hand is over: {result}.")
        else:
            self._deal()

    def returns(self) -> tuple[float, float]:
        c0, c1 = self.chips
        if self.game.reward == "chips":
            return (c0 / self.game.chip_scale, c1 / self.game.chip_scale)
        return (0.0, 0.0) if c0 == c1 else ((1.0, -1.0) if c0 > c1 else (-1.0, 1.0))

    def details(self) -> dict[str, Any]:
        return {"chips": list(self.chips), "rounds": list(self.round_results)}

    def observation(self, player: int) -> np.ndarray:
        game = self.game
        obs = np.zeros(20, dtype=np.float32)
        obs[self.cards[player]] = 1.0
        obs[3] = self.opener == player
        obs[4] = self.round / game.rounds
        obs[5] = self.chips[player] / game.chip_scale
        obs[6] = self.chips[1 - player] / game.chip_scale
        obs[7] = sum(self.contributed) / (2 * (game.ante + 1))
        for i, a in enumerate(self.history):
            obs[8 + 4 * i + a] = 1.0
        return obs

    def state_text(self, player: int) -> str:
        bets = ", ".join(
            f"Player {self.opener if i % 2 == 0 else 1 - self.opener} {_VERBS[a]}"
            for i, a in enumerate(self.history)
        )
        return (
            f"Hand {self.round} of {self.game.rounds}. Your card: {CARDS[self.cards[player]]}. "
            f"Pot: {sum(self.contributed)} chips. Chips won so far: you {self.chips[player]:+d}, "
            f"opponent {self.chips[1 - player]:+d}.\nBetting this hand: {bets or 'none yet'}."
        )

    def render(self) -> str:
        return (
            f"Hand {self.round}/{self.game.rounds}  cards P0={CARDS[self.cards[0]]} "
            f"P1={CARDS[self.cards[1]]}  pot={sum(self.contributed)}  chips={self.chips}  "
            f"betting={[ACTION_NAMES[a] for a in self.history]}"
        )
