"""Nim rules: take objects from one pile per turn; whoever takes the last object wins.

The game starts with ``piles`` (3, 4 and 5 objects by default), numbered from 0. Player 0
moves first. A move takes one or more objects from a single pile and is written
``[pile quantity]``, e.g. ``[0 3]`` takes 3 objects from pile 0; a comma and extra spaces are
accepted (``[0, 3]``). The first bracketed pair of numbers in the text is the move. Taking from
an empty pile or more than a pile holds is illegal. The player who takes the last object wins
(normal play), so the game can never be drawn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from spiral_envs.core import Game, GameState, Invalid, Parsed, bracketed, win_returns, winner_id

MAX_PILES = 20
MAX_PILE_SIZE = 100
# Matched against the inside of one [...] segment at a time. Every quantifier is followed by a
# character it cannot match, so a failed match costs time linear in the segment.
_PAIR = re.compile(r"\s*(\d+)(?:\s*,\s*|\s+)(\d+)\s*", re.ASCII)
_NO_MOVE = "no move found; write a pile number and how many to take in square brackets, e.g. [0 3]"
_TURNS_PER_OBJECT = 3
"""Adapter turn cap per object: a game takes one move per object at most, which leaves room
for two invalid attempts before every move."""


def move_names(piles: Sequence[int]) -> tuple[str, ...]:
    """The action set: ``[i q]`` for every pile ``i`` and quantity 1 to its starting size."""
    return tuple(f"[{i} {q}]" for i, size in enumerate(piles) for q in range(1, size + 1))


def _bounded_int(digits: str) -> int | None:
    """The value of a digit string if it has at most three significant digits, else ``None``."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 3 else None


class Nim(Game):
    """Normal-play Nim.

    Args:
        piles: starting pile sizes, a sequence of 1 to 20 ints from 0 to 100 with at least one
            above 0 (default ``(3, 4, 5)``).

    Actions: ``[i q]`` (take ``q`` from pile ``i``) for every pile ``i`` and ``q`` from 1 to the
    pile's starting size, pile by pile; ``[i q]`` has index ``sum(piles[:i]) + q - 1``.

    Observation (float32, shape ``(len(piles),)``, each in [0, 1]): index ``i`` is pile ``i``'s
    current size divided by the largest starting pile. Nim has no hidden information and no
    chance, and the player to move always faces the same choice whoever they are, so the pile
    sizes are the whole state an observer needs; whose turn it is is not included.
    """

    id = "Nim-v0"
    actions = move_names((3, 4, 5))
    observation_shape = (3,)
    max_turns = _TURNS_PER_OBJECT * 12
    legend = "each | is one object; Player 0 (player_0) moves first"

    def __init__(self, piles: Sequence[int] = (3, 4, 5)) -> None:
        # Every bad variant raises ValueError, whatever is wrong with it.
        if isinstance(piles, (str, bytes)) or not isinstance(piles, Sequence):
            raise ValueError(f"piles must be a sequence of ints, got {piles!r}")  # noqa: TRY004
        if not 1 <= len(piles) <= MAX_PILES:
            raise ValueError(f"piles must hold 1 to {MAX_PILES} piles, got {len(piles)}")
        for size in piles:
            if not isinstance(size, int) or isinstance(size, bool):
                raise ValueError(f"pile sizes must be ints, got {size!r}")  # noqa: TRY004
            if not 0 <= size <= MAX_PILE_SIZE:
                raise ValueError(f"pile sizes must be 0 to {MAX_PILE_SIZE}, got {size}")
        if not any(piles):
            raise ValueError("at least one pile must hold an object")
        self.piles = tuple(piles)
        self.actions = move_names(self.piles)
        self.observation_shape = (len(self.piles),)
        self.max_turns = _TURNS_PER_OBJECT * sum(self.piles)
        self.offsets = tuple(sum(self.piles[:i]) for i in range(len(self.piles)))
        self.moves_of = tuple(
            (i, q) for i, size in enumerate(self.piles) for q in range(1, size + 1)
        )
        self.largest = np.float32(max(self.piles))

    def rules(self, player: int) -> str:
        sizes = ", ".join(f"pile {i}: {size}" for i, size in enumerate(self.piles))
        return (
            f"You are Player {player} in Nim, a two-player zero-sum game against Player "
            f"{1 - player}. Player 0 moves first.\n"
            f"The game starts with {len(self.piles)} pile(s) of objects ({sizes}). On your turn, "
            "take one or more objects from a single pile by writing the pile number and how "
            "many to take in square brackets, e.g. [0 3] takes 3 objects from pile 0. You cannot "
            "take from an empty pile or more than a pile holds. Whoever takes the last object "
            "wins the game.\n"
        )

    def new_state(self, rng: np.random.Generator) -> NimState:
        return NimState(self, rng)


class NimState(GameState):
    game: Nim

    def __init__(self, game: Nim, rng: np.random.Generator) -> None:
        super().__init__(game, rng)
        self.piles = list(game.piles)
        self.winner: int | None = None
        self.moves = 0
        self._mask = np.ones(len(game.actions), dtype=np.int8)
        self._sizes = np.array(game.piles, dtype=np.float32)
        self._state_text: str | None = None

    def legal_actions(self) -> list[int]:
        offsets = self.game.offsets
        return [offsets[i] + q for i, size in enumerate(self.piles) for q in range(size)]

    def action_mask(self) -> np.ndarray:
        return self._mask.copy()

    def parse(self, text: str) -> Parsed | Invalid:
        game = self.game
        for segment in bracketed(text):
            match = _PAIR.fullmatch(segment[1])
            if match is None:
                continue
            pile, quantity = _bounded_int(match[1]), _bounded_int(match[2])
            if pile is None or pile >= len(game.piles):
                return Invalid(
                    f"pile {match[1][:12]} does not exist; piles are 0 to {len(game.piles) - 1}"
                )
            if quantity == 0:
                return Invalid("you must take at least 1 object")
            if quantity is None or quantity > game.piles[pile]:
                return Invalid(self._too_many(pile, match[2][:12]))
            return Parsed(game.offsets[pile] + quantity - 1)
        return Invalid(_NO_MOVE)

    def _too_many(self, pile: int, quantity: str) -> str:
        size = self.piles[pile]
        if size == 0:
            return f"pile {pile} is empty; take from a pile that still holds objects"
        return f"pile {pile} holds only {size} object(s); you cannot take {quantity}"

    def illegal_reason(self, move: Any) -> str | None:
        pile, quantity = self.game.moves_of[move]
        if quantity <= self.piles[pile]:
            return None
        return self._too_many(pile, str(quantity))

    def apply(self, move: int) -> None:
        game = self.game
        pile, quantity = game.moves_of[move]
        player = self.current_player
        before = self.piles[pile]
        left = before - quantity
        self.piles[pile] = left
        start = game.offsets[pile]
        self._mask[start + left : start + before] = 0
        self._sizes[pile] = left
        self._state_text = None
        self.moves += 1
        self.log.game(f"Player {player} took {quantity} from pile {pile} ({left} left).")
        if not any(self.piles):
            self.winner = player
            self.terminal = True
            self.log.game(f"Player {player} took the last object and wins.")
        else:
            self.current_player = 1 - player

    def returns(self) -> tuple[float, float]:
        return win_returns(self.winner)

    def details(self) -> dict[str, Any]:
        return {"winner": winner_id(self.winner), "piles": list(self.piles), "moves": self.moves}

    def observation(self, player: int) -> np.ndarray:
        return self._sizes / self.game.largest

    def state_text(self, player: int) -> str:
        return self.render()

    def moves_text(self) -> str:
        options = []
        for i, size in enumerate(self.piles):
            if size == 1:
                options.append(f"take 1 from pile {i} ([{i} 1])")
            elif size > 1:
                options.append(f"take 1 to {size} from pile {i} ([{i} 1] to [{i} {size}])")
        return "Your legal moves: " + "; ".join(options)

    def render(self) -> str:
        if self._state_text is None:
            self._state_text = "Piles (objects left):\n" + "\n".join(
                f"pile {i}: {size} {'|' * size}".rstrip() for i, size in enumerate(self.piles)
            )
        return self._state_text
