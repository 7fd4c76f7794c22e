"""The warm start's targets: uniform random moves, or each observation's own random answer
distribution (which a tiny model can only match by reading the observation)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from transformers import AutoTokenizer

from spiral_agents.llm.prompts import make_template
from spiral_train.warm_start import format_examples


def answers_by_prompt(tiny_qwen3: Path, dirichlet: float | None, seed: int = 0) -> dict[tuple[int, ...], Counter]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    examples = format_examples(tokenizer, make_template("spiral-base", str(tiny_qwen3)), ["KuhnPoker-v1"], [{"rounds": 1}], 3000, seed, dirichlet)
    seen: dict[tuple[int, ...], Counter] = defaultdict(Counter)
    for prompt, answer in examples:
        seen[tuple(prompt)][tuple(answer)] += 1
    return seen


def first_answer_share(seen: dict[tuple[int, ...], Counter]) -> list[float]:
    """For each frequent prompt, the share of its most common answer."""
    return sorted(max(c.values()) / sum(c.values()) for c in seen.values() if sum(c.values()) >= 100)


def test_random_policy_targets_differ_by_observation_and_reproduce(tiny_qwen3: Path) -> None:
    uniform = first_answer_share(answers_by_prompt(tiny_qwen3, None))
    own = answers_by_prompt(tiny_qwen3, 3.0)
    shares = first_answer_share(own)
    assert max(uniform) < 0.6  # every prompt near 50/50
    assert max(shares) > 0.7 and min(shares) < 0.65  # each prompt its own distribution
    assert own == answers_by_prompt(tiny_qwen3, 3.0)  # the same seed, the same targets
    assert own != answers_by_prompt(tiny_qwen3, 3.0, seed=1)
