"""An LLM policy as an agent, and evaluation of LLM policies through the rollout engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import spiral_envs
from spiral_agents.arena import GameRecord
from spiral_agents.base import Observation
from spiral_agents.llm.answers import extract_answer
from spiral_agents.llm.backend import Generation
from spiral_agents.llm.rollout import LLMPolicy, Matchup, RolloutEngine


class LLMAgent:
    """Plays with an :class:`LLMPolicy`: one generation per move, or one call per batch.

    A response without an answer becomes ``Invalid(reason)``, which the env records as an
    invalid move with that reason. ``last_generation`` keeps the raw response of the last move.
    """

    def __init__(self, policy: LLMPolicy, seed: int = 0) -> None:
        self.policy = policy
        self.name = policy.name
        self.seed = seed
        self.moves = 0
        self.last_generation: Generation | None = None

    def act(self, observation: Observation) -> str | spiral_envs.Invalid:
        return self.act_batch([observation])[0]

    def act_batch(self, observations: Sequence[Observation]) -> list[str | spiral_envs.Invalid]:
        prompts = self.policy.prompts([obs["text"] for obs in observations])
        seeds = [self.seed + self.moves + i for i in range(len(prompts))]
        self.moves += len(prompts)
        outputs = self.policy.backend.generate(prompts, self.policy.sampling, seeds)
        actions: list[str | spiral_envs.Invalid] = []
        for output in outputs:
            generation = self.last_generation = output[0]
            answer = extract_answer(generation.text, generation.finish_reason, generation.error)
            actions.append(answer.action if answer.action is not None else spiral_envs.Invalid(answer.reason))
        return actions


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
    """Play ``policy`` against each opponent (agent spec or object) on each game, seats
    alternating, with every LLM move of all live games batched; returns arena records
    (:func:`spiral_agents.arena.summarize` turns them into win rates with intervals)."""
    from spiral_agents.registry import supports

    records: list[GameRecord] = []
    for game in games:
        for index, opponent in enumerate(opponents):
            if isinstance(opponent, str) and not supports(opponent, game):
                continue
            matchup = Matchup(game, (policy, opponent), env_kwargs=dict(env_kwargs or {}))
            engine = RolloutEngine([matchup], concurrency=concurrency, seed=seed + 1000 * index)
            records.extend(engine.run(games=games_per_pairing).games)
    return records

