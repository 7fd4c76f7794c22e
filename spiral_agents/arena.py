"""The arena: seeded games between agents, tournaments with honest statistics, exact replays.

Every game is recorded (seed, each move as the agent wrote it, rewards) so that
:func:`replay` re-plays it turn by turn and checks everything the results are built from.
An agent that raises, or exceeds ``move_timeout`` seconds, forfeits only that game; the record
says why. Games under a time limit are played in worker processes that the arena kills when
an agent overruns (:mod:`spiral_agents.supervisor`), so a tournament always ends. Games with
an agent that batches (an LLM) are played side by side in the arena's process, every move of
that agent in all of them in one call. A pairing that cannot play a game is reported, never
skipped silently.
"""

from __future__ import annotations

import inspect
import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import spiral_envs
from spiral_agents.base import as_agent
from spiral_agents.play import (
    GamePlan,
    agent_name,
    batches,
    game_seed,
    must_play_here,
    play_plan,
    play_together,
    seating,
)
from spiral_agents.records import (
    SEATS,
    GameRecord,
    RecordError,
    RecordWriter,
    read_records,
    scan_records,
    write_records,
)
from spiral_agents.registry import make_agent, unsupported_reason
from spiral_agents.replay import ReplayMismatch, replay, verify
from spiral_agents.stats import (
    PairingResult,
    bradley_terry,
    format_table,
    rating_groups,
    summarize,
    wilson_interval,
)
from spiral_agents.supervisor import run_jobs
from spiral_envs.registry import ADAPTER_KWARGS

__all__ = [
    "SEATS",
    "GameRecord",
    "Match",
    "PairingResult",
    "RecordError",
    "RecordWriter",
    "ReplayMismatch",
    "SkippedPairings",
    "Unplayable",
    "bradley_terry",
    "check_env_kwargs",
    "env_kwargs_accepted",
    "format_table",
    "game_seed",
    "play_game",
    "rating_groups",
    "read_records",
    "replay",
    "run_tournament",
    "scan_records",
    "schedule",
    "summarize",
    "unplayable",
    "verify",
    "wilson_interval",
    "write_records",
]

def _check_move_timeout(move_timeout: float | None) -> None:
    if move_timeout is not None and not move_timeout > 0:
        raise ValueError(
            f"move_timeout must be a positive number of seconds or None, got {move_timeout!r}"
        )


def play_game(
    game: str,
    agents: dict[str, Any],
    seed: int,
    *,
    specs: dict[str, str] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    move_timeout: float | None = None,
) -> GameRecord:
    """Play one seeded game between agents seated by ``{"player_0": a, "player_1": b}``:
    agent objects, plain functions or agent specs (``"minimax"``, ``"kuhn-nash@alpha=0.2"``,
    built for the seat with seed ``seed`` + seat number, as in a tournament).

    With ``move_timeout`` the game is played in a worker process, from a copy of each agent
    (a spec is built there), and an agent that overruns is stopped. Agents a worker cannot
    load (a person at the terminal, a lambda, anything defined in ``__main__``) and agents
    that batch (LLMs) play here, without the limit. A bad spec raises before the game.
    """
    if set(agents) != set(SEATS):
        raise ValueError(
            f"agents must be given for exactly {' and '.join(SEATS)}, got {sorted(agents)}"
        )
    _check_move_timeout(move_timeout)
    env_kwargs = dict(env_kwargs or {})
    game = game.removeprefix("spiral/")
    spiral_envs.env(game, **env_kwargs)  # an unknown game or variant raises here, not in a worker
    seats: dict[str, Any] = {}
    here = False
    for number, seat in enumerate(SEATS):
        agent = agents[seat]
        if isinstance(agent, str):
            built = make_agent(agent, game, seed=seed + number)  # a bad spec raises here
            here = here or must_play_here(built, agent)
            seats[seat] = agent
        else:
            seats[seat] = as_agent(agent)
            here = here or must_play_here(seats[seat])
    names = specs or {seat: agent_name(agent) for seat, agent in seats.items()}
    plan = GamePlan(game, seed, seats, env_kwargs, names=dict(names))
    if move_timeout is None or here:
        return play_plan(plan)
    records: list[GameRecord] = []
    run_jobs([[plan]], workers=1, move_timeout=move_timeout, on_record=records.append)
    return records[0]


# --- tournaments ------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """Games of one pairing on one game id: agent ``a`` vs agent ``b``, seats alternating."""

    game: str
    a: str
    b: str
    seeds: tuple[int, ...]
    first_game: int
    """Index of this chunk's first game within the pairing (fixes who sits where)."""

    def plans(self, env_kwargs: dict[str, Any], tournament_seed: int) -> list[GamePlan]:
        return [
            GamePlan(
                self.game,
                seed,
                seating(self.a, self.b, index),
                env_kwargs,
                pairing=(self.a, self.b),
                index=index,
                tournament_seed=tournament_seed,
            )
            for index, seed in enumerate(self.seeds, self.first_game)
        ]


@dataclass(frozen=True)
class Unplayable:
    """A pairing that cannot play a game, and why."""

    game: str
    a: str
    b: str
    reason: str

    def __str__(self) -> str:
        return f"{self.a} vs {self.b} on {self.game}: {self.reason}"


class SkippedPairings(UserWarning):
    """A tournament left out pairings that cannot play a game (the message lists them)."""


def unplayable(games: Sequence[str], agents: Sequence[str]) -> list[Unplayable]:
    """The pairings of ``agents`` that cannot play each game, with the reason."""
    found = []
    for game in games:
        for a, b in itertools.combinations(agents, 2):
            reasons = [r for r in (unsupported_reason(a, game), unsupported_reason(b, game)) if r]
            if reasons:
                found.append(Unplayable(game, a, b, "; ".join(reasons)))
    return found


def schedule(
    games: Sequence[str],
    agents: Sequence[str],
    games_per_pairing: int,
    seed: int = 0,
    chunk: int = 25,
) -> list[Match]:
    """Round-robin pairings of ``agents`` on each game they can both play, in chunks
    (:func:`unplayable` lists the others)."""
    matches = []
    for game in games:
        for a, b in itertools.combinations(agents, 2):
            if unsupported_reason(a, game) or unsupported_reason(b, game):
                continue
            seeds = [game_seed(seed, game, a, b, i) for i in range(games_per_pairing)]
            for start in range(0, games_per_pairing, chunk):
                matches.append(Match(game, a, b, tuple(seeds[start : start + chunk]), start))
    return matches


def env_kwargs_accepted(game: str) -> list[str]:
    """Keyword arguments ``spiral_envs.env(game, ...)`` takes: the adapter's and the game's."""
    parameters = inspect.signature(spiral_envs.GAMES[game]).parameters.values()
    own = [p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [*ADAPTER_KWARGS, *own]


def check_env_kwargs(game: str, env_kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming what ``game`` accepts if it does not take ``env_kwargs``."""
    accepted = env_kwargs_accepted(game)
    unknown = sorted(set(env_kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"{game} does not take {', '.join(unknown)}; it takes: {', '.join(accepted)}"
        )
    try:
        spiral_envs.env(game, **env_kwargs)
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"{game} rejects env kwargs {env_kwargs}: {error}") from None


def _agents_here(matches: list[Match]) -> tuple[set[str], set[str]]:
    """Build every agent once for each game it plays (so a bad spec fails before any game);
    return the specs that must play in this process, and those of them that batch."""
    here, batching = set(), set()
    for game, spec in {(m.game, s) for m in matches for s in (m.a, m.b)}:
        agent = make_agent(spec, game, seed=0)
        if must_play_here(agent, spec):
            here.add(spec)
        if batches(agent):
            batching.add(spec)
    return here, batching


def run_tournament(
    games: Sequence[str],
    agents: Sequence[str],
    games_per_pairing: int = 100,
    *,
    seed: int = 0,
    workers: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    move_timeout: float | None = 60.0,
    progress: bool = True,
    on_record: Callable[[GameRecord], None] | None = None,
    on_skip: Callable[[Unplayable], None] | None = None,
) -> list[GameRecord]:
    """Play every pairing of ``agents`` (specs) on every game; return all game records.

    Seats alternate, so each agent plays each seat in half the games (one more in one seat
    when ``games_per_pairing`` is odd). Games are played in worker processes, ``workers`` at
    a time, when there is a ``move_timeout`` or more than one worker; agents that must play
    here (see :func:`play_game`) play in this process first, untimed: the games of agents
    that batch side by side, the others one after another. ``on_record`` gets each record as
    its game ends. A pairing that cannot play a game goes to ``on_skip`` (by default, all of
    them in one :class:`SkippedPairings` warning). Bad specs, game ids and ``env_kwargs``
    raise before any game.
    """
    if len(set(agents)) < 2:
        raise ValueError("a tournament needs at least two different agents")
    if games_per_pairing < 1:
        raise ValueError("games_per_pairing must be at least 1")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    _check_move_timeout(move_timeout)
    games = [g.removeprefix("spiral/") for g in games]
    unknown = [g for g in games if g not in spiral_envs.GAMES]
    if unknown:
        known = ", ".join(sorted(spiral_envs.GAMES))
        raise ValueError(f"unknown game {unknown[0]!r}; registered games: {known}")
    env_kwargs = dict(env_kwargs or {})
    for game in dict.fromkeys(games):
        check_env_kwargs(game, env_kwargs)
    matches = schedule(games, agents, games_per_pairing, seed)
    skipped = unplayable(games, agents)
    if not matches:
        why = "; ".join(map(str, skipped[:5])) + ("; ..." if len(skipped) > 5 else "")
        raise ValueError(f"no pair of these agents can play any of these games ({why})")
    if skipped and on_skip is None:
        listed = "\n".join(f"  {pairing}" for pairing in skipped)
        warnings.warn(f"pairings not played:\n{listed}", SkippedPairings, stacklevel=2)
    elif on_skip is not None:
        for pairing in skipped:
            on_skip(pairing)
    here, batching = _agents_here(matches)
    bar = _progress_bar(sum(len(m.seeds) for m in matches), progress)
    records: list[GameRecord] = []

    def finished(record: GameRecord) -> None:
        records.append(record)
        bar.update(1)
        if on_record is not None:
            on_record(record)

    try:
        in_workers = move_timeout is not None or workers > 1
        local = [m for m in matches if not in_workers or m.a in here or m.b in here]
        held = set(local)
        jobs = [m.plans(env_kwargs, seed) for m in matches if m not in held]
        batched = [m for m in local if m.a in batching or m.b in batching]
        play_together((p for m in batched for p in m.plans(env_kwargs, seed)), finished)
        for match in [m for m in local if m not in batched]:
            for plan in match.plans(env_kwargs, seed):
                finished(play_plan(plan))
        run_jobs(jobs, workers=workers, move_timeout=move_timeout, on_record=finished)
    finally:
        bar.close()
    order = {(m.game, m.a, m.b): i for i, m in enumerate(matches)}
    return sorted(records, key=lambda r: (order[(r.game, *r.pairing)], r.index))


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="games", unit="game", disable=not enabled)
