"""Opponents of the learner: the per-game mix of opponent kinds, the population of its past
snapshots, and Elo ratings over the run's games. Pure bookkeeping (no models): the controller
owns one :class:`Population` and one :class:`Ratings`, the generators serve what they name.

Opponent kinds, per game (``games[].opponent``, a name or a weighted mix of names):

- ``self``: the current policy in both seats (both trained; SPIRAL's self-play);
- ``initial``: a frozen copy of the policy at step 0 (after the warm start);
- ``population``: a snapshot from the pool, drawn each game by ``population.sampling``;
- a model folder (an exported model or a training checkpoint): a frozen copy of it;
- any agent spec (``random``, ``kuhn-nash``, ``minimax``, ``openai@base_url=...,model=...``,
  ``my_pkg:Agent``): an agent in the other seat.

Against anything but ``self`` only the learner's own turns are trained. Each game's opponent
comes out of the rollout engine's matchup draw (``[seed, 0, step, e, 0]`` of the seed tree):
the controller turns the mix and the pool's sampling weights into matchup weights
(:func:`opponent_plan`), so the frequencies match the configured weights exactly in
expectation and every draw reproduces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spiral_agents.exact import decode_policy

SELF, INITIAL, POPULATION = "self", "initial", "population"
LEARNER = "policy"
"""The name the learner's policy plays under (its turns are the ones trained)."""
KINDS = (SELF, INITIAL, POPULATION)


def opponent_mix(opponent: str | dict[str, float]) -> dict[str, float]:
    """A game's ``opponent`` setting as normalised weights per opponent name (zero weights
    left out); ValueError for a mix without a positive weight."""
    weights = {opponent: 1.0} if isinstance(opponent, str) else dict(opponent)
    bad = [name for name, weight in weights.items() if not (math.isfinite(weight) and weight >= 0)]
    if bad:
        raise ValueError(f"weights must be finite and >= 0 (see {', '.join(bad)})")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("a mix of opponents needs a positive weight")
    return {name: weight / total for name, weight in weights.items() if weight > 0}


def is_model_folder(name: str) -> bool:
    """Whether an opponent name is a folder holding a model (exported, or a training
    checkpoint) rather than a kind or an agent spec."""
    path = Path(name).expanduser()
    return path.is_dir() and ((path / "config.json").is_file() or (path / "state.json").is_file())


@dataclass(frozen=True)
class Entry:
    """One matchup of a step's plan: game ``game`` (index into ``games``) against ``name``."""

    game: int
    name: str
    """Who sits opposite the learner: ``self``, a frozen model's name or an agent spec."""
    kind: str
    """The configured opponent the entry comes from (``population`` for every snapshot)."""
    weight: float


def opponent_plan(mixes: list[dict[str, float]], game_weights: list[float], pool: dict[str, float]) -> list[Entry]:
    """The matchups of a step: every game's opponent mix, ``population`` spread over the pool's
    sampling weights ``pool`` (name -> probability), each weighted by its game's weight."""
    plan = []
    for game, (mix, game_weight) in enumerate(zip(mixes, game_weights)):
        for name, weight in mix.items():
            if name == POPULATION:
                plan += [Entry(game, member, POPULATION, game_weight * weight * p) for member, p in pool.items()]
            else:
                plan.append(Entry(game, name, name, game_weight * weight))
    return [entry for entry in plan if entry.weight > 0]


# --- ratings -------------------------------------------------------------------------------------


def score(reward: float) -> float:
    """A game's result for Elo: 1 for a win, 0.5 for a draw, 0 for a loss."""
    return 1.0 if reward > 0 else 0.0 if reward < 0 else 0.5


def expected_score(rating: float, other: float) -> float:
    """Elo's expected score of ``rating`` against ``other``."""
    return 1.0 / (1.0 + 10.0 ** ((other - rating) / 400.0))


@dataclass
class Ratings:
    """Elo ratings of the learner (:data:`LEARNER`) and every opponent it played, updated game by
    game in episode order; a new name starts at ``start`` (a snapshot: the learner's rating)."""

    k: float = 16.0
    start: float = 1000.0
    values: dict[str, float] = field(default_factory=dict)

    def rating(self, name: str) -> float:
        return self.values.get(name, self.start)

    def add(self, name: str, rating: float | None = None) -> None:
        self.values[name] = self.rating(LEARNER) if rating is None else rating

    def update(self, opponent: str, learner_reward: float) -> None:
        """One game of the learner against ``opponent`` (the learner's reward)."""
        mine, theirs = self.rating(LEARNER), self.rating(opponent)
        change = self.k * (score(learner_reward) - expected_score(mine, theirs))
        self.values[LEARNER], self.values[opponent] = mine + change, theirs - change

    def win_probability(self, opponent: str) -> float:
        """The learner's expected score against ``opponent``."""
        return expected_score(self.rating(LEARNER), self.rating(opponent))

    def state_dict(self) -> dict[str, Any]:
        return {"k": self.k, "start": self.start, "values": dict(self.values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.k, self.start = float(state["k"]), float(state["start"])
        self.values = {str(name): float(value) for name, value in state["values"].items()}


# --- the pool ------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """A past policy in the pool: its name, the step it was taken after, its weights file and
    (for Kuhn Poker runs) its action probabilities at the 12 information sets."""

    name: str
    step: int
    sha256: str
    kuhn_policy: dict[str, list[float]] | None = None


def snapshot_name(step: int) -> str:
    return f"snapshot-{step:06d}"


REFERENCE_PREFIX = "reference-"


def reference_name(step: int) -> str:
    """The snapshot file name of the KL reference moved at ``step`` (``learner.kl_reference_every``)."""
    return f"{REFERENCE_PREFIX}{step:06d}"


@dataclass
class Population:
    """At most ``size`` snapshots of the policy, one every ``every`` steps (step 0 first).

    ``fifo`` replaces the oldest; ``reservoir`` keeps a uniform sample of all snapshots taken
    (the n-th replaces a random member with probability size/n). ``sampling`` weights the
    members: ``uniform``; ``latest`` in proportion to their age rank (newest ``size``, oldest 1);
    ``rating`` by prioritized fictitious self-play, ``(1 - p) ** power`` with p the learner's
    Elo win probability against the member (harder opponents more often, ``floor`` keeps every
    member in play). ``history`` keeps every snapshot ever taken (without weights) for the
    average policy of the whole run.
    """

    size: int
    every: int
    replacement: Literal["fifo", "reservoir"] = "fifo"
    sampling: Literal["uniform", "latest", "rating"] = "uniform"
    power: float = 2.0
    floor: float = 0.05
    members: list[Snapshot] = field(default_factory=list)
    taken: int = 0
    history: list[Snapshot] = field(default_factory=list)

    def due(self, step: int) -> bool:
        """Whether a snapshot is taken after ``step`` updates."""
        return step % self.every == 0

    def add(self, snapshot: Snapshot, rng: np.random.Generator) -> Snapshot | None:
        """Put ``snapshot`` in the pool; returns the member it replaced (or None), or
        ``snapshot`` itself when the reservoir left it out."""
        self.taken += 1
        self.history.append(snapshot)
        if len(self.members) < self.size:
            self.members.append(snapshot)
            return None
        if self.replacement == "fifo":
            return self._replace(0, snapshot)
        slot = int(rng.integers(self.taken))
        return self._replace(slot, snapshot) if slot < self.size else snapshot

    def _replace(self, index: int, snapshot: Snapshot) -> Snapshot:
        out = self.members.pop(index)
        self.members.append(snapshot)  # members stay in the order they were taken
        return out

    def weights(self, ratings: Ratings) -> dict[str, float]:
        """Each member's probability of being the opponent of a ``population`` game."""
        if not self.members:
            return {}
        count = len(self.members)
        if self.sampling == "uniform":
            raw = [1.0] * count
        elif self.sampling == "latest":
            raw = [float(rank) for rank in range(1, count + 1)]
        else:
            raw = [max((1.0 - ratings.win_probability(m.name)) ** self.power, self.floor) for m in self.members]
        total = sum(raw)
        return {m.name: w / total for m, w in zip(self.members, raw)}

    def names(self) -> set[str]:
        return {m.name for m in self.members}

    def state_dict(self) -> dict[str, Any]:
        def saved(s: Snapshot) -> dict[str, Any]:
            return {"name": s.name, "step": s.step, "sha256": s.sha256, "kuhn_policy": s.kuhn_policy}

        members = [m.name for m in self.members]
        return {"taken": self.taken, "members": members, "history": [saved(s) for s in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [Snapshot(**s) for s in state["history"]]
        by_name = {s.name: s for s in self.history}
        self.members = [by_name[name] for name in state["members"]]
        self.taken = int(state["taken"])


def kind_of(name: str) -> str:
    """The opponent kind of a sample's opponent name: ``self`` for the learner itself,
    ``population`` for a snapshot, else the name (``initial``, a folder, an agent spec)."""
    if name == LEARNER:
        return SELF
    return POPULATION if name.startswith("snapshot-") else name


# --- what a checkpoint holds (untrusted when read back) ----------------------------------------

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
"""A frozen opponent's name: also its file name under ``<output_dir>/opponents``."""
_SHA256 = r"^[0-9a-f]{64}$"


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _SnapshotState(_Schema):
    name: Annotated[str, Field(pattern=_NAME)]
    step: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=_SHA256)]
    kuhn_policy: dict[str, list[float]] | None = None

    @field_validator("kuhn_policy")
    @classmethod
    def _kuhn(cls, table: dict[str, list[float]] | None) -> dict[str, list[float]] | None:
        if table is not None:
            decode_policy(table)
        return table


class _PopulationState(_Schema):
    taken: Annotated[int, Field(ge=0)]
    members: list[str]
    history: list[_SnapshotState]


class _RatingsState(_Schema):
    k: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    start: Annotated[float, Field(allow_inf_nan=False)]
    values: dict[str, Annotated[float, Field(allow_inf_nan=False)]]


class OpponentsState(_Schema):
    """The opponents' part of a checkpoint: pool, ratings, and the sha256 of every snapshot
    file the generators serve."""

    population: _PopulationState | None = None
    ratings: _RatingsState
    frozen: dict[Annotated[str, Field(pattern=_NAME)], Annotated[str, Field(pattern=_SHA256)]]

    @model_validator(mode="after")
    def _consistent(self) -> OpponentsState:
        if self.population is not None:
            names = {s.name for s in self.population.history}
            unknown = [m for m in self.population.members if m not in names or m not in self.frozen]
            if unknown:
                raise ValueError(f"population members without a snapshot: {', '.join(unknown)}")
        return self
