"""The seed tree: every random choice of a training run derives from ``seed`` (the config's
run seed) through numpy ``SeedSequence`` entropy lists, in this one place.

==============================  =====================================================
``[seed, 0, step, e, 0]``       which game (matchup) episode ``e`` of ``step`` plays
``[seed, 0, step, e, 1]``       that game's env reset seed
``[seed, 0, step, e, 2, turn]`` the generation seed of each of its turns
``[seed, 1, step]``             the ``samples_per_step`` turns drawn for the update
``[seed, 2]``                   the learner's shuffle of each epoch (every rank alike)
``[seed, 3]``                   evaluation games (the same every evaluation)
``[seed, 4]``                   the warm start's batches
``[seed, 5, step]``             the population's reservoir draw after ``step``
==============================  =====================================================

A step's games are episodes ``0, 1, 2, ...``: the controller asks for them in rounds (see
:meth:`spiral_train.trainer.Trainer._play`), and each generator plays the episodes it is given,
so which games a step plays, and how they go, does not depend on how many generators share
them. The rollout engine documents the per-episode part (:class:`~spiral_agents.llm.rollout.
RolloutEngine`); steps count from 0 (the first update is step 0's games).
"""

from __future__ import annotations

import numpy as np

GAMES, DRAW, LEARNER, EVALUATION, WARM_START, POPULATION = range(6)

FIRST_TURNS_PER_GAME = 2.0
"""The first step's guess of LLM turns per game, which sizes its first round of episodes (later
steps use the last step's turns per game, kept in checkpoints)."""


def games_root(seed: int, step: int) -> list[int]:
    """The entropy the rollout engine extends with an episode index, for ``step``'s games."""
    return [seed, GAMES, step]


def draw_rng(seed: int, step: int) -> np.random.Generator:
    """The generator that draws the turns ``step`` trains on."""
    return np.random.default_rng([seed, DRAW, step])


def population_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of the population's reservoir draw for the snapshot after ``step``."""
    return np.random.default_rng([seed, POPULATION, step])


def derived_seed(seed: int, stream: int) -> int:
    """A 63-bit integer seed of one ``stream`` of the tree (learner, evaluation, warm start)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))
