"""The evaluation protocol: prompts, sampling and limits, with SPIRAL's settings as a preset.

Every field is written into the results, so a number can be reproduced (or told apart from
one measured another way: a different prompt, shot count or token limit moves MATH500 by
tens of points).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from spiral_agents.llm.backend import ChatMessages, SamplingConfig
from spiral_agents.llm.prompts import (
    BaseModelTemplate,
    ChatTemplate,
    CustomTemplate,
    PromptTemplate,
)
from spiral_train.reasoning.data import LETTERS, Problem
from spiral_train.reasoning.grading import DEFAULT_TIMEOUT_S

SPIRAL_MATH_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}.\nQuestion: {question}"
"""SPIRAL's math prompt (its evaluation scripts): the user turn, zero-shot."""

CHOICE_PROMPT = (
    "Answer the following multiple choice question. The last line of your response should be of "
    "the following format: 'Answer: $LETTER' (without quotes) where LETTER is one of {letters}. "
    "Think step by step before answering.\n\n{question}\n\n{options}"
)
"""simple-evals' multiple-choice prompt (which SPIRAL used for GPQA and MMLU-Pro), for any
number of options."""


@dataclass(frozen=True)
class Protocol:
    """How problems are asked and answers sampled.

    ``math_prompt`` holds ``{question}``; ``choice_prompt`` holds ``{question}``, ``{options}``
    (one ``X) text`` line each) and ``{letters}``. The answer is read after the last
    ``</think>`` (thinking models).
    """

    name: str = "spiral"
    math_prompt: str = SPIRAL_MATH_PROMPT
    choice_prompt: str = CHOICE_PROMPT
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    samples: int = 4
    """Samples per problem: accuracy is pass@1 averaged over them."""
    max_tokens: int = 8192
    seed: int = 0
    """Problem ``i``'s sampling seed derives from it (the same problem gets the same seed)."""
    choice_seed: int = 0
    """Seed of the option shuffle of benchmarks that shuffle (GPQA)."""
    grade_timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if "{question}" not in self.math_prompt or "{question}" not in self.choice_prompt:
            raise ValueError("math_prompt and choice_prompt need a {question} field")
        if "{options}" not in self.choice_prompt:
            raise ValueError("choice_prompt needs an {options} field")
        if self.samples < 1 or self.max_tokens < 1:
            raise ValueError("samples and max_tokens must be at least 1")
        if self.temperature == 0 and self.samples > 1:
            raise ValueError("greedy decoding (temperature 0) gives one distinct sample: use samples=1")
        if not self.grade_timeout_s > 0:
            raise ValueError("grade_timeout_s must be positive")
        self.sampling()  # validates temperature, top_p, top_k

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_tokens=self.max_tokens,
            n=self.samples,
            logprobs=False,
        )

    def user_message(self, problem: Problem) -> str:
        """The user turn for a problem."""
        if problem.kind == "math":
            return self.math_prompt.replace("{question}", problem.question)
        letters = LETTERS[: len(problem.choices)]
        options = "\n".join(f"{letter}) {text}" for letter, text in zip(letters, problem.choices))
        return (
            self.choice_prompt.replace("{letters}", letters)
            .replace("{options}", options)
            .replace("{question}", problem.question)
        )

    def with_overrides(self, **changes: Any) -> Protocol:
        """A copy with some fields changed (``None`` values are ignored); the name gets a
        ``+overrides`` mark when anything changed."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown protocol fields: {', '.join(sorted(unknown))}")
        name = changes.pop("name", None)
        changed = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if not changed and name is None:
            return self
        return replace(self, **changed, name=name or f"{self.name}+overrides")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, Protocol] = {
    "spiral": Protocol(),
    "greedy": Protocol(name="greedy", temperature=0.0, top_p=1.0, samples=1),
}
"""``spiral``: SPIRAL's evaluation (temperature 0.6, top-p 0.95, 4 samples, 8,192 new tokens,
zero-shot, answer in ``\\boxed{}``); ``greedy``: the same prompt, temperature 0, one sample."""


def render_prompt(template: PromptTemplate, message: str, tokenizer: Any) -> str:
    """The prompt text for a token-id backend: the user ``message`` wrapped as ``template``
    wraps a game observation (raw ChatML for the base protocol, the tokenizer's chat template,
    or a custom format string), with the assistant turn opened."""
    if isinstance(template, BaseModelTemplate):
        return f"<|im_start|>user\n{message}<|im_end|>\n<|im_start|>assistant\n"
    if isinstance(template, ChatTemplate):
        kwargs = {} if template.enable_thinking is None else {"enable_thinking": template.enable_thinking}
        return tokenizer.apply_chat_template(
            prompt_messages(template, message), add_generation_prompt=True, tokenize=False, **kwargs
        )
    if isinstance(template, CustomTemplate):
        return template.template.replace("{observation}", message)
    raise TypeError(f"unsupported prompt template {type(template).__name__}")


def prompt_messages(template: PromptTemplate, message: str) -> ChatMessages:
    """The chat messages for a chat backend (the server applies its chat template)."""
    if isinstance(template, ChatTemplate) and template.system:
        return [{"role": "system", "content": template.system}, {"role": "user", "content": message}]
    if isinstance(template, CustomTemplate):
        return [{"role": "user", "content": template.template.replace("{observation}", message)}]
    if isinstance(template, (BaseModelTemplate, ChatTemplate)):
        return [{"role": "user", "content": message}]
    raise TypeError(f"unsupported prompt template {type(template).__name__}")


def template_settings(template: PromptTemplate) -> dict[str, Any]:
    """What the results record about the template."""
    settings: dict[str, Any] = {"name": getattr(template, "name", type(template).__name__)}
    if isinstance(template, ChatTemplate):
        settings.update(enable_thinking=template.enable_thinking, system=template.system)
    if isinstance(template, CustomTemplate):
        settings["format"] = template.template
    return settings
