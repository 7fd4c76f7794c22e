"""Turn a model's response into the move the game receives.

The answer is the last complete ``\\boxed{...}`` outside reasoning (nested braces allowed),
else the last bracketed token after the reasoning. ``<think>`` blocks are reasoning and never
the answer; the opponent only ever sees the extracted answer. A response cut off by the token
limit, with unfinished reasoning, or with no answer is an invalid move, with a reason.
Everything here runs in linear time on untrusted text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOX_TOKENS = re.compile(r"\\boxed\s*\{|\{|\}")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|texttt)\s*\{(.*)\}", re.S)
_BRACKETED = re.compile(r"\[[^\[\]\n]{1,300}\]")
MAX_ACTION_CHARS = 2000
SHORT_ANSWER_WORDS = 12


@dataclass(frozen=True)
class Answer:
    """The move to send (``action``) or, when there is none, why (``reason``)."""

    action: str | None
    reason: str | None = None

    @property
    def invalid(self) -> bool:
        return self.action is None


def strip_reasoning(response: str) -> tuple[str, bool]:
    """The text after the reasoning, and whether the reasoning was left unfinished.

    Text after the last ``</think>`` is the answer part (chat templates may open ``<think>``
    in the prompt, so a lone ``</think>`` counts). An opened ``<think>`` with no close after
    it means the model never finished reasoning.
    """
    close = response.rfind("</think>")
    tail = response[close + len("</think>") :] if close >= 0 else response
    opened = tail.rfind("<think>")
    if opened >= 0:
        return tail[:opened], True
    return tail, False


def last_boxed(text: str) -> str | None:
    """Content of the complete ``\\boxed{...}`` that closes last, nested braces allowed."""
    stack: list[tuple[bool, int]] = []  # (is a box, content start)
    found: str | None = None
    for match in _BOX_TOKENS.finditer(text):
        token = match[0]
        if token == "}":
            if stack:
                is_box, start = stack.pop()
                if is_box:
                    found = text[start : match.start()]
        else:
            stack.append((token != "{", match.end()))
    return found


def to_action(content: str) -> str | None:
    """Map boxed content to the game's action text: ``4`` -> ``[4]``, ``bet`` -> ``[bet]``.

    Content that already holds a bracketed token is sent as written (a Negotiation answer may
    carry a message around its offer); a short answer is wrapped in brackets.
    """
    content = content.strip()
    wrapped = _TEXT_WRAPPER.fullmatch(content)
    if wrapped:
        content = wrapped[1].strip()
    content = content.strip("$ ").strip()
    if not content:
        return None
    if len(content) > MAX_ACTION_CHARS:
        content = content[:MAX_ACTION_CHARS]
    if "[" in content and "]" in content:
        return content
    if len(content.split()) <= SHORT_ANSWER_WORDS:
        return f"[{content.strip('[]')}]"
    return content


def extract_answer(response: str, finish_reason: str = "stop", error: str | None = None) -> Answer:
    """The move in a model's response, or the reason there is none."""
    if finish_reason == "error":
        return Answer(None, f"the model could not be queried: {error or 'unknown error'}")
    if finish_reason == "length":
        return Answer(None, "the response was cut off by the token limit before its final answer")
    answer_part, unfinished = strip_reasoning(response)
    boxed = last_boxed(answer_part)
    if boxed is not None:
        action = to_action(boxed)
        if action is None:
            return Answer(None, "the final \\boxed{} answer is empty")
        return Answer(action)
    if unfinished:
        return Answer(None, "the reasoning (<think>) was never closed, so there is no answer")
    tokens = _BRACKETED.findall(answer_part)
    if tokens:
        return Answer(tokens[-1])
    return Answer(None, "no answer found: put the final move inside \\boxed{}")
