"""Prompt templates: how a player's observation text becomes the model's prompt.

* :class:`BaseModelTemplate` — SPIRAL's protocol for base models: no system prompt, one ChatML
  user turn that states the two-player zero-sum setting, gives the observation, and asks for
  step-by-step reasoning with the final move in ``\\boxed{}``; then the assistant turn opens.
* :class:`ChatTemplate` — the tokenizer's own chat template (instruct and hybrid-thinking
  models), with ``enable_thinking`` on or off.
* :class:`CustomTemplate` — a user-supplied format string with an ``{observation}`` field.

:func:`template_for_model` picks a sensible default per known model id.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from spiral_agents.llm.backend import ChatMessages, TokenIds

INSTRUCTION = (
    "You are a player in a two-player zero-sum game. Play valid moves and try to win.\n"
    "Here is what you can see of the game:\n\n{observation}\n\n"
    "Reason about the position step by step. Then give your move, written exactly in the "
    "game's action syntax, as your final answer inside \\boxed{{}}."
)


class PromptTemplate(Protocol):
    """Renders an observation text as the prompt text (then token ids, for local backends)
    or as chat messages (for remote chat endpoints)."""

    def render(self, observation: str, tokenizer: Any = None) -> str: ...

    def messages(self, observation: str) -> ChatMessages: ...


def token_ids(template: PromptTemplate, observations: list[str], tokenizer: Any) -> list[TokenIds]:
    """Token ids of many prompts, tokenized in one call (no cache: see :class:`PromptEncoder`)."""
    return PromptEncoder(tokenizer, cache_size=0)([template.render(o, tokenizer) for o in observations])


class PromptEncoder:
    """Token ids of prompt texts, exactly ``tokenizer(texts, add_special_tokens=False)``'s, faster.

    Prompts seen recently come from a cache of ``cache_size`` texts (the first turns of a game
    repeat across games; a Kuhn Poker deal has a handful of histories; 0 turns the cache off).
    The others are tokenized in one call to the Rust tokenizer's ``encode_batch_fast``, which
    skips the character offsets, whenever the tokenizer is a fast one with no truncation or
    padding set; otherwise through the tokenizer's own ``__call__``.
    """

    def __init__(self, tokenizer: Any, cache_size: int = 4096) -> None:
        self.tokenizer = tokenizer
        self.cache_size = cache_size
        self._cache: OrderedDict[str, array[int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __call__(self, texts: Sequence[str]) -> list[TokenIds]:
        if self.cache_size <= 0:
            self.misses += len(texts)
            return self._encode(list(texts))
        found: list[TokenIds | None] = []
        missing: dict[str, None] = {}
        for text in texts:
            ids = self._cache.get(text)
            if ids is None:
                missing[text] = None
                found.append(None)
            else:
                self._cache.move_to_end(text)
                found.append(ids.tolist())
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            encoded = dict(zip(missing, self._encode(list(missing))))
            for text, ids in encoded.items():
                self._cache[text] = array("i", ids)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            found = [list(encoded[text]) if ids is None else ids for text, ids in zip(texts, found)]
        return found  # type: ignore[return-value]

    def _encode(self, texts: list[str]) -> list[TokenIds]:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if (
            hasattr(backend, "encode_batch_fast")
            and backend.truncation is None
            and backend.padding is None
            and backend.encode_special_tokens == bool(getattr(self.tokenizer, "split_special_tokens", False))
        ):
            return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=False)]
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]


def user_message(observation: str) -> str:
    return INSTRUCTION.format(observation=observation)


@dataclass(frozen=True)
class BaseModelTemplate:
    """SPIRAL's base-model protocol: one raw ChatML user turn, the assistant turn opened."""

    name: str = "spiral-base"

    def render(self, observation: str, tokenizer: Any = None) -> str:
        return f"<|im_start|>user\n{user_message(observation)}<|im_end|>\n<|im_start|>assistant\n"

    def messages(self, observation: str) -> ChatMessages:
        return [{"role": "user", "content": user_message(observation)}]


@dataclass(frozen=True)
class ChatTemplate:
    """The tokenizer's chat template; ``enable_thinking`` is passed through when set."""

    enable_thinking: bool | None = None
    system: str | None = None
    name: str = "chat"

    def messages(self, observation: str) -> ChatMessages:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return messages + [{"role": "user", "content": user_message(observation)}]

    def render(self, observation: str, tokenizer: Any = None) -> str:
        if tokenizer is None:
            raise ValueError("the chat template is the tokenizer's: pass the tokenizer")
        kwargs = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
        return tokenizer.apply_chat_template(
            self.messages(observation), add_generation_prompt=True, tokenize=False, **kwargs
        )


@dataclass(frozen=True)
class CustomTemplate:
    """A user-supplied prompt: ``template.format(observation=...)``, tokenized as written."""

    template: str
    name: str = "custom"

    def __post_init__(self) -> None:
        if "{observation}" not in self.template:
            raise ValueError("a custom template needs an {observation} field")

    def render(self, observation: str, tokenizer: Any = None) -> str:
        return self.template.replace("{observation}", observation)

    def messages(self, observation: str) -> ChatMessages:
        return [{"role": "user", "content": self.render(observation)}]


def template_for_model(model_id: str) -> PromptTemplate:
    """The default template for a model id or path.

    Base models and SPIRAL's checkpoints use the base protocol (that is how Spiral-Qwen3-4B
    was trained); Instruct models their chat template without thinking; Qwen3 hybrid
    models their chat template with thinking on; anything else the base protocol.
    """
    name = model_id.lower().rstrip("/").rsplit("/", 1)[-1]
    if name.endswith("-base") or name.startswith("spiral"):
        return BaseModelTemplate()
    if "instruct" in name:
        return ChatTemplate(enable_thinking=False)
    if name.startswith("qwen3"):
        return ChatTemplate(enable_thinking=True)
    return BaseModelTemplate()


def make_template(spec: str | PromptTemplate | None, model_id: str) -> PromptTemplate:
    """A template from config: ``None`` (model default), ``"spiral-base"``, ``"chat"``,
    ``"chat-thinking"``, ``"chat-no-thinking"``, a format string with ``{observation}``, or
    a template object."""
    if spec is None:
        return template_for_model(model_id)
    if not isinstance(spec, str):
        return spec
    named = {
        "spiral-base": BaseModelTemplate(),
        "chat": ChatTemplate(),
        "chat-thinking": ChatTemplate(enable_thinking=True),
        "chat-no-thinking": ChatTemplate(enable_thinking=False),
    }
    if spec in named:
        return named[spec]
    if "{observation}" in spec:
        return CustomTemplate(spec)
    raise ValueError(f"unknown template {spec!r}: use one of {sorted(named)} or a format string")
