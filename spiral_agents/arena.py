"""The arena: seeded games between agents, tournaments with honest statistics, exact replays.

Every game is recorded (seed, each move as the agent wrote it, rewards) so that
:func:`replay` re-plays it turn by turn and checks it ends the same way. An agent that raises,
or exceeds ``move_timeout`` seconds, forfeits only that game; the record says why.
"""

from __future__ import annotations

import concurrent.futures as futures
import itertools
import json
import math
import multiprocessing
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import spiral_envs
from spiral_agents.base import as_agent, reset_agent
from spiral_agents.registry import make_agent, supports

SEATS = spiral_envs.AGENTS


@dataclass
class GameRecord:
    """One finished game: enough to replay it exactly and to score it."""

    game: str
    seed: int
    agents: dict[str, str]
    """Seat -> agent spec."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    moves: list[dict[str, Any]] = field(default_factory=list)
    """Per move: seat, action (index or text), action_text (protocol text), invalid flag."""
    rewards: dict[str, float] = field(default_factory=dict)
    outcome: dict[str, str] = field(default_factory=dict)
    """Seat -> "win" / "draw" / "loss"."""
    ended_by: str = ""
    pairing: list[str] = field(default_factory=list)
    """The two agent specs in tournament order (results are reported from the first's side)."""
    error: str | None = None
    """Why an agent forfeited (exception or timeout), if one did."""
    seconds: float = 0.0

    def finish(self, env: spiral_envs.SpiralAECEnv, forfeit_by: str | None = None) -> None:
        """Fill in rewards and outcome from the finished env, or from a forfeit."""
        if forfeit_by is not None:
            loser, winner = forfeit_by, SEATS[1 - SEATS.index(forfeit_by)]
            self.rewards = {loser: -1.0, winner: 1.0}
            self.outcome = {loser: "loss", winner: "win"}
            self.ended_by = "forfeit"
        else:
            self.rewards = {seat: float(env._cumulative_rewards[seat]) for seat in SEATS}
            self.outcome = {seat: env.infos[seat]["outcome"] for seat in SEATS}
            self.ended_by = env.infos[SEATS[0]]["ended_by"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=_json_default)

    @classmethod
    def from_json(cls, line: str) -> GameRecord:
        return cls(**json.loads(line))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot record {type(value).__name__}")


class _Forfeit(Exception):
    def __init__(self, seat: str, reason: str) -> None:
        super().__init__(reason)
        self.seat = seat


class _MoveCaller:
    """Calls ``agent.act`` directly, or in a worker thread when a time limit is set."""

    def __init__(self, move_timeout: float | None) -> None:
        self.move_timeout = move_timeout
        self._pool: futures.ThreadPoolExecutor | None = None

    def __call__(self, agent: Any, observation: dict[str, Any], seat: str) -> Any:
        try:
            if self.move_timeout is None:
                return agent.act(observation)
            if self._pool is None:
                self._pool = futures.ThreadPoolExecutor(max_workers=1)
            return self._pool.submit(agent.act, observation).result(timeout=self.move_timeout)
        except futures.TimeoutError:
            self._pool = None  # abandon the stuck thread; later moves get a fresh one
            raise _Forfeit(seat, f"{seat} exceeded the move time limit of {self.move_timeout} s") from None
        except Exception as error:  # noqa: BLE001 - any agent failure forfeits its game only
            raise _Forfeit(seat, f"{seat} raised {type(error).__name__}: {error}") from error


def play_game(
    game: str,
    agents: dict[str, Any],
    seed: int,
    *,
    specs: dict[str, str] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    move_timeout: float | None = None,
    _caller: _MoveCaller | None = None,
) -> GameRecord:
    """Play one seeded game between agents seated by ``{"player_0": a, "player_1": b}``."""
    env_kwargs = dict(env_kwargs or {})
    env = spiral_envs.env(game, **env_kwargs)
    caller = _caller or _MoveCaller(move_timeout)
    agents = {seat: as_agent(agent) for seat, agent in agents.items()}
    record = GameRecord(
        game=game,
        seed=seed,
        agents=specs or {seat: getattr(a, "name", type(a).__name__) for seat, a in agents.items()},
        env_kwargs=env_kwargs,
    )
    start = time.perf_counter()
    env.reset(seed=seed)
    for agent in agents.values():
        reset_agent(agent)
    names = env.game.actions
    forfeit_by = None
    while not (env.terminations[env.agent_selection] or env.truncations[env.agent_selection]):
        seat = env.agent_selection
        try:
            action = caller(agents[seat], env.observe(seat), seat)
            if isinstance(action, np.integer):
                action = int(action)
            env.step(action)
        except _Forfeit as forfeit:
            record.error, forfeit_by = str(forfeit), seat
            break
        except ValueError as error:  # an out-of-space index or a wrong type from the agent
            record.error, forfeit_by = f"{seat} returned an unusable action {action!r}: {error}", seat
            break
        text = names[action] if isinstance(action, int) and names is not None else action
        invalid = bool(env.infos[seat].get("invalid_move"))
        record.moves.append({"seat": seat, "action": action, "action_text": text, "invalid": invalid})
    record.finish(env, forfeit_by)
    record.seconds = time.perf_counter() - start
    return record


def replay(record: GameRecord, *, show: bool = False) -> GameRecord:
    """Re-play a recorded game move by move; raises if it does not end the same way."""
    if record.error is not None:
        raise ValueError(f"game ended by a forfeit ({record.error}); nothing to verify")
    env = spiral_envs.env(record.game, **record.env_kwargs)
    env.reset(seed=record.seed)
    for number, move in enumerate(record.moves, 1):
        if env.agent_selection != move["seat"]:
            raise AssertionError(f"move {number}: {move['seat']} recorded, {env.agent_selection} to move")
        if show:
            print(f"--- move {number}: {move['seat']} ({record.agents[move['seat']]}) sees ---")
            print(env.observe(move["seat"])["text"])
            print(f">>> plays {move['action_text']!r}\n")
        env.step(move["action"])
    rewards = {seat: float(env._cumulative_rewards[seat]) for seat in SEATS}
    if rewards != record.rewards:
        raise AssertionError(f"replay ended with {rewards}, the record says {record.rewards}")
    if show:
        print(env.observe(SEATS[0])["text"].rsplit("History:\n", 1)[-1])
        print(f"rewards: {rewards}")
    return record


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


def game_seed(base_seed: int, game: str, a: str, b: str, index: int) -> int:
    """A stable seed for game ``index`` of a pairing, independent of scheduling."""
    key = [base_seed, index, *map(ord, f"{game}|{a}|{b}")]
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _play_match(match: Match, env_kwargs: dict[str, Any], move_timeout: float | None) -> list[GameRecord]:
    caller = _MoveCaller(move_timeout)
    records = []
    for offset, seed in enumerate(match.seeds):
        a_first = (match.first_game + offset) % 2 == 0
        specs = {"player_0": match.a, "player_1": match.b} if a_first else {"player_0": match.b, "player_1": match.a}
        agents = {seat: make_agent(spec, match.game, seed=seed + i) for i, (seat, spec) in enumerate(specs.items())}
        record = play_game(match.game, agents, seed, specs=specs, env_kwargs=env_kwargs, _caller=caller)
        record.pairing = [match.a, match.b]
        records.append(record)
    return records


def schedule(
    games: Sequence[str],
    agents: Sequence[str],
    games_per_pairing: int,
    seed: int = 0,
    chunk: int = 25,
) -> list[Match]:
    """Round-robin pairings of ``agents`` on each game they can both play, in chunks."""
    matches = []
    for game in games:
        for a, b in itertools.combinations(agents, 2):
            if not (supports(a, game) and supports(b, game)):
                continue
            seeds = [game_seed(seed, game, a, b, i) for i in range(games_per_pairing)]
            for start in range(0, games_per_pairing, chunk):
                matches.append(Match(game, a, b, tuple(seeds[start : start + chunk]), start))
    return matches


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
) -> list[GameRecord]:
    """Play every pairing of ``agents`` (specs) on every game; return all game records.

    Seats alternate, so each agent plays each seat in half the games (one more in one seat
    when ``games_per_pairing`` is odd). ``workers > 1`` spreads chunks over processes.
    """
    if len(set(agents)) < 2:
        raise ValueError("a tournament needs at least two different agents")
    if games_per_pairing < 1:
        raise ValueError("games_per_pairing must be at least 1")
    matches = schedule([g.removeprefix("spiral/") for g in games], agents, games_per_pairing, seed)
    if not matches:
        raise ValueError("no pair of these agents can play any of these games")
    env_kwargs = dict(env_kwargs or {})
    total = sum(len(m.seeds) for m in matches)
    bar = _progress_bar(total, progress)
    records: list[GameRecord] = []
    for chunk in _run_matches(matches, env_kwargs, move_timeout, workers):
        records.extend(chunk)
        bar.update(len(chunk))
    bar.close()
    order = {(m.game, m.a, m.b): i for i, m in enumerate(matches)}
    return sorted(records, key=lambda r: (order[(r.game, *r.pairing)], r.seed))


def _run_matches(
    matches: list[Match], env_kwargs: dict[str, Any], move_timeout: float | None, workers: int
) -> Iterator[list[GameRecord]]:
    if workers <= 1:
        for match in matches:
            yield _play_match(match, env_kwargs, move_timeout)
        return
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending = [pool.submit(_play_match, m, env_kwargs, move_timeout) for m in matches]
        for done in futures.as_completed(pending):
            yield done.result()


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="games", unit="game", disable=not enabled)


# --- statistics -------------------------------------------------------------------------


def wilson_interval(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class PairingResult:
    """Results of agent ``a`` against agent ``b`` on one game, from ``a``'s side."""

    game: str
    a: str
    b: str
    games: int = 0
    wins: int = 0
    draws: int = 0
    losses: int = 0
    a_moves: int = 0
    a_invalid: int = 0
    b_moves: int = 0
    b_invalid: int = 0
    turns: int = 0
    errors: int = 0

    @property
    def win_rate(self) -> float:
        return self.wins / self.games if self.games else float("nan")

    @property
    def win_interval(self) -> tuple[float, float]:
        return wilson_interval(self.wins, self.games)

    def row(self) -> dict[str, Any]:
        low, high = self.win_interval
        return {
            "game": self.game,
            "agent": self.a,
            "opponent": self.b,
            "games": self.games,
            "wins": self.wins,
            "draws": self.draws,
            "losses": self.losses,
            "win_rate": round(self.win_rate, 4),
            "win_rate_low": round(low, 4),
            "win_rate_high": round(high, 4),
            "invalid_rate": round(self.a_invalid / self.a_moves, 4) if self.a_moves else 0.0,
            "opponent_invalid_rate": round(self.b_invalid / self.b_moves, 4) if self.b_moves else 0.0,
            "mean_length": round(self.turns / self.games, 2) if self.games else 0.0,
            "errors": self.errors,
        }


def summarize(records: Iterable[GameRecord]) -> list[PairingResult]:
    """Per pairing and game, from the side of the pairing's first agent."""
    results: dict[tuple[str, str, str], PairingResult] = {}
    for record in records:
        specs = record.agents
        a, b = record.pairing or [specs["player_0"], specs["player_1"]]
        result = results.setdefault((record.game, a, b), PairingResult(record.game, a, b))
        seat_a = "player_0" if specs["player_0"] == a else "player_1"
        result.games += 1
        outcome = record.outcome.get(seat_a, "loss")
        result.wins += outcome == "win"
        result.draws += outcome == "draw"
        result.losses += outcome == "loss"
        result.errors += record.error is not None
        result.turns += len(record.moves)
        for move in record.moves:
            if move["seat"] == seat_a:
                result.a_moves += 1
                result.a_invalid += move["invalid"]
            else:
                result.b_moves += 1
                result.b_invalid += move["invalid"]
    return list(results.values())


def bradley_terry(records: Iterable[GameRecord], iterations: int = 500) -> dict[str, float]:
    """Bradley-Terry strengths fitted over all games (draws count half), on the Elo scale.

    Ratings are centred on 0 (mean over agents); a 400-point gap means 10:1 odds.
    Minorisation-maximisation (Hunter 2004), with half a win added to every agent so that
    unbeaten or winless agents keep finite ratings.
    """
    wins: dict[str, float] = {}
    games: dict[tuple[str, str], int] = {}
    for record in records:
        a, b = record.agents["player_0"], record.agents["player_1"]
        if a == b:
            continue
        for name in (a, b):
            wins.setdefault(name, 0.5)
        score = {"win": 1.0, "draw": 0.5, "loss": 0.0}[record.outcome.get("player_0", "loss")]
        wins[a] += score
        wins[b] += 1 - score
        games[(a, b)] = games.get((a, b), 0) + 1
        games[(b, a)] = games.get((b, a), 0) + 1
    names = sorted(wins)
    strength = {name: 1.0 for name in names}
    for _ in range(iterations):
        updated = {}
        for i in names:
            denominator = sum(n / (strength[i] + strength[j]) for (x, j), n in games.items() if x == i)
            updated[i] = wins[i] / denominator if denominator else strength[i]
        mean_log = sum(math.log(s) for s in updated.values()) / len(updated)
        strength = {k: math.exp(math.log(v) - mean_log) for k, v in updated.items()}
    return {name: 400 * math.log10(strength[name]) for name in names}


def format_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(c) for c in columns]] + [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths))) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_records(records: Iterable[GameRecord], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(record.to_json() + "\n")


def read_records(path: str | Path) -> list[GameRecord]:
    with open(path, encoding="utf-8") as source:
        return [GameRecord.from_json(line) for line in source if line.strip()]
