"""LLMs as agents: :class:`LLMAgent`, the ``llm`` and ``openai`` agent specs, and evaluation of
LLM policies through the rollout engine.

    llm@model=Qwen/Qwen3-4B-Base,backend=vllm,max_tokens=2048
    llm@model=artifacts/tiny-qwen3,temperature=0,max_tokens=64       # transformers (default)
    openai@base_url=http://127.0.0.1:8000/v1,model=Qwen/Qwen3-4B,api_key_env=MY_API_KEY

A model is loaded once per process however many games and agents use it: specs that name the
same model and backend settings share one backend (:func:`shared_backend`), and specs that
also agree on template and sampling share one policy, whose moves the arena batches over every
game it plays side by side. An API key is read from the environment variable ``api_key_env``
names, never from the spec (specs are written into game records).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

import spiral_envs
from spiral_agents.base import Observation
from spiral_agents.llm.answers import extract_answer
from spiral_agents.llm.backend import Backend, Generation, SamplingConfig
from spiral_agents.llm.prompts import make_template
from spiral_agents.llm.rollout import LLMPolicy, Matchup, RolloutEngine
from spiral_agents.records import GameRecord
from spiral_agents.registry import make_agent, supports

Move = str | spiral_envs.Invalid


class GenerationFailed(RuntimeError):
    """A generation that failed (the server was down, the prompt too long): not a move of the
    model, so its agent forfeits the game."""


def decide_together(agents: Sequence[LLMAgent], observations: Sequence[Observation]) -> list[Any]:
    """The moves of many LLM agents, one generation call per policy they share: each agent
    keeps its own seeds. A failed generation, or a failed call, gives a
    :class:`GenerationFailed` in place of each move it was for (the arena's ``batcher``
    protocol)."""
    if len(agents) != len(observations):
        raise ValueError(f"{len(agents)} agents for {len(observations)} observations")
    results: list[Any] = [None] * len(agents)
    by_policy: dict[int, list[int]] = {}
    for position, agent in enumerate(agents):
        by_policy.setdefault(id(agent.policy), []).append(position)
    for positions in by_policy.values():
        policy = agents[positions[0]].policy
        seeds = [agents[i].next_seed() for i in positions]
        try:
            prompts = policy.prompts([observations[i]["text"] for i in positions])
            outputs = policy.backend.generate(prompts, policy.sampling, seeds)
            if not isinstance(outputs, list) or len(outputs) != len(prompts):
                count = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
                raise TypeError(f"the backend returned {count} outputs for {len(prompts)} prompts")
        except Exception as error:  # noqa: BLE001 - a failed call fails only this policy's moves
            for position in positions:
                results[position] = GenerationFailed(f"{type(error).__name__}: {error}")
            continue
        for position, output in zip(positions, outputs):
            first = output[0] if isinstance(output, list) and output else None
            if not (isinstance(first, Generation) and isinstance(first.text, str)):
                results[position] = GenerationFailed("the backend returned no generation")
            else:
                results[position] = agents[position].read(first)
    return results


class LLMAgent:
    """Plays with an :class:`LLMPolicy`: one generation per move, batched with every other
    LLM agent's moves where the arena plays games side by side (``batcher``).

    A response without an answer becomes ``Invalid(reason)``, which the env records as an
    invalid move with that reason; a failed generation raises :class:`GenerationFailed`.
    Move ``k`` is sampled with a seed drawn from ``(seed, k)``. ``last_generation`` keeps the
    raw response of the last move. ``actions`` (the game's action texts) enables
    :meth:`action_probabilities` on a transformers backend.
    """

    batcher: Callable[..., list[Any]] = staticmethod(decide_together)

    def __init__(
        self, policy: LLMPolicy, seed: int | None = 0, actions: tuple[str, ...] | None = None
    ) -> None:
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.policy = policy
        self.name = policy.name
        self.seed = seed
        self.actions = actions
        self.moves = 0
        self.last_generation: Generation | None = None
        self._scorer: Any = None

    def next_seed(self) -> int:
        """The sampling seed of the next move."""
        seed = int(np.random.SeedSequence([self.seed, self.moves]).generate_state(1)[0])
        self.moves += 1
        return seed

    def read(self, generation: Generation) -> Move | GenerationFailed:
        """The move a generation makes (or why it is none)."""
        self.last_generation = generation
        if generation.finish_reason == "error":
            return GenerationFailed(generation.error or "the generation failed")
        answer = extract_answer(generation.text, generation.finish_reason, generation.error)
        return answer.action if answer.action is not None else spiral_envs.Invalid(answer.reason)

    def act(self, observation: Observation) -> Move:
        return self.act_batch([observation])[0]

    def act_batch(self, observations: Sequence[Observation]) -> list[Move]:
        moves = decide_together([self] * len(observations), observations)
        failed = next((m for m in moves if isinstance(m, GenerationFailed)), None)
        if failed is not None:
            raise failed
        return moves

    def action_probabilities(self, observation: Observation) -> np.ndarray:
        """The model's probability of answering each legal action directly, renormalised
        (:mod:`spiral_agents.llm.scoring`); needs the model in this process (the transformers
        or vLLM backend) and a finite game."""
        if self._scorer is None:
            self._scorer = self._make_scorer()
        return self._scorer.action_probabilities(observation)

    def _make_scorer(self) -> Any:
        if self.actions is None:
            raise ValueError(f"{self.name}: action probabilities need a finite game")
        backend, template = self.policy.backend, self.policy.template
        # A backend's module is loaded if the backend is one of its kind: no import needed.
        transformers = sys.modules.get("spiral_agents.llm.hf_backend")
        vllm = sys.modules.get("spiral_agents.llm.vllm_backend")
        if transformers and isinstance(backend, transformers.TransformersBackend):
            from spiral_agents.llm.scoring import ActionScorer

            return ActionScorer(backend.model, backend.tokenizer, template, self.actions)
        if vllm and isinstance(backend, vllm.VLLMBackend):
            from spiral_agents.llm.scoring import VLLMActionScorer

            return VLLMActionScorer(backend.llm, backend.tokenizer, template, self.actions)
        raise ValueError(
            f"{self.name}: action probabilities need the model in this process "
            f"(backend=transformers or vllm), not a {type(backend).__name__}"
        )


# --- agents from specs: one backend per process -------------------------------------------

_BACKENDS: dict[tuple, Backend] = {}
_POLICIES: dict[tuple, LLMPolicy] = {}


def _key(options: dict[str, Any]) -> tuple:
    return tuple(sorted((name, repr(value)) for name, value in options.items()))


def shared_backend(kind: str, **options: Any) -> Backend:
    """The backend of ``kind`` (``"transformers"``, ``"vllm"`` or ``"openai"``) with these
    options, built on first use and kept for the life of the process."""
    key = (kind, _key(options))
    backend = _BACKENDS.get(key)
    if backend is None:
        backend = _BACKENDS[key] = _build_backend(kind, options)
    return backend


def loaded_backends() -> int:
    """How many backends this process has built for agent specs."""
    return len(_BACKENDS)


def _build_backend(kind: str, options: dict[str, Any]) -> Backend:
    if kind == "transformers":
        from spiral_agents.llm.hf_backend import TransformersBackend

        return TransformersBackend(**options)
    if kind == "vllm":
        from spiral_agents.llm.vllm_backend import VLLMBackend

        return VLLMBackend(**{k: v for k, v in options.items() if v is not None})
    if kind == "openai":
        tokenizer = options.pop("tokenizer")
        if tokenizer is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        from spiral_agents.llm.openai_backend import OpenAICompatibleBackend

        return OpenAICompatibleBackend(tokenizer=tokenizer, **options)
    raise ValueError(f"unknown backend {kind!r}: use transformers or vllm")


def _policy(
    kind: str, backend_options: dict[str, Any], template: str | None, sampling: SamplingConfig
) -> LLMPolicy:
    model = str(backend_options["model"])
    key = (kind, _key(backend_options), template, sampling)
    policy = _POLICIES.get(key)
    if policy is None:
        backend = shared_backend(kind, **backend_options)
        policy = LLMPolicy(backend, make_template(template, model), sampling, name=model)
        _POLICIES[key] = policy
    return policy


def _sampling(temperature: float, top_p: float, top_k: int, max_tokens: int) -> SamplingConfig:
    return SamplingConfig(
        temperature=float(temperature),
        top_p=float(top_p),
        top_k=int(top_k),
        max_tokens=int(max_tokens),
        logprobs=False,
    )


def _actions(game: str) -> tuple[str, ...] | None:
    return spiral_envs.make_game(game).actions


def llm_agent(
    game: str,
    seed: int | None = None,
    *,
    model: str | None = None,
    backend: str = "transformers",
    template: str | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    max_tokens: int = 4096,
    device: str | None = None,
    dtype: str = "auto",
    batch_size: int | None = None,
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
) -> LLMAgent:
    """A local model as an agent: ``llm@model=PATH_OR_ID,backend=transformers|vllm,...``.

    ``template``: ``spiral-base``, ``chat``, ``chat-thinking``, ``chat-no-thinking`` or a
    format string with ``{observation}`` (default: the model's, see
    :func:`~spiral_agents.llm.prompts.template_for_model`). Sampling: ``temperature``,
    ``top_p``, ``top_k``, ``max_tokens``. ``device`` and ``batch_size`` apply to
    transformers, ``max_model_len`` and ``gpu_memory_utilization`` to vLLM; ``dtype`` to both.
    """
    if model is None:
        raise ValueError("llm needs model=PATH_OR_ID, e.g. llm@model=Qwen/Qwen3-4B-Base")
    options: dict[str, Any] = {"model": str(model), "dtype": dtype}
    if backend == "transformers":
        if max_model_len is not None or gpu_memory_utilization is not None:
            raise ValueError("max_model_len and gpu_memory_utilization apply to backend=vllm")
        options.update(device=device, batch_size=64 if batch_size is None else batch_size)
    elif backend == "vllm":
        if device is not None or batch_size is not None:
            raise ValueError("device and batch_size apply to backend=transformers")
        options.update(max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization)
    else:
        raise ValueError(f"unknown backend {backend!r}: use transformers or vllm")
    sampling = _sampling(temperature, top_p, top_k, max_tokens)
    return LLMAgent(_policy(backend, options, template, sampling), seed, _actions(game))


def openai_agent(
    game: str,
    seed: int | None = None,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api: str = "chat",
    api_key_env: str | None = None,
    tokenizer: str | None = None,
    template: str | None = None,
    enable_thinking: bool | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    max_tokens: int = 4096,
    concurrency: int = 16,
    timeout: float = 120.0,
    max_retries: int = 4,
) -> LLMAgent:
    """A model behind an OpenAI-compatible server as an agent:
    ``openai@base_url=URL,model=NAME,...``.

    ``api``: ``chat`` (the server applies the chat template) or ``completions`` (the prompt
    is built here, with ``tokenizer=PATH_OR_ID`` and ``template``). ``api_key_env`` names the
    environment variable holding the API key (none is sent by default; a spec never holds the
    key itself, see :func:`~spiral_agents.registry.parse_spec`). ``enable_thinking``
    is passed to the server's chat template. Sampling as for ``llm``; ``concurrency``,
    ``timeout`` and ``max_retries`` as for the backend.
    """
    if base_url is None or model is None:
        raise ValueError("openai needs base_url=URL and model=NAME")
    if api == "completions" and tokenizer is None:
        raise ValueError("api=completions needs tokenizer=PATH_OR_ID: the prompt is built here")
    if api_key_env is not None and not os.environ.get(str(api_key_env)):
        raise ValueError(f"api_key_env: the environment variable {api_key_env} is not set")
    chosen = make_template(template, str(model))
    thinking = (
        enable_thinking if enable_thinking is not None else getattr(chosen, "enable_thinking", None)
    )
    options: dict[str, Any] = {
        "base_url": str(base_url),
        "model": str(model),
        "api": api,
        "api_key_env": api_key_env,
        "tokenizer": tokenizer,
        "chat_template_kwargs": {} if thinking is None else {"enable_thinking": bool(thinking)},
        "concurrency": concurrency,
        "timeout": float(timeout),
        "max_retries": max_retries,
    }
    sampling = _sampling(temperature, top_p, top_k, max_tokens)
    return LLMAgent(_policy("openai", options, template, sampling), seed, _actions(game))


# --- evaluation through the rollout engine ------------------------------------------------


def _seat(opponent: str | Any, game: str) -> Any:
    """An opponent as the rollout engine seats it: an LLM agent, or an LLM spec, becomes its
    policy (named as the agent is), so that its moves are batched too; anything else as is."""
    if isinstance(opponent, LLMAgent):
        return opponent.policy
    if isinstance(opponent, str):
        agent = make_agent(opponent, game, seed=0)
        if isinstance(agent, LLMAgent):
            return replace(agent.policy, name=opponent)
    return opponent


def evaluate(
    policy: LLMPolicy,
    opponents: Sequence[str | Any],
    games: Sequence[str],
    games_per_pairing: int = 100,
    *,
    concurrency: int = 64,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
) -> list[GameRecord]:
    """Play ``policy`` against each opponent (agent spec or object) on each game it can play,
    seats alternating, with every LLM move of all live games batched (an ``llm@``/``openai@``
    opponent's too); returns arena records (:func:`spiral_agents.arena.summarize` turns them
    into win rates and mean rewards with intervals)."""
    records: list[GameRecord] = []
    for game in games:
        for index, opponent in enumerate(opponents):
            if isinstance(opponent, str) and not supports(opponent, game):
                continue
            seats = (policy, _seat(opponent, game))
            matchup = Matchup(game, seats, env_kwargs=dict(env_kwargs or {}))
            engine = RolloutEngine([matchup], concurrency=concurrency, seed=seed + 1000 * index)
            records.extend(engine.run(games=games_per_pairing).games)
    return records
