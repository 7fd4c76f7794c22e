"""Liar's Dice rules: bid on the dice under both cups, call a bluff, lose dice, lose the game.

Each player rolls ``dice`` six-sided dice (5 by default) that only they can see. Players take
turns; a turn is ``[Bid: quantity, face]`` (at least ``quantity`` dice across both hands show
``face``), which must raise the last bid of the round (a higher quantity with any face, or the
same quantity with a higher face; quantity 1 to the dice in play, face 1 to 6), or ``[Call]``
to challenge the last bid (not allowed before the round's first bid). On a call both hands are
shown and the face is counted over both, with no wild faces: if fewer dice show it than bid,
the bidder loses a die, otherwise the caller does. Both players then re-roll their remaining
dice for a new round, which the loser of the last round opens; Player 0 opens the first round.
Whoever loses their last die loses the game.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from spiral_envs.core import (
    Game,
    GameState,
    Invalid,
    Parsed,
    bracketed,
    quote,
    win_returns,
    winner_id,
)

FACES = 6
_BID = re.compile(r"bid ?:? ?([0-9]+)(?: ?, ?| )([0-9]+)")
_NO_MOVE = "no move found; write [Bid: quantity, face], e.g. [Bid: 2, 5], or [Call]"


def action_names(dice: int) -> tuple[str, ...]:
    """Every ``[Bid: q, f]`` for q in 1..2*dice and f in 1..6, in raising order, then ``[Call]``."""
    bids = (f"[Bid: {q}, {f}]" for q in range(1, 2 * dice + 1) for f in range(1, FACES + 1))
    return (*bids, "[Call]")


def bid_index(quantity: int, face: int) -> int:
    """Action index of ``[Bid: quantity, face]``; a bid raises another iff its index is higher."""
    return (quantity - 1) * FACES + face - 1


def bid_of(index: int) -> tuple[int, int]:
    """``(quantity, face)`` of a bid action index."""
    quantity, face = divmod(index, FACES)
    return quantity + 1, face + 1


class LiarsDice(Game):
    """Two-player Liar's Dice with no wild faces.

    Args:
        dice: dice each player starts with (default 5).

    Actions: ``[Bid: q, f]`` for q in 1..2*dice and f in 1..6 (index ``(q-1)*6 + f-1``),
    then ``[Call]`` (index ``12*dice``).

    Observation (float32, each in [0, 1]): indexes 0-5 how many of my dice show faces 1-6,
    divided by ``dice``; 6 my dice left / ``dice``; 7 my opponent's dice left / ``dice``;
    8 the current bid's quantity / (2 * ``dice``); 9 its face / 6 (8 and 9 are 0 before the
    round's first bid). Nothing of the opponent's hidden hand is included.
    """

    id = "LiarsDice-v1"
    actions = action_names(5)
    observation_shape = (10,)
    legend = "P0 = player_0, P1 = player_1; bid QxF = at least Q dice show face F"

    def __init__(self, dice: int = 5) -> None:
        if not isinstance(dice, int) or isinstance(dice, bool) or dice < 1:
            raise ValueError(f"dice must be a positive int, got {dice!r}")
        self.dice = dice
        self.max_quantity = 2 * dice
        self.call = FACES * self.max_quantity
        self.actions = action_names(dice)
        # A round with t dice in play takes at most 6t bids and a call; the dice in play drop
        # by one a round from 2*dice to 2. Twice that leaves room for retried invalid moves.
        most_moves = sum(FACES * t + 1 for t in range(2, self.max_quantity + 1))
        self.max_turns = 2 * most_moves
        self.observation_scale = np.array(
            [1.0 / dice] * 8 + [1.0 / self.max_quantity, 1.0 / FACES], dtype=np.float32
        )

    def rules(self, player: int) -> str:
        d = self.dice
        return (
            f"You are Player {player} in Liar's Dice, a two-player zero-sum bluffing game "
            f"against Player {1 - player}. Each of you starts with {d} six-sided dice; every "
            "round both players roll all the dice they have left, and each sees only their "
            "own.\n"
            "Players take turns, Player 0 opening the first round. On your turn either bid or "
            "call:\n"
            "  [Bid: quantity, face]  claim that at least that many dice, counting both hands "
            "together, show that face, e.g. [Bid: 3, 4]. A bid must raise the last bid of the "
            "round: a higher quantity with any face, or the same quantity with a higher face. "
            "The quantity runs from 1 to the number of dice in play, the face from 1 to 6.\n"
            "  [Call]  challenge the last bid (not possible before the round's first bid).\n"
            "On a call both hands are shown and the dice showing the bid face are counted; no "
            "face is wild. If fewer dice show it than the bid claims, the bidder loses one die; "
            "otherwise the caller loses one die. The loser of a round opens the next one. "
            "Whoever loses their last die loses the game.\n"
        )

    def new_state(self, rng: np.random.Generator) -> LiarsDiceState:
        return LiarsDiceState(self, rng)


class LiarsDiceState(GameState):
    game: LiarsDice

    def __init__(self, game: LiarsDice, rng: np.random.Generator) -> None:
        super().__init__(game, rng)
        self.dice_left = [game.dice, game.dice]
        self.round = 0
        self.rounds: list[dict[str, Any]] = []
        self.winner: int | None = None
        self._start_round(opener=0)

    def _start_round(self, opener: int) -> None:
        self.round += 1
        self.opener = self.current_player = opener
        self.hands = [
            tuple(sorted(self.rng.integers(1, FACES + 1, size=n).tolist())) for n in self.dice_left
        ]
        self.face_counts = [[hand.count(f) for f in range(1, FACES + 1)] for hand in self.hands]
        self.bid = -1  # action index of the standing bid; -1 before the round's first bid
        self.bids: list[tuple[int, int, int]] = []  # (player, quantity, face) this round
        self.total_dice = self.dice_left[0] + self.dice_left[1]
        self.log.game(
            f"Round {self.round}: Player 0 has {_dice(self.dice_left[0])}, Player 1 has "
            f"{_dice(self.dice_left[1])} ({self.total_dice} in play). Player {opener} bids first."
        )
        for p in range(2):
            self.log.game(f"Your dice for round {self.round}: {_dice_text(self.hands[p])}.", to=p)

    # --- moves -------------------------------------------------------------------------
    def legal_actions(self) -> list[int]:
        bids = list(range(self.bid + 1, FACES * self.total_dice))
        if self.bid >= 0:
            bids.append(self.game.call)
        return bids

    def parse(self, text: str) -> Parsed | Invalid:
        unreadable = None
        for match in bracketed(text):
            inner = " ".join(match[1].split()).lower()
            if inner == "call":
                return Parsed(self.game.call)
            if not inner.startswith("bid"):
                continue
            bid = _BID.fullmatch(inner)
            if bid is None:
                unreadable = unreadable or (
                    f"could not read the bid [{quote(match[1])}]; write it as "
                    "[Bid: quantity, face], e.g. [Bid: 3, 4]"
                )
                continue
            quantity, face = bid.groups()
            limit = self.game.max_quantity
            if len(quantity) > 6 or not 1 <= int(quantity) <= limit:
                return Invalid(
                    f"bid quantity {quantity[:12]} is out of range; it must be 1 to {limit}"
                )
            if len(face) > 1 or not "1" <= face <= "6":
                return Invalid(f"bid face {face[:12]} is out of range; faces are 1 to 6")
            return Parsed(bid_index(int(quantity), int(face)))
        return Invalid(unreadable or _NO_MOVE)

    def illegal_reason(self, move: Any) -> str | None:
        if move == self.game.call:
            if self.bid < 0:
                return "there is no bid to call yet; open the round with a bid, e.g. [Bid: 1, 2]"
            return None
        quantity, face = bid_of(move)
        if quantity > self.total_dice:
            return (
                f"[Bid: {quantity}, {face}] names more dice than the {self.total_dice} in play"
            )
        if move <= self.bid:
            q, f = bid_of(self.bid)
            return (
                f"[Bid: {quantity}, {face}] does not raise the current bid of {_dice(q)} showing "
                f"{f}; bid more dice, or {_dice(q)} with a higher face, or [Call]"
            )
        return None

    def moves_text(self) -> str:
        total = self.total_dice
        if self.bid < 0:
            return (
                "Your legal moves: open the round with [Bid: quantity, face], quantity 1 to "
                f"{total} and face 1 to 6, e.g. [Bid: 1, 6]. There is no bid to [Call] yet."
            )
        q, f = bid_of(self.bid)
        options = ["[Call]"]
        if f < FACES:
            options.append(f"[Bid: {q}, face] with a face from {f + 1} to 6")
        if q < total:
            options.append(
                f"[Bid: quantity, face] with a quantity from {q + 1} to {total} and any face"
            )
        return "Your legal moves: " + "; or ".join(options) + "."

    def apply(self, move: int) -> None:
        player = self.current_player
        if move != self.game.call:
            quantity, face = bid_of(move)
            self.bid = move
            self.bids.append((player, quantity, face))
            self.log.game(f"Player {player} bids that at least {_dice(quantity)} show {face}.")
            self.current_player = 1 - player
            return
        bidder = 1 - player
        quantity, face = bid_of(self.bid)
        count = self.face_counts[0][face - 1] + self.face_counts[1][face - 1]
        loser = bidder if count < quantity else player
        self.dice_left[loser] -= 1
        verdict = "the bid fails" if loser == bidder else "the bid stands"
        self.log.game(
            f"Player {player} calls Player {bidder}'s bid of {_dice(quantity)} showing {face}. "
            f"Player 0's dice: {_dice_text(self.hands[0])}. Player 1's dice: "
            f"{_dice_text(self.hands[1])}. {_dice(count)} show {face}, so {verdict}: Player "
            f"{loser} loses a die ({self.dice_left[loser]} left)."
        )
        self.rounds.append(
            {
                "round": self.round,
                "opener": self.opener,
                "bids": [list(b) for b in self.bids],
                "caller": player,
                "hands": [list(h) for h in self.hands],
                "count": count,
                "loser": loser,
            }
        )
        if self.dice_left[loser] == 0:
            self.terminal = True
            self.winner = 1 - loser
            self.log.game(f"Player {loser} has no dice left: Player {self.winner} wins the game.")
            return
        self._start_round(opener=loser)

    # --- outcome -----------------------------------------------------------------------
    def returns(self) -> tuple[float, float]:
        return win_returns(self.winner)

    def details(self) -> dict[str, Any]:
        return {
            "dice_left": list(self.dice_left),
            "winner": winner_id(self.winner),
            "rounds": list(self.rounds),
        }

    # --- what players see ----------------------------------------------------------------
    def observation(self, player: int) -> np.ndarray:
        quantity, face = bid_of(self.bid) if self.bid >= 0 else (0, 0)
        left = self.dice_left
        obs = np.array(
            (*self.face_counts[player], left[player], left[1 - player], quantity, face),
            dtype=np.float32,
        )
        obs *= self.game.observation_scale
        return obs

    def state_text(self, player: int) -> str:
        if self.terminal:
            return (
                f"The game is over after {self.round} rounds. Dice left: you "
                f"{self.dice_left[player]}, your opponent {self.dice_left[1 - player]}."
            )
        if self.bid < 0:
            standing = f"none yet (Player {self.opener} opens the round)"
        else:
            bidder, quantity, face = self.bids[-1]
            standing = f"Player {bidder} says at least {_dice(quantity)} show {face}"
        return (
            f"Round {self.round}. Your dice: {_dice_text(self.hands[player])} "
            f"({_dice(self.dice_left[player])}). Your opponent has "
            f"{_dice(self.dice_left[1 - player])}, hidden from you; {self.total_dice} dice are in "
            f"play.\nCurrent bid: {standing}."
        )

    def render(self) -> str:
        bid = "none" if self.bid < 0 else "{}x{}".format(*bid_of(self.bid))
        return (
            f"round {self.round}  P0 dice: {_dice_text(self.hands[0])}  "
            f"P1 dice: {_dice_text(self.hands[1])}  bid: {bid}  to play: P{self.current_player}"
        )


def _dice(n: int) -> str:
    return "1 die" if n == 1 else f"{n} dice"


def _dice_text(hand: tuple[int, ...]) -> str:
    return " ".join(map(str, hand)) if hand else "none"
