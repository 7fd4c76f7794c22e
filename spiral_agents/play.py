"""One game between two agents, move by move, and how each move is recorded.

:func:`play_plan` plays one game; it runs in the calling process or in a worker process
(:mod:`spiral_agents.supervisor`), which passes a :class:`Watch` to time and report each agent
call. :func:`play_together` plays many games side by side in this process, so that agents that
share a ``batcher`` (LLM agents) decide for all their games in one call. Any failure of an
agent (an exception, a timeout, an action the env cannot take) forfeits that game only; a
person who quits (:class:`~spiral_agents.human.Quit`) stops the whole run.
"""

from __future__ import annotations

import io
import pickle
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import spiral_envs
from spiral_agents.base import as_agent, reset_agent
from spiral_agents.human import HumanAgent
from spiral_agents.records import MAX_ERROR_CHARS, MAX_MOVE_CHARS, SEATS, GameRecord, cut
from spiral_agents.registry import make_agent, parse_spec

GAMES_SIDE_BY_SIDE = 64
"""Most games :func:`play_together` keeps going at once."""


def game_seed(base_seed: int, game: str, a: str, b: str, index: int) -> int:
    """A stable seed for game ``index`` of a pairing, independent of scheduling."""
    key = [base_seed, index, *map(ord, f"{game}|{a}|{b}")]
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> np.uint64(1))


def seating(a: str, b: str, index: int) -> dict[str, str]:
    """Who sits where in game ``index`` of pairing ``(a, b)``: seats alternate, ``a`` first."""
    return {"player_0": a, "player_1": b} if index % 2 == 0 else {"player_0": b, "player_1": a}


def agent_name(agent: Any) -> str:
    return agent if isinstance(agent, str) else getattr(agent, "name", type(agent).__name__)


@dataclass(frozen=True)
class GamePlan:
    """One game to play: the game, its seed and who sits where."""

    game: str
    seed: int
    seats: dict[str, Any]
    """Seat -> agent spec (built in the process that plays), or an agent object."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    names: dict[str, str] | None = None
    """Seat -> the name recorded (default: the spec, or the agent's ``name``)."""
    pairing: tuple[str, str] | None = None
    index: int | None = None
    tournament_seed: int | None = None

    def new_record(self) -> GameRecord:
        names = self.names or {seat: agent_name(agent) for seat, agent in self.seats.items()}
        return GameRecord(
            game=self.game,
            seed=self.seed,
            agents=dict(names),
            env_kwargs=dict(self.env_kwargs),
            pairing=list(self.pairing or ()),
            index=self.index,
            tournament_seed=self.tournament_seed,
        )

    def forfeited(
        self, moves: list[dict[str, Any]], seat: str, reason: str, seconds: float
    ) -> GameRecord:
        """The record of this game ended by ``seat``'s forfeit after ``moves``."""
        record = self.new_record()
        record.moves = list(moves)
        record.error = cut(reason, MAX_ERROR_CHARS)
        record.finish(None, forfeit_by=seat)
        record.seconds = seconds
        return record


class Watch:
    """Hooks around agent calls; the default times nothing and reports nothing."""

    move_timeout: float | None = None

    def calling(self, seat: str, timed: bool) -> None:
        """An agent call by ``seat`` starts (``timed``: under the move time limit)."""

    def moved(self, move: dict[str, Any]) -> None:
        """A move was played and recorded."""

    def finished(self, record: GameRecord, hooks_follow: bool) -> None:
        """The game is over and this is its record; ``hooks_follow``: agents' ``game_over``
        hooks are called next."""

    def ending(self, seat: str) -> None:
        """``seat``'s ``game_over`` hook is called (under the move time limit)."""

    def ended(self) -> None:
        """The ``game_over`` hooks have returned."""


class Forfeit(Exception):
    """An agent failure that ends its game; ``seat`` loses."""

    def __init__(self, seat: str, reason: str) -> None:
        super().__init__(reason)
        self.seat = seat


def timeout_reason(seat: str, move_timeout: float) -> str:
    return f"{seat} exceeded the move time limit of {move_timeout:g} s"


def over_limit_reason(chars: int, limit: int) -> str:
    """Why a move whose text is ``chars`` long (over ``limit``) is invalid."""
    return f"the move is {chars:,} characters long, over the arena's limit of {limit:,}"


def _describe(value: Any, describe: Any = str, limit: int | None = None) -> str:
    """``describe(value)`` (cut to ``limit``) for an agent's object whose str or repr may fail."""
    try:
        text = describe(value)
        return text if limit is None else cut(text, limit)
    except Exception:  # noqa: BLE001 - a failing __str__ or __repr__
        return f"<{type(value).__name__}>"


def _call(watch: Watch, seat: str, what: str, fn: Any, *args: Any) -> Any:
    watch.calling(seat, timed=True)
    started = time.monotonic()
    try:
        result = fn(*args)
    except Exception as error:  # any agent failure forfeits its game only
        where = " in reset" if what == "reset" else ""
        raise Forfeit(
            seat, f"{seat} raised {type(error).__name__}{where}: {_describe(error)}"
        ) from error
    limit = watch.move_timeout
    if limit is not None and time.monotonic() - started > limit:
        raise Forfeit(seat, timeout_reason(seat, limit))
    return result


def _build(plan: GamePlan, seat: str, watch: Watch) -> Any:
    agent = plan.seats[seat]
    if not isinstance(agent, str):
        return as_agent(agent)
    watch.calling(seat, timed=False)
    try:
        return make_agent(agent, plan.game, seed=plan.seed + SEATS.index(seat))
    except Exception as error:  # an agent that fails to build forfeits
        raise Forfeit(seat, f"{seat}'s agent could not be built: {_describe(error)}") from error


def play_move(env: spiral_envs.SpiralAECEnv, seat: str, action: Any) -> dict[str, Any]:
    """Play ``seat``'s action and return the move as recorded: an index with its name, or the
    agent's text stored once, cut to :data:`MAX_MOVE_CHARS` (a longer text is an invalid
    move). Raises :class:`Forfeit` for an action the env cannot take."""
    if isinstance(action, np.integer):
        action = int(action)
    elif isinstance(action, np.ndarray) and action.ndim == 0:
        action = action.item()
    move: dict[str, Any] = {"seat": seat}
    submitted = action
    if isinstance(action, spiral_envs.Invalid):
        reason = action.reason if isinstance(action.reason, str) else _describe(action.reason)
        reason = reason[:MAX_MOVE_CHARS]
        submitted = spiral_envs.Invalid(reason)
        move.update(action=None, action_text=reason)
    elif isinstance(action, str):
        text = str(action)
        if len(text) > MAX_MOVE_CHARS:
            submitted = spiral_envs.Invalid(over_limit_reason(len(text), MAX_MOVE_CHARS))
            move.update(action=text[:MAX_MOVE_CHARS], action_chars=len(text))
        else:
            submitted = text
            move["action"] = text
    try:
        env.step(submitted)
    except (ValueError, TypeError) as error:  # an out-of-space index or a wrong type
        described = _describe(action, repr, 200)
        raise Forfeit(seat, f"{seat} returned an unusable action {described}: {error}") from None
    if "action" not in move:  # an index the env took
        move.update(action=submitted, action_text=env.game.actions[submitted])
    move["invalid"] = bool(env.infos[seat].get("invalid_move"))
    return move


class _Game:
    """A game being played: its env, its agents and its record so far."""

    def __init__(self, plan: GamePlan) -> None:
        self.plan = plan
        self.record = plan.new_record()
        self.started = time.perf_counter()
        self.env = spiral_envs.env(plan.game, **plan.env_kwargs)
        self.env.reset(seed=plan.seed)
        self.agents: dict[str, Any] = {}
        self.forfeit_by: str | None = None

    def open(self, watch: Watch) -> None:
        """Build and reset both agents (raises :class:`Forfeit` if one fails)."""
        for seat in SEATS:
            self.agents[seat] = _build(self.plan, seat, watch)
        for seat in SEATS:
            _call(watch, seat, "reset", reset_agent, self.agents[seat])

    @property
    def seat(self) -> str:
        """The seat to move."""
        return self.env.agent_selection

    @property
    def over(self) -> bool:
        env = self.env
        return (
            self.forfeit_by is not None
            or env.terminations[env.agent_selection]
            or env.truncations[env.agent_selection]
        )

    def observe(self) -> dict[str, Any]:
        return self.env.observe(self.seat)

    def play(self, seat: str, action: Any, watch: Watch) -> None:
        self.record.moves.append(play_move(self.env, seat, action))
        watch.moved(self.record.moves[-1])

    def forfeit(self, forfeit: Forfeit) -> None:
        self.record.error, self.forfeit_by = cut(str(forfeit), MAX_ERROR_CHARS), forfeit.seat

    def close(self, watch: Watch) -> GameRecord:
        """Finish the record, report it, then tell each agent how its game ended."""
        record = self.record
        record.finish(self.env, self.forfeit_by)
        record.seconds = time.perf_counter() - self.started
        hooks = {seat: getattr(agent, "game_over", None) for seat, agent in self.agents.items()}
        hooks = {seat: hook for seat, hook in hooks.items() if callable(hook)}
        watch.finished(record, bool(hooks))
        how = f"forfeit: {record.error}" if self.forfeit_by else record.ended_by
        for seat, game_over in hooks.items():
            watch.ending(seat)
            try:
                game_over(self.env.observe(seat), record.outcome[seat], how)
            except Exception:  # noqa: BLE001, S110 - the game is decided: nothing to forfeit
                pass
        if hooks:
            watch.ended()
        return record


def play_plan(plan: GamePlan, watch: Watch | None = None) -> GameRecord:
    """Play one planned game to its end (or a forfeit) and return its record."""
    watch = watch or Watch()
    game = _Game(plan)
    try:
        game.open(watch)
        while not game.over:
            seat = game.seat
            action = _call(watch, seat, "act", game.agents[seat].act, game.observe())
            game.play(seat, action, watch)
    except Forfeit as forfeit:
        game.forfeit(forfeit)
    return game.close(watch)


def play_together(
    plans: Iterable[GamePlan],
    on_record: Callable[[GameRecord], None],
    *,
    side_by_side: int = GAMES_SIDE_BY_SIDE,
) -> None:
    """Play games side by side in this process, untimed; ``on_record`` gets each record as its
    game ends. Every round, each game's player to move is asked once; the requests of agents
    that share a ``batcher`` go to it in one call, the others to each agent's ``act``."""
    waiting, live, watch = deque(plans), [], Watch()
    while waiting or live:
        while waiting and len(live) < side_by_side:
            game = _Game(waiting.popleft())
            try:
                game.open(watch)
            except Forfeit as forfeit:
                game.forfeit(forfeit)
            live.append(game)
        _play_round([game for game in live if not game.over], watch)
        for game in [game for game in live if game.over]:
            live.remove(game)
            on_record(game.close(watch))


def _play_round(games: list[_Game], watch: Watch) -> None:
    """One move in each of ``games``: batched where agents share a ``batcher``."""
    batches: dict[int, tuple[Any, list[_Game]]] = {}
    for game in games:
        agent = game.agents[game.seat]
        batcher = getattr(agent, "batcher", None)
        if batcher is None:
            seat = game.seat
            try:
                game.play(seat, _call(watch, seat, "act", agent.act, game.observe()), watch)
            except Forfeit as forfeit:
                game.forfeit(forfeit)
        else:
            batches.setdefault(id(batcher), (batcher, []))[1].append(game)
    for batcher, group in batches.values():
        seats = [game.seat for game in group]
        try:
            actions = list(batcher([g.agents[g.seat] for g in group], [g.observe() for g in group]))
            if len(actions) != len(group):
                raise ValueError(f"the batch call returned {len(actions)} actions for {len(group)}")
        except Exception as error:  # noqa: BLE001 - a failed batch call forfeits its games
            actions = [error] * len(group)
        for game, seat, action in zip(group, seats, actions):
            try:
                if isinstance(action, BaseException):
                    raise Forfeit(
                        seat, f"{seat} raised {type(action).__name__}: {_describe(action)}"
                    )
                game.play(seat, action, watch)
            except Forfeit as forfeit:
                game.forfeit(forfeit)


# --- which agents a worker process can play ---------------------------------------------


class _FromMain(Exception):
    pass


class _MainFinder(pickle.Pickler):
    """Pickles an object and fails on anything defined in ``__main__`` (a worker cannot
    import that: it runs a fresh interpreter, not the caller's script)."""

    def reducer_override(self, obj: Any) -> Any:
        if callable(obj) and getattr(obj, "__module__", None) == "__main__":
            raise _FromMain
        return NotImplemented


def batches(agent: Any) -> bool:
    """Whether ``agent`` decides for many games in one call (it has a ``batcher``)."""
    return getattr(agent, "batcher", None) is not None


def must_play_here(agent: Any, spec: str | None = None) -> bool:
    """Whether ``agent`` has to play in this process rather than in a worker: a person at
    the terminal, an agent that batches (an LLM: one model per process, its moves batched over
    the games played side by side), or an agent a fresh interpreter cannot load (built from a
    ``__main__`` spec, or an object that does not pickle or comes from ``__main__``, such as a
    lambda). ``spec`` is the spec ``agent`` was built from; such an agent is built anew in the
    worker."""
    if isinstance(agent, HumanAgent) or batches(agent):
        return True
    if spec is not None:
        return parse_spec(spec)[0].partition(":")[0] == "__main__"
    try:
        _MainFinder(io.BytesIO()).dump(agent)
    except Exception:  # noqa: BLE001 - whatever stops pickling keeps the agent here
        return True
    return False
