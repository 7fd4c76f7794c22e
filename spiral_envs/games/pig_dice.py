"""Pig Dice rules: roll one die to build a turn total, hold to bank it; first to the target wins.

On your turn, ``[roll]`` a six-sided die: a 2-6 adds to your turn total and you go on; a 1
wipes the turn total and ends your turn. ``[hold]`` banks the turn total into your score and
ends your turn (holding with a turn total of 0 is legal and banks nothing). Banking enough to
reach the target wins at once. Player 0 starts.

The game's own turn cap, ``max_game_turns``, counts completed player turns of both players
together (a turn ends with ``[hold]`` or a rolled 1), as in the reference implementation: with
the default even cap each player gets the same number of turns. When the cap is reached the
higher banked score wins and equal scores are a draw. ``[r]`` and ``[h]`` are accepted as
short forms of ``[roll]`` and ``[hold]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral_envs.core import Game, GameState, Invalid, Parsed, bracketed, win_returns, winner_id

ROLL, HOLD = 0, 1
ACTION_NAMES = ("[roll]", "[hold]")
_MOVE_WORDS = {"roll": ROLL, "r": ROLL, "hold": HOLD, "h": HOLD}
_NO_MOVE = "no move found; write [roll] to throw the die or [hold] to bank your turn total"
_MOVES_PER_GAME_TURN = 20
"""Adapter cap (submitted moves) per game turn: far above the ~2 moves of an average turn."""


class PigDice(Game):
    """Pig with one die; SPIRAL's PigDice-v1 by default (target 50, 50 turns).

    Args:
        target: banked points that win the game at once (default 50).
        max_game_turns: completed player turns, both players together, after which the
            higher banked score wins (default 50).

    Observation (float32, each in [0, 1]): ``[my banked score, opponent's banked score,
    current turn total, turns played]``; the first three are divided by ``target`` and
    clipped at 1 (a turn total at the target already wins by holding, a banked score at the
    target has ended the game), the last is completed turns / ``max_game_turns``. The turn
    total belongs to the player to move.
    """

    id = "PigDice-v1"
    actions = ACTION_NAMES
    observation_shape = (4,)
    legend = "P0 = player_0, P1 = player_1; the turn total belongs to the player to play"

    def __init__(self, target: int = 50, max_game_turns: int = 50) -> None:
        for name, value in (("target", target), ("max_game_turns", max_game_turns)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.target = target
        self.max_game_turns = max_game_turns
        self.max_turns = _MOVES_PER_GAME_TURN * max_game_turns
        self.score_scale = 1.0 / target
        self.turn_scale = 1.0 / max_game_turns

    def rules(self, player: int) -> str:
        return (
            f"You are Player {player} in Pig Dice, a two-player zero-sum dice game against "
            f"Player {1 - player}. Player 0 takes the first turn.\n"
            "On your turn you keep choosing between [roll] and [hold]. [roll] throws one "
            "six-sided die: a 2 to 6 is added to your turn total and your turn goes on, but a 1 "
            "wipes out your turn total and ends your turn. [hold] adds your turn total to your "
            "banked score and ends your turn (holding with nothing to bank just passes).\n"
            f"The first player to bank {self.target} points or more wins at once. The game "
            f"lasts at most {self.max_game_turns} turns, counting both players' turns together; "
            "after that the higher banked score wins and equal scores are a draw.\n"
            "Write your choice in square brackets: [roll] or [hold].\n"
        )

    def new_state(self, rng: np.random.Generator) -> PigDiceState:
        return PigDiceState(self, rng)


class PigDiceV0(PigDice):
    """The reference library's original Pig Dice: target 100, 100 turns."""

    id = "PigDice-v0"

    def __init__(self, target: int = 100, max_game_turns: int = 100) -> None:
        super().__init__(target=target, max_game_turns=max_game_turns)


class PigDiceState(GameState):
    game: PigDice

    def __init__(self, game: PigDice, rng: np.random.Generator) -> None:
        super().__init__(game, rng)
        self.scores = [0, 0]
        self.turn_total = 0
        self.turns_played = 0
        self.winner: int | None = None
        self.decided_by: str | None = None
        self.log.game(
            f"Player 0 starts. First to bank {game.target} wins; at most "
            f"{game.max_game_turns} turns in all."
        )

    def legal_actions(self) -> list[int]:
        return [ROLL, HOLD]

    def parse(self, text: str) -> Parsed | Invalid:
        for match in bracketed(text):
            move = _MOVE_WORDS.get(" ".join(match[1].split()).lower())
            if move is not None:
                return Parsed(move)
        return Invalid(_NO_MOVE)

    def illegal_reason(self, move: Any) -> str | None:
        return None

    def apply(self, move: int) -> None:
        player = self.current_player
        if move == HOLD:
            banked = self.turn_total
            self.scores[player] += banked
            self.log.game(
                f"Player {player} holds and banks {banked}; score {self.scores[player]}."
            )
            if self.scores[player] >= self.game.target:
                self._finish(player, "target")
                return
            self._end_turn()
            return
        face = int(self.rng.integers(1, 7))
        if face == 1:
            self.log.game(
                f"Player {player} rolls a 1 and loses the turn total of {self.turn_total}."
            )
            self._end_turn()
        else:
            self.turn_total += face
            self.log.game(f"Player {player} rolls a {face}; turn total {self.turn_total}.")

    def _end_turn(self) -> None:
        self.turn_total = 0
        self.turns_played += 1
        if self.turns_played >= self.game.max_game_turns:
            s0, s1 = self.scores
            self._finish(None if s0 == s1 else (0 if s0 > s1 else 1), "turn cap")
            return
        self.current_player = 1 - self.current_player
        self.log.game(
            f"Turn {self.turns_played + 1} of {self.game.max_game_turns}: Player "
            f"{self.current_player} to play. Scores: Player 0 {self.scores[0]}, "
            f"Player 1 {self.scores[1]}."
        )

    def _finish(self, winner: int | None, decided_by: str) -> None:
        self.terminal = True
        self.winner = winner
        self.decided_by = decided_by
        s0, s1 = self.scores
        if decided_by == "target":
            self.log.game(f"Player {winner} reaches {self.game.target} and wins the game.")
        elif winner is None:
            self.log.game(
                f"The {self.game.max_game_turns} turns are played and the scores are level at "
                f"{s0}: a draw."
            )
        else:
            self.log.game(
                f"The {self.game.max_game_turns} turns are played; scores {s0} to {s1}: "
                f"Player {winner} wins the game."
            )

    def returns(self) -> tuple[float, float]:
        return win_returns(self.winner)

    def details(self) -> dict[str, Any]:
        return {
            "scores": list(self.scores),
            "turns_played": self.turns_played,
            "winner": winner_id(self.winner),
            "decided_by": self.decided_by or "",
        }

    def observation(self, player: int) -> np.ndarray:
        game = self.game
        scale = game.score_scale
        return np.array(
            (
                min(self.scores[player] * scale, 1.0),
                min(self.scores[1 - player] * scale, 1.0),
                min(self.turn_total * scale, 1.0),
                self.turns_played * game.turn_scale,
            ),
            dtype=np.float32,
        )

    def state_text(self, player: int) -> str:
        game = self.game
        if self.terminal:
            return (
                f"Final banked scores: you {self.scores[player]}, opponent "
                f"{self.scores[1 - player]}, after {self.turns_played} turns."
            )
        whose = "yours" if player == self.current_player else "your opponent's"
        return (
            f"Banked scores: you {self.scores[player]}, opponent {self.scores[1 - player]} "
            f"(first to {game.target} wins).\nTurn {self.turns_played + 1} of "
            f"{game.max_game_turns} is {whose}; turn total so far: {self.turn_total}."
        )

    def render(self) -> str:
        return (
            f"scores P0={self.scores[0]} P1={self.scores[1]}  to play: P{self.current_player}  "
            f"turn total={self.turn_total}  "
            f"turns played={self.turns_played}/{self.game.max_game_turns}"
        )
