"""Optimal normal-play Nim: always hand the opponent a position whose nim-sum is zero."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from operator import xor
from typing import cast

import numpy as np

import spiral_envs
from spiral_agents.base import Observation
from spiral_envs.games.nim import Nim

Move = tuple[int, int]  # (pile, quantity)


def nim_sum(piles: Sequence[int]) -> int:
    """The xor of the pile sizes: the player to move can force a win iff it is non-zero."""
    return reduce(xor, piles, 0)


def winning_moves(piles: Sequence[int]) -> list[Move]:
    """Every move that leaves a nim-sum of zero (none when the nim-sum already is zero)."""
    total = nim_sum(piles)
    return [(i, size - (size ^ total)) for i, size in enumerate(piles) if size ^ total < size]


def preferred_moves(piles: Sequence[int]) -> list[Move]:
    """The moves the agent chooses between: the winning ones, or else one object from a
    largest pile (the move that keeps the game longest, leaving the opponent most chances to
    go wrong)."""
    if not any(piles):
        raise ValueError("every pile is empty: the game is over")
    moves = winning_moves(piles)
    if moves:
        return moves
    largest = max(piles)
    return [(i, 1) for i, size in enumerate(piles) if size == largest]


class NimSumAgent:
    """Plays Nim perfectly: wins every position with a non-zero nim-sum against any opponent.

    Options:
        piles: the starting piles of the variant being played. When given, the agent builds
            that variant with ``spiral_envs.make_game("Nim-v0", piles=piles)`` and raises
            ``ValueError`` on any observation that does not fit it. When omitted, the agent
            reads the variant from each observation instead, so it plays any variant: the
            action mask lists, pile by pile, the quantities still takeable (the current pile
            size), which fixes the total number of objects left and hence, with the pile
            fractions of the observation, the exact sizes and the index of every move.

    Ties (several winning moves, or several largest piles in a lost position) are broken
    uniformly at random with the agent's own seeded generator.
    """

    name = "nim-optimal"

    def __init__(
        self, game: str | None = None, seed: int | None = None, piles: Sequence[int] | None = None
    ) -> None:
        if game is not None and game.removeprefix("spiral/") != Nim.id:
            raise ValueError(f"{type(self).__name__} plays {Nim.id}, not {game}")
        self.game: Nim | None = None
        if piles is not None:
            if isinstance(piles, (str, bytes)) or not isinstance(piles, Sequence):
                raise ValueError(f"piles must be a sequence of ints, got {piles!r}")
            self.game = cast(Nim, spiral_envs.make_game(Nim.id, piles=tuple(piles)))
        self.rng = np.random.default_rng(seed)

    def read_position(self, observation: Observation) -> tuple[list[int], np.ndarray]:
        """The exact pile sizes and the legal action indexes (ascending) of an observation."""
        fractions = np.asarray(observation["observation"], dtype=np.float64)
        mask = np.asarray(observation["action_mask"])
        legal = np.flatnonzero(mask)
        if fractions.ndim != 1 or fractions.sum() <= 0 or len(legal) == 0:
            raise ValueError("not a Nim position with a move to make")
        if self.game is None:
            largest = len(legal) / fractions.sum()  # the objects left, over the piles' fraction
        else:
            if len(fractions) != len(self.game.piles) or len(mask) != len(self.game.actions):
                raise ValueError(
                    f"the observation does not come from Nim with piles {self.game.piles}; "
                    "pass the piles the env was built with"
                )
            largest = float(self.game.largest)
        sizes = np.rint(fractions * largest).astype(int)
        if sizes.sum() != len(legal) or not np.allclose(sizes / largest, fractions, atol=1e-5):
            raise ValueError(f"inconsistent Nim observation {fractions} with mask {mask}")
        if self.game is not None:
            expected = np.zeros(len(mask), dtype=bool)
            for offset, size in zip(self.game.offsets, sizes):
                expected[offset : offset + size] = True
            if not np.array_equal(expected, mask != 0):
                raise ValueError(f"the action mask does not fit Nim with piles {self.game.piles}")
        return sizes.tolist(), legal

    def _choices(self, observation: Observation) -> list[int]:
        sizes, legal = self.read_position(observation)
        before = np.concatenate(([0], np.cumsum(sizes)))  # legal moves listed before each pile
        return [int(legal[before[i] + q - 1]) for i, q in preferred_moves(sizes)]

    def act(self, observation: Observation) -> int:
        choices = self._choices(observation)
        return choices[self.rng.integers(len(choices))]

    def action_probabilities(self, observation: Observation) -> np.ndarray:
        probabilities = np.zeros(len(observation["action_mask"]))
        choices = self._choices(observation)
        probabilities[choices] = 1.0 / len(choices)
        return probabilities
