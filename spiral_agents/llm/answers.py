"""Turn a model's response into the move the game receives.

The answer is the last complete ``\\boxed{...}`` outside reasoning, read whole (nested
braces allowed, as in LaTeX); formatting a model wraps around or inside it
(``\\boxed{\\boxed{4}}``, ``\\boxed{\\text{4}}``, ``\\textbf``, ``\\mathrm`` and the like) is
removed, keeping the text. Without a box it is the last bracketed token after the reasoning.
``<think>`` blocks are reasoning and never the answer; the opponent only ever sees the
extracted answer. A response cut off by the token limit, with unfinished reasoning, or with
no answer is an invalid move, with a reason.

Everything here runs in linear time on untrusted text. The response is read in one regex
pass, and the box's content in one more: every token consumes its own characters (the only
retry is the whitespace between a command and a brace, read once more) and costs one stack
or list operation, and no character is copied more than three times (the answer part, the
box's content, the plain answer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# LaTeX tokens: a run of backslashes with the command word (and the brace of its argument,
# if one follows) or the one character after it, or a group brace. A command counts after
# any run, as models write ``\\boxed`` for ``\boxed``; otherwise an odd run escapes the
# character after it (``\{`` is a literal brace) and an even run is line breaks.
_TOKENS = re.compile(r"(\\+)(?:([A-Za-z]+)(\s*\{)?|(.))?|[{}]", re.DOTALL)
WRAPPERS = frozenset(
    {
        "boxed", "fbox", "mbox", "hbox", "text", "textbf", "textit", "textmd", "textnormal",
        "textrm", "textsc", "textsf", "textsl", "texttt", "textup", "emph", "underline",
        "mathbf", "mathit", "mathnormal", "mathrm", "mathsf", "mathtt", "operatorname",
        "boldsymbol", "bm",
    }
)  # fmt: skip
"""Commands whose argument is shown as it is: removed around an answer, their text kept."""
_REPLACEMENTS = {
    "to": "->", "rightarrow": "->", "Rightarrow": "->", "longrightarrow": "->",
    "quad": " ", "qquad": " ", " ": " ", ",": " ", ";": " ", ":": " ",
}  # fmt: skip
"""LaTeX a model may use in an answer: arrows (as in an offer) and spaces."""
_BRACKETED = re.compile(r"\[[^\[\]\n]{1,300}\]")
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
    """The content of the complete ``\\boxed{...}`` that closes last, as written, or ``None``.

    Braces nest as in LaTeX (``\\{`` and ``\\}`` are literal). Linear time and memory.
    """
    open_groups: list[int] = []  # the content start of each open box, -1 for other groups
    found: tuple[int, int] | None = None
    for match in _TOKENS.finditer(text):
        brace = _brace(match)
        if brace == "{":
            open_groups.append(match.end() if match[2] == "boxed" else -1)
        elif brace == "}" and open_groups:
            start = open_groups.pop()
            if start >= 0:
                found = (start, match.end() - 1)
    return None if found is None else text[found[0] : found[1]]


def plain_answer(content: str) -> str:
    """``content`` without the formatting a model wraps around its answer, in linear time.

    Every :data:`WRAPPERS` command with its braces is removed, keeping its text (so nested
    boxes and ``\\text{...}`` read as their content); LaTeX arrows become ``->`` and LaTeX
    spaces a space. A wrapper whose brace never closes is left as written.
    """
    # Edits in text order, as [start, end, replacement, kept]; a wrapper's two are kept once
    # its brace closes. The stack holds the index of each open wrapper's edit, else -1.
    edits: list[list[Any]] = []
    stack: list[int] = []
    for match in _TOKENS.finditer(content):
        brace = _brace(match)
        if brace == "{":
            if match[2] in WRAPPERS:
                stack.append(len(edits))
                edits.append([match.start(), match.end(), "", False])
            else:
                stack.append(-1)
        elif brace == "}":
            if stack and (opening := stack.pop()) >= 0:
                edits[opening][3] = True
                edits.append([match.end() - 1, match.end(), "", True])
        elif match.start(1) >= 0:  # a command without an argument, or an escaped character
            if match[2] is not None:
                start, replacement = match.start(), _REPLACEMENTS.get(match[2])
            elif _escapes(match):
                start, replacement = match.end() - 2, _REPLACEMENTS.get(match[4])
            else:
                continue
            if replacement is not None:
                edits.append([start, match.end(), replacement, True])
    pieces, position = [], 0
    for start, end, replacement, kept in edits:
        if kept:
            pieces += (content[position:start], replacement)
            position = end
    pieces.append(content[position:])
    return "".join(pieces)


def _escapes(match: re.Match[str]) -> bool:
    """Whether a backslash run ends in an escape of the character after it (an odd run)."""
    return (match.end(1) - match.start(1)) % 2 == 1


def _brace(match: re.Match[str]) -> str | None:
    """The group brace a token opens or closes: a command's argument brace, or an unescaped one."""
    if match.start(1) < 0:
        return match[0]
    if match[2] is not None:
        return "{" if match[3] is not None else None
    char = match[4]
    return char if char in ("{", "}") and not _escapes(match) else None


def to_action(content: str) -> str | None:
    """Map boxed content to the game's action text: ``4`` -> ``[4]``, ``bet`` -> ``[bet]``.

    The content is read as :func:`plain_answer`. Content that then holds a bracketed token is
    sent whole, as written (a Negotiation answer may carry a message around its offer); a
    short answer is wrapped in brackets.
    """
    content = plain_answer(content).strip().strip("$ ").strip()
    if not content:
        return None
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
