"""The one generation interface every backend implements (vLLM, OpenAI-compatible, transformers).

A prompt is either token ids (local backends, and OpenAI-compatible *completions*) or a list of
chat messages (OpenAI-compatible *chat*). A backend returns, for each prompt, ``n`` generations
with text, token ids, per-token sampling log-probs and a finish reason. A request that fails
after retries comes back as a generation with ``finish_reason="error"`` and the error text:
it never raises out of ``generate`` for one bad request, so one failure ends only its game.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

TokenIds = list[int]
ChatMessages = list[dict[str, str]]
Prompt = TokenIds | ChatMessages
FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings shared by every backend (vLLM's SamplingParams subset)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    max_tokens: int = 4096
    n: int = 1
    stop_token_ids: tuple[int, ...] = ()
    logprobs: bool = True
    """Return the sampling log-prob of every generated token."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.max_tokens < 1 or self.n < 1:
            raise ValueError("max_tokens and n must be at least 1")


@dataclass
class Generation:
    """One sampled continuation."""

    text: str
    token_ids: TokenIds = field(default_factory=list)
    logprobs: list[float] | None = None
    """Sampling log-prob of each token in ``token_ids`` (same length), if requested."""
    finish_reason: FinishReason = "stop"
    """"stop" (end of turn or a stop token), "length" (cut by max_tokens) or "error"."""
    error: str | None = None


def error_generations(count: int, message: str) -> list[Generation]:
    """``count`` failed generations that carry ``message``."""
    return [Generation(text="", finish_reason="error", error=message) for _ in range(count)]


def check_seeds(prompts: Sequence[Prompt], seeds: Sequence[int | None] | None) -> list[int | None]:
    """One seed (or None) per prompt; a list of the wrong length is an error."""
    if seeds is None:
        return [None] * len(prompts)
    if len(seeds) != len(prompts):
        raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    return list(seeds)


def encode_prompt(
    prompt: Prompt, tokenizer: Any, vocab_size: int, max_length: int | None, limit_name: str
) -> TokenIds:
    """A local backend's token ids for a prompt: chat messages go through the tokenizer's chat
    template; ids must lie in the vocabulary and leave room under ``max_length`` (named
    ``limit_name`` in the error) for at least one new token."""
    if not prompt:
        raise ValueError("empty prompt")
    if isinstance(prompt[0], dict):
        messages = list(prompt)
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    else:
        ids = [int(token) for token in prompt]
    bad = [token for token in ids if not 0 <= token < vocab_size]
    if bad:
        raise ValueError(f"token ids outside the vocabulary of {vocab_size}: {bad[:5]}")
    if max_length is not None and len(ids) >= max_length:
        raise ValueError(f"prompt of {len(ids)} tokens reaches {limit_name} {max_length}")
    return ids


@runtime_checkable
class Backend(Protocol):
    """Generates continuations for a batch of prompts in one call."""

    tokenizer: Any
    """The HF tokenizer for token-id prompts, or ``None`` for chat-only remote backends."""

    def generate(
        self,
        prompts: Sequence[Prompt],
        sampling: SamplingConfig,
        seeds: Sequence[int | None] | None = None,
    ) -> list[list[Generation]]:
        """For each prompt, ``sampling.n`` generations; ``seeds[i]`` seeds prompt i's sampling."""
        ...


class UpdatableBackend(Backend, Protocol):
    """A local backend whose weights the trainer replaces in place after each update."""

    def update_weights(self, state_dict: Mapping[str, Any]) -> None: ...
