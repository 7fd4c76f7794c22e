"""Warm start: a short supervised pass that teaches a fresh model the answer format.

The targets are random legal moves written as direct answers (``\\boxed{[4]}``), so the model
learns *how* to answer each game, not *what* is a good move: strategy is left to self-play.
``uniform`` draws every move uniformly; ``random_policy`` gives each observation its own random
answer distribution (Dirichlet over its legal moves, fixed by the seed and the observation's
text), so the model must read the observation to match it, which a tiny model otherwise never
learns to do from self-play's weak signal, while the distribution teaches no strategy.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

import spiral_envs
from spiral_agents.llm.prompts import PromptTemplate, token_ids
from spiral_agents.llm.scoring import answer_text


def format_examples(tokenizer: Any, template: PromptTemplate, games: Sequence[str], env_kwargs: Sequence[dict], count: int, seed: int, dirichlet: float | None = None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) pairs from random legal play of ``games``: uniform moves, or
    with ``dirichlet`` each observation's own Dirichlet(``dirichlet``) answer distribution."""
    rng = np.random.default_rng(seed)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    envs = [spiral_envs.env(g, **kw) for g, kw in zip(games, env_kwargs)]
    examples: list[tuple[list[int], list[int]]] = []
    episode = 0
    while len(examples) < count:
        env = envs[episode % len(envs)]
        env.reset(seed=seed + episode)
        episode += 1
        while not (env.terminations[env.agent_selection] or env.truncations[env.agent_selection]):
            observation = env.observe(env.agent_selection)
            move = env.game_state.random_move(rng) if dirichlet is None else _own_move(observation, rng, seed, dirichlet)
            action = move if isinstance(move, str) else env.game.actions[move]
            prompt = token_ids(template, [observation["text"]], tokenizer)[0]
            answer = list(tokenizer(answer_text(action), add_special_tokens=False)["input_ids"]) + [end]
            examples.append((prompt, answer))
            env.step(move)
    return examples[:count]


def _own_move(observation: dict[str, Any], rng: np.random.Generator, seed: int, alpha: float) -> int:
    """A move drawn from the observation's own answer distribution."""
    legal = np.flatnonzero(observation["action_mask"])
    own = np.random.default_rng([seed, zlib.crc32(observation["text"].encode("utf-8"))])
    return int(rng.choice(legal, p=own.dirichlet(np.full(len(legal), alpha))))


def warm_start(model: torch.nn.Module, tokenizer: Any, template: PromptTemplate, games: Sequence[str], env_kwargs: Sequence[dict], steps: int, batch_size: int, learning_rate: float, seed: int, ranks: int = 1, dirichlet: float | None = None) -> float:
    """Fine-tune on direct answers for ``steps`` steps; returns the last batch's loss.

    ``ranks`` > 1: the model is sharded over that many learner ranks that all train on these
    same batches and sum their gradients, so each divides its loss by ``ranks``.
    """
    examples = format_examples(tokenizer, template, games, env_kwargs, max(steps * batch_size // 2, batch_size), seed, dirichlet)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    generator = np.random.default_rng(seed)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        batch = [examples[i] for i in generator.choice(len(examples), size=batch_size)]
        width = max(len(p) + len(a) for p, a in batch)
        ids = torch.full((batch_size, width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        attention = torch.zeros((batch_size, width), dtype=torch.long)
        for i, (prompt, answer) in enumerate(batch):
            ids[i, : len(prompt) + len(answer)] = torch.tensor(prompt + answer)
            labels[i, len(prompt) : len(prompt) + len(answer)] = torch.tensor(answer)
            attention[i, : len(prompt) + len(answer)] = 1
        loss = model(input_ids=ids.to(device), attention_mask=attention.to(device), labels=labels.to(device)).loss
        optimizer.zero_grad(set_to_none=True)
        (loss / ranks).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    return float(loss.detach())
