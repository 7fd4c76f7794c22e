"""A probabilistic Liar's Dice bidder: call unlikely bids, otherwise make the likeliest raise.

A bid "at least q dice show f" is true with probability ``P(c + X >= q)``, where ``c`` is how
many of the agent's own dice show ``f`` and ``X ~ Binomial(n, 1/6)`` counts the ``f`` among the
opponent's ``n`` unseen dice (no face is wild).
"""

from __future__ import annotations

from functools import cache
from math import comb

import numpy as np

from spiral_agents.base import Observation
from spiral_envs.games.liars_dice import FACES, LiarsDice, bid_index, bid_of

TIE_BREAKS = ("lowest", "random")


@cache
def at_least(unseen: int, needed: int) -> float:
    """``P(X >= needed)`` for ``X ~ Binomial(unseen, 1/6)``."""
    if needed <= 0:
        return 1.0
    return sum(comb(unseen, x) * 5 ** (unseen - x) for x in range(needed, unseen + 1)) / 6**unseen


def bid_probability(own_counts: tuple[int, ...], unseen: int, quantity: int, face: int) -> float:
    """Probability that at least ``quantity`` dice show ``face`` over both hands, given the
    agent's face counts ``own_counts`` (faces 1-6) and ``unseen`` opponent dice."""
    return at_least(unseen, quantity - own_counts[face - 1])


class LiarsDiceBidder:
    """Calls when the standing bid is true with probability below ``threshold``; otherwise
    (and always when opening a round) makes the legal raise most likely to be true.

    Options:
        threshold: in (0, 1], default 0.5. Any impossible bid is called; a bid that the
            agent's own dice make certain is never called while a raise is legal.
        tie_break: among equally likely raises, ``"lowest"`` (default) takes the lowest raise,
            ``"random"`` draws one uniformly with the agent's seeded generator.

    The number of dice per player comes from the action mask (``12 * dice + 1`` actions), so
    every ``dice`` variant of LiarsDice-v1 is played.
    """

    name = "liars-dice-prob"

    def __init__(
        self,
        game: str | None = None,
        seed: int | None = None,
        threshold: float = 0.5,
        tie_break: str = "lowest",
    ) -> None:
        if game is not None and game.removeprefix("spiral/") != LiarsDice.id:
            raise ValueError(f"{type(self).__name__} plays {LiarsDice.id}, not {game}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")  # noqa: TRY004 - a bad option value
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
        self.threshold = float(threshold)
        self.tie_break = tie_break
        self.rng = np.random.default_rng(seed)

    def read(self, observation: Observation) -> tuple[tuple[int, ...], int, int, np.ndarray]:
        """(own face counts, opponent's dice, standing bid index or -1, legal action indexes)."""
        mask = np.asarray(observation["action_mask"])
        dice, extra = divmod(len(mask) - 1, 2 * FACES)
        values = np.asarray(observation["observation"], dtype=np.float64)
        if dice < 1 or extra or values.shape != (10,):
            raise ValueError(
                "not a Liar's Dice observation: expected 10 values and 12 * dice + 1 actions"
            )
        scale = np.array([dice] * 8 + [2 * dice, FACES], dtype=np.float64)
        exact = np.rint(values * scale).astype(int)
        if not np.allclose(values * scale, exact, atol=1e-3) or exact[:6].sum() != exact[6]:
            raise ValueError(f"inconsistent Liar's Dice observation {values.tolist()}")
        legal = np.flatnonzero(mask)
        if len(legal) == 0:
            raise ValueError("no legal action: the agent was asked to act off-turn")
        quantity, face = int(exact[8]), int(exact[9])
        standing = bid_index(quantity, face) if quantity else -1
        return tuple(int(c) for c in exact[:6]), int(exact[7]), standing, legal

    def choices(self, observation: Observation) -> list[int]:
        """The actions the agent picks from: ``[call]``, or the likeliest raises (ascending)."""
        own, unseen, standing, legal = self.read(observation)
        call = len(observation["action_mask"]) - 1
        raises = [int(a) for a in legal if a != call]
        if standing >= 0 and (
            not raises or bid_probability(own, unseen, *bid_of(standing)) < self.threshold
        ):
            return [call]
        probabilities = np.array([bid_probability(own, unseen, *bid_of(a)) for a in raises])
        best = probabilities.max()
        return [a for a, p in zip(raises, probabilities) if p == best]  # equal chances: same (unseen, needed)

    def act(self, observation: Observation) -> int:
        choices = self.choices(observation)
        if self.tie_break == "lowest":
            return choices[0]
        return choices[self.rng.integers(len(choices))]

    def action_probabilities(self, observation: Observation) -> np.ndarray:
        probabilities = np.zeros(len(observation["action_mask"]))
        choices = self.choices(observation)
        if self.tie_break == "lowest":
            probabilities[choices[0]] = 1.0
        else:
            probabilities[choices] = 1.0 / len(choices)
        return probabilities
