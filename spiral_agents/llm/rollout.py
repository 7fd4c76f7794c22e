"""The rollout engine: many games at once, one batched generation call per policy per step.

Each step gathers every live game that waits on an LLM seat, whichever seat it is, groups them
by policy and sends each group to its backend in one call. Seats held by ordinary agents act
at once. Finished games are replaced by new ones until the target number of games (or of LLM
turns) is reached. Every LLM turn becomes a :class:`TurnSample`; after its game ends the
sample gets the final reward of its seat.

A generation that failed (``finish_reason="error"``: the server was down, the prompt too long
for the model) is not a move of the model: its seat forfeits that game only, the game record
holds the error, and the turn's sample keeps ``finish_reason="error"`` so a trainer can leave
the whole game out. A backend call that raises, or returns other than one list of
generations per prompt, fails that way for every prompt of the call. A backend that does so
on :data:`MAX_FAILED_CALLS_IN_A_ROW` calls in a row is broken rather than unlucky (a bug, a
dead engine): the run then raises :class:`BackendFailure` from its last error.

A ``safe_point`` callable given to the engine runs between its backend calls (once per step of
the engine, in the engine's thread): the asynchronous trainer's generators load newer weights
there and bump their policy's ``version``, so a game may span an update; each turn records the
version that generated it (``TurnSample.policy_version``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import spiral_envs
from spiral_agents.arena import GameRecord
from spiral_agents.base import as_agent, reset_agent
from spiral_agents.llm.answers import extract_answer
from spiral_agents.llm.backend import (
    Backend,
    Generation,
    Prompt,
    SamplingConfig,
    error_generations,
)
from spiral_agents.llm.prompts import PromptEncoder, PromptTemplate, template_for_model
from spiral_agents.play import Forfeit, play_move
from spiral_agents.records import cut
from spiral_agents.registry import make_agent
from spiral_envs.registry import game_kwargs

SEATS = spiral_envs.AGENTS

MAX_FAILED_CALLS_IN_A_ROW = 3
"""Backend calls of one policy that may fail in a row before the run stops."""

_ERROR_CHARS = 500


class BackendFailure(RuntimeError):
    """A policy's backend failed on every one of several generate calls in a row."""


@dataclass
class LLMPolicy:
    """A backend, the template that turns observations into prompts, and sampling settings.

    Prompts are token ids when the backend has a tokenizer, else chat messages.
    """

    backend: Backend
    template: PromptTemplate | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    name: str = "llm"
    version: int | None = None
    """The policy version (updates applied) of the backend's weights, where a trainer counts
    them (asynchronous training); recorded on every turn as ``TurnSample.policy_version``."""
    prompt_cache_size: int = 4096
    """Token ids of this many recent prompt texts are kept for reuse (0 = none)."""
    _encoder: PromptEncoder | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.template is None:
            self.template = template_for_model(self.name)

    def prompts(self, observation_texts: list[str]) -> list[Prompt]:
        tokenizer = getattr(self.backend, "tokenizer", None)
        if tokenizer is None:
            return [self.template.messages(text) for text in observation_texts]
        if self._encoder is None or self._encoder.tokenizer is not tokenizer:
            self._encoder = PromptEncoder(tokenizer, self.prompt_cache_size)
        return self._encoder([self.template.render(text, tokenizer) for text in observation_texts])

    def prompt(self, observation_text: str) -> Prompt:
        return self.prompts([observation_text])[0]


@dataclass
class Matchup:
    """A game and who plays it: an :class:`LLMPolicy`, an agent or an agent spec in each seat.

    With ``alternate_seats`` the two seats swap every other game of this matchup.
    """

    game: str
    seats: tuple[Any, Any]
    weight: float = 1.0
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    alternate_seats: bool = True


@dataclass
class TurnSample:
    """One LLM turn: what it saw, what it wrote, and how its game ended for it."""

    episode: int
    game: str
    seat: str
    role: int
    turn: int
    policy: str
    prompt_token_ids: list[int]
    response_token_ids: list[int]
    logprobs: list[float] | None
    finish_reason: str
    text: str
    action: str | None
    invalid: bool
    invalid_reason: str | None = None
    reward: float | None = None
    """Final reward of this seat in its game (set when the game ends)."""
    opponent: str = ""
    """The name of the player in the other seat (a policy's name, or an agent spec)."""
    policy_version: int | None = None
    """The policy's ``version`` when it generated this turn (None: not counted; synchronous
    training always plays the latest weights)."""


@dataclass
class Rollout:
    samples: list[TurnSample]
    games: list[GameRecord]


def _name(seat: Any) -> str:
    return seat if isinstance(seat, str) else getattr(seat, "name", type(seat).__name__)


@dataclass
class _LiveGame:
    episode: int
    env: spiral_envs.SpiralAECEnv
    seats: dict[str, Any]
    record: GameRecord
    samples: list[TurnSample] = field(default_factory=list)
    turn: int = 0
    forfeit_by: str | None = None

    @property
    def over(self) -> bool:
        seat = self.env.agent_selection
        return self.env.terminations[seat] or self.env.truncations[seat] or self.forfeit_by is not None


class RolloutEngine:
    """Plays ``concurrency`` games at once over a weighted mix of matchups.

    Everything random about episode ``e`` derives from ``SeedSequence([*seed, e, ...])``
    (``seed`` an integer or a list of them: the trainer passes its seed tree's root for the
    step, see :mod:`spiral_train.seeds`): which matchup it plays (``[*seed, e, 0]``), the env's
    reset seed (``[*seed, e, 1]``) and each turn's generation seed (``[*seed, e, 2, turn]``). A
    game therefore depends only on its episode index, not on the games played beside it or the
    engine's concurrency, so engines that split a step's episodes between them play the same
    games as one engine (with deterministic backends, exactly).
    """

    def __init__(
        self,
        matchups: Sequence[Matchup],
        *,
        concurrency: int = 64,
        seed: int | Sequence[int] = 0,
        safe_point: Callable[[], None] | None = None,
    ) -> None:
        if not matchups:
            raise ValueError("a rollout needs at least one matchup")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.matchups = list(matchups)
        for matchup in self.matchups:
            spiral_envs.make_game(matchup.game, **game_kwargs(matchup.env_kwargs))
        weights = np.array([m.weight for m in self.matchups], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("matchup weights must be non-negative with a positive sum")
        self.weights = weights / weights.sum()
        self.concurrency = concurrency
        self.seed = [seed] if isinstance(seed, int) else [int(part) for part in seed]
        self.generation_calls = 0
        self.safe_point = safe_point
        """Called before each step's backend calls (where a generator may swap weights)."""
        self._failed_calls: dict[int, int] = {}

    def run(
        self, *, games: int | None = None, turns: int | None = None, episodes: Iterable[int] | None = None
    ) -> Rollout:
        """Play episodes ``0 .. games - 1``, or the given ``episodes``, or episodes from 0 on
        until ``turns`` LLM turns were taken (the games then live are played to their end, so
        every sample has its reward)."""
        if sum(x is not None for x in (games, turns, episodes)) != 1:
            raise ValueError("give exactly one of games=, turns= or episodes=")
        queue = iter(range(games) if games is not None else episodes if episodes is not None else ())
        live: list[_LiveGame] = []
        samples: list[TurnSample] = []
        records: list[GameRecord] = []
        started = 0

        def next_episode() -> int | None:
            if turns is None:
                return next(queue, None)
            if sum(len(g.samples) for g in live) + len(samples) < turns:
                return started
            return None

        while True:
            if self.safe_point is not None:
                self.safe_point()
            while len(live) < self.concurrency and (episode := next_episode()) is not None:
                live.append(self._start(episode))
                started += 1
            if not live:
                break
            for game in live:
                self._play_agents(game)
            waiting = [g for g in live if not g.over]
            groups: dict[int, list[_LiveGame]] = {}
            for game in waiting:
                policy = game.seats[game.env.agent_selection]
                groups.setdefault(id(policy), []).append(game)
            for group in groups.values():
                self._generate(group)
            for game in [g for g in live if g.over]:
                live.remove(game)
                samples.extend(self._finish(game))
                records.append(game.record)
        records.sort(key=lambda r: r.seed)
        samples.sort(key=lambda s: (s.episode, s.turn))
        return Rollout(samples=samples, games=records)

    # --- one game ------------------------------------------------------------------------
    def _start(self, episode: int) -> _LiveGame:
        if episode < 0:
            raise ValueError(f"episode indices are non-negative, got {episode}")
        rng = np.random.default_rng([*self.seed, episode, 0])
        matchup = self.matchups[int(rng.choice(len(self.matchups), p=self.weights))]
        seats = list(matchup.seats)
        if matchup.alternate_seats and episode % 2 == 1:
            seats.reverse()
        env_seed = int(np.random.SeedSequence([*self.seed, episode, 1]).generate_state(1)[0])
        seat_map = {seat: self._seat(s, matchup.game, env_seed) for seat, s in zip(SEATS, seats)}
        env = spiral_envs.env(matchup.game, **matchup.env_kwargs)
        env.reset(seed=env_seed)
        for seat in seat_map.values():
            if not isinstance(seat, LLMPolicy):
                reset_agent(seat)
        names = {seat: _name(s) for seat, s in zip(SEATS, seats)}
        record = GameRecord(
            game=matchup.game,
            seed=env_seed,
            agents=names,
            env_kwargs=dict(matchup.env_kwargs),
            pairing=[_name(matchup.seats[0]), _name(matchup.seats[1])],
        )
        return _LiveGame(episode, env, seat_map, record)

    @staticmethod
    def _seat(seat: Any, game: str, seed: int) -> Any:
        if isinstance(seat, LLMPolicy):
            return seat
        if isinstance(seat, str):  # an agent spec such as "random" or "kuhn-nash@alpha=0.2"
            return make_agent(seat, game, seed=seed)
        return as_agent(seat)

    def _play_agents(self, game: _LiveGame) -> None:
        """Let non-LLM seats move until an LLM seat is to move or the game is over."""
        env = game.env
        while not game.over and not isinstance(game.seats[env.agent_selection], LLMPolicy):
            seat = env.agent_selection
            try:
                action = game.seats[seat].act(env.observe(seat))
                self._step(game, seat, action)
            except Forfeit as forfeit:  # an action the env cannot take
                game.record.error, game.forfeit_by = cut(str(forfeit)), forfeit.seat
            except Exception as error:  # noqa: BLE001 - a failing agent ends only its game
                game.record.error = cut(f"{seat} raised {type(error).__name__}: {error}")
                game.forfeit_by = seat

    def _generate(self, group: list[_LiveGame]) -> None:
        policy: LLMPolicy = group[0].seats[group[0].env.agent_selection]
        seats = [g.env.agent_selection for g in group]
        prompts = policy.prompts([g.env.observe(seat)["text"] for g, seat in zip(group, seats)])
        seeds = [
            int(np.random.SeedSequence([*self.seed, g.episode, 2, g.turn]).generate_state(1)[0])
            for g in group
        ]
        outputs = self._call_backend(policy, prompts, seeds)
        for game, seat, prompt, output in zip(group, seats, prompts, outputs):
            generation = output[0]
            answer = extract_answer(generation.text, generation.finish_reason, generation.error)
            if generation.finish_reason == "error":  # not the model's move: the game is void
                game.record.error = f"{seat}: {answer.reason}"
                game.forfeit_by = seat
                info = {}
            else:
                action = answer.action if answer.action is not None else spiral_envs.Invalid(answer.reason)
                self._step(game, seat, action)
                info = game.env.infos.get(seat, {})
            invalid = answer.invalid or bool(info.get("invalid_move"))
            game.samples.append(
                TurnSample(
                    episode=game.episode,
                    game=game.record.game,
                    seat=seat,
                    role=SEATS.index(seat),
                    turn=game.turn - 1,
                    policy=policy.name,
                    prompt_token_ids=list(prompt) if prompt and isinstance(prompt[0], int) else [],
                    response_token_ids=list(generation.token_ids),
                    logprobs=None if generation.logprobs is None else list(generation.logprobs),
                    finish_reason=generation.finish_reason,
                    text=generation.text,
                    action=answer.action,
                    invalid=invalid,
                    invalid_reason=answer.reason if answer.invalid else info.get("reason") if invalid else None,
                    opponent=game.record.agents[SEATS[1 - SEATS.index(seat)]],
                    policy_version=policy.version,
                )
            )

    def _call_backend(
        self, policy: LLMPolicy, prompts: list[Prompt], seeds: list[int]
    ) -> list[list[Generation]]:
        """One generation per prompt; error generations for all of them when the backend
        raises or breaks its contract, and :class:`BackendFailure` when it has done so
        :data:`MAX_FAILED_CALLS_IN_A_ROW` times in a row. ``MemoryError`` is not caught."""
        self.generation_calls += 1
        try:
            outputs = policy.backend.generate(prompts, replace(policy.sampling, n=1), seeds)
            _check_outputs(outputs, len(prompts))
        except MemoryError:
            raise
        except Exception as error:  # one failed call ends only its games
            failures = self._failed_calls.get(id(policy), 0) + 1
            self._failed_calls[id(policy)] = failures
            message = f"{type(error).__name__}: {error}"
            if len(message) > _ERROR_CHARS:
                message = message[:_ERROR_CHARS] + "..."
            if failures >= MAX_FAILED_CALLS_IN_A_ROW:
                raise BackendFailure(
                    f"the backend of policy {policy.name!r} failed {failures} generate calls "
                    f"in a row, last with {message}"
                ) from error
            return [error_generations(1, f"the backend call failed: {message}") for _ in prompts]
        self._failed_calls[id(policy)] = 0
        return outputs

    def _step(self, game: _LiveGame, seat: str, action: Any) -> None:
        """Play ``action`` and record it as the arena does: an index with its name, a text
        once, cut to the arena's limit (a longer text is an invalid move)."""
        game.record.moves.append(play_move(game.env, seat, action))
        game.turn += 1

    def _finish(self, game: _LiveGame) -> list[TurnSample]:
        record = game.record
        record.finish(game.env, game.forfeit_by)
        for sample in game.samples:
            sample.reward = record.rewards[sample.seat]
        return game.samples


def _check_outputs(outputs: object, prompts: int) -> None:
    """``TypeError`` unless ``outputs`` holds, for each of ``prompts`` prompts, a list whose
    first item is a :class:`Generation` with text."""
    if not isinstance(outputs, list) or len(outputs) != prompts:
        count = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
        raise TypeError(f"generate returned {count} outputs for {prompts} prompts")
    for position, output in enumerate(outputs):
        first = output[0] if isinstance(output, list) and output else None
        if not (isinstance(first, Generation) and isinstance(first.text, str)):
            raise TypeError(f"output {position} of generate holds no Generation with text")


def save_samples(samples: Iterable[TurnSample], path: str | Path) -> None:
    """Write turn samples as JSONL, one sample a line."""
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(json.dumps(asdict(sample)) + "\n" for sample in samples)


def load_samples(path: str | Path) -> list[TurnSample]:
    with open(path, encoding="utf-8") as source:
        return [TurnSample(**json.loads(line)) for line in source if line.strip()]
