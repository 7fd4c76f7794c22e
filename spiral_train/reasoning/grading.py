"""Grading a model's response against a gold answer: math (math-verify) and multiple choice.

A math response is graded on its final answer: the last complete ``\\boxed{...}`` after the
reasoning (text after the last ``</think>``; see :func:`spiral_agents.llm.answers.strip_reasoning`),
else what math-verify's anchored extraction (``the final answer is ...``, ``Answer: ...``)
finds in the last :data:`FALLBACK_CHARS` characters.
The answer and the gold are compared as text first (after a light normalization), then
symbolically with math-verify (``parse`` + ``verify``: fractions, decimals, percents, units,
``\\text{}``, intervals, sets, tuples, degrees, scientific notation, equivalent expressions).

Guarantees, on any input (model output is untrusted):

- :func:`grade_math` never raises: a failure inside the parser or sympy counts as wrong.
- Linear time in the response length: the answer is located with single passes over the text
  and only an answer of at most :data:`MAX_ANSWER_CHARS` characters reaches the parser.
- Each answer's symbolic check (parsing gold and answer, comparing) runs under a time limit.
  A check that runs out counts as wrong and is flagged (``MathGrade.timed_out``). The limit
  is a ``SIGALRM`` timer, which Python can only arm in the main thread; called from another
  thread, the check runs in a worker process (started once, replaced if it hangs) whose main
  thread arms it, so the limit holds wherever the grader is called.
"""

from __future__ import annotations

import atexit
import logging
import math
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from spiral_agents.llm.answers import last_boxed, strip_reasoning

try:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    from sympy import Basic
except ImportError as error:  # a missing grader must not grade every answer wrong, silently
    raise ImportError(
        f"spiral_train.reasoning needs math-verify ({error.name} is missing): pip install 'spiral[eval]'"
    ) from error

MAX_ANSWER_CHARS = 1000
"""Longest final answer handed to the symbolic parser; a longer one is graded wrong."""

FALLBACK_CHARS = 1000
"""With no ``\\boxed{}`` answer, math-verify's extraction looks at this many last characters."""

DEFAULT_TIMEOUT_S = 5.0
"""Time limit, in seconds, of one answer's symbolic check (math-verify's own default)."""

SMALL_NUMBER_REL_TOL = 1e-5
"""Relative agreement a number must have with a gold number smaller than 1 in size."""

WORKER_GRACE_S = 10.0
"""Extra seconds a worker process gets past its own time limit before it is replaced."""

_WHITESPACE = re.compile(r"\s+")
_SPACING = re.compile(r"\\left|\\right|\\[!,;: ]|~")
_SINGLE_BRACED = re.compile(r"([\^_])\{(\w)\}")
_TEXT = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_SCIENTIFIC = re.compile(r"(?<![\w.\\])(\d+(?:\.\d+)?)[eE]([+-]?\d{1,4})(?![\w.])")
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)\s*\{")
_LETTER_IN_BOX = re.compile(r"^\(?([A-Z])\)?(?:$|[\s.:)])")
_ANSWER_LINE = re.compile(r"(?i:answer)[ \t*]*+(?:is[ \t*]*+)?:[ \t*$(\[{]*+([A-Z])(?![A-Za-z])")
"""simple-evals' ``Answer: X`` (also ``**Answer:** (X)``); possessive runs keep it linear."""
_TEXT_WRAPPER = re.compile(r"^\\(?:text|textbf|mathrm|mathbf)\s*\{(.*)\}$", re.DOTALL)


class _Deadline(BaseException):
    """Raised by the alarm inside a check that ran out of time (a BaseException, so no
    ``except Exception`` in the parser or sympy swallows it)."""


@dataclass(frozen=True)
class MathGrade:
    """The grade of one response: correct or not, the answer it was graded on, and why."""

    correct: bool
    extracted: str | None
    """The final answer found in the response (``None``: no answer)."""
    timed_out: bool = False
    """The symbolic check ran past its time limit (graded wrong)."""
    reason: str | None = None
    """Why the response has no gradable answer, when it has none."""


def grade(response: str, gold: str) -> bool:
    """Whether a model's whole ``response`` gets the math answer ``gold`` (as the data set
    writes it) right. Never raises; see :func:`grade_math` for the details of a grade."""
    return grade_math(response, gold).correct


def grade_math(response: str, gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> MathGrade:
    """Grade a math response: the final answer found in it, compared with ``gold``.

    ``timeout_s`` bounds the symbolic check; past it the response is wrong and flagged.
    """
    if not isinstance(response, str) or not isinstance(gold, str):
        return MathGrade(False, None, reason="response and gold answer must be text")
    if threading.current_thread() is not threading.main_thread():
        return _grade_in_worker(response, gold, timeout_s)
    return _grade_here(response, gold, timeout_s)


def extract_math_answer(response: str) -> tuple[str | None, str | None]:
    """The final ``\\boxed{}`` answer after the reasoning, or ``(None, reason)`` when there is
    none; linear time. Nested boxes give the innermost last one."""
    answer_part, unfinished = strip_reasoning(response)
    content = last_boxed(answer_part)
    if content is None:
        if unfinished:
            return None, "the reasoning (<think>) was never closed"
        return None, None
    if len(content) > MAX_ANSWER_CHARS:
        return None, f"the boxed answer is longer than {MAX_ANSWER_CHARS} characters"
    while _BOX_COMMAND.search(content):
        inner = last_boxed(content)
        if inner is None:
            break
        content = inner
    content = content.strip()
    if not content:
        return None, "the boxed answer is empty"
    return content, None


def extract_choice(response: str, letters: str) -> str | None:
    """The letter of a multiple-choice answer: the last ``\\boxed{X}`` after the reasoning,
    else the last ``Answer: X`` there (simple-evals' form); only letters in ``letters``."""
    if not isinstance(response, str):
        return None
    answer_part, _ = strip_reasoning(response)
    boxed = last_boxed(answer_part)
    if boxed is not None:
        content = boxed.strip()
        wrapped = _TEXT_WRAPPER.match(content)
        if wrapped:
            content = wrapped[1].strip()
        match = _LETTER_IN_BOX.match(content)
        if match and match[1] in letters:
            return match[1]
    found = None
    for match in _ANSWER_LINE.finditer(answer_part):
        if match[1] in letters:
            found = match[1]
    return found


# --- the check ---------------------------------------------------------------------------


def _grade_here(response: str, gold: str, timeout_s: float) -> MathGrade:
    """Grade in this (the main) thread, the symbolic part under a SIGALRM time limit."""
    try:
        content, reason = extract_math_answer(response)
    except Exception as exc:  # noqa: BLE001 - the grader never raises on model output
        return MathGrade(False, None, reason=f"answer extraction failed: {type(exc).__name__}")
    gold_text = _clean(gold)
    if content is not None and _canonical(_clean(content)) == _canonical(gold_text):
        return MathGrade(True, content)
    if content is None and reason is not None:
        return MathGrade(False, None, reason=reason)
    try:
        with _time_limit(timeout_s):
            gold_parsed = _parse_gold(gold_text)
            if content is None:
                predicted, content = _parse_fallback(strip_reasoning(response)[0][-FALLBACK_CHARS:])
                if content is None:
                    return MathGrade(False, None, reason="no final answer found (no \\boxed{})")
            else:
                predicted = _parse_answer(_clean(content))
            correct = _verify(gold_parsed, predicted)
    except _Deadline:
        return MathGrade(False, content, timed_out=True, reason=f"symbolic check over {timeout_s:g} s")
    except Exception:  # noqa: BLE001 - a parser or sympy failure grades wrong, never raises
        correct = False
    return MathGrade(correct, content)


def _clean(text: str) -> str:
    """Strip math-mode dollars and surrounding space, and spell scientific notation
    (``4.5e33``) as LaTeX so the parser reads it as a number, not Euler's e."""
    text = text.replace("\\$", "").replace("$", "").strip().rstrip(".").strip()
    return _SCIENTIFIC.sub(r"\1\\times10^{\2}", text)


def _canonical(text: str) -> str:
    """Text form for the exact comparison: no spacing commands, ``\\text{}`` unwrapped,
    ``x^{2}`` as ``x^2``, ``\\dfrac`` as ``\\frac``, no whitespace, lower case."""
    text = _SPACING.sub("", text)
    text = _TEXT.sub(r"\1", text)
    text = _SINGLE_BRACED.sub(r"\1\2", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return _WHITESPACE.sub("", text).lower()


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list[Any]:
    return parse("\\boxed{" + gold + "}", parsing_timeout=None, raise_on_error=True)


@lru_cache(maxsize=4096)
def _parse_answer(answer: str) -> list[Any]:
    return parse("\\boxed{" + answer + "}", parsing_timeout=None, raise_on_error=True)


def clear_parse_caches() -> None:
    """Forget the parsed gold answers and answers kept for reuse (for timing)."""
    _parse_gold.cache_clear()
    _parse_answer.cache_clear()


def _parse_fallback(tail: str) -> tuple[list[Any], str | None]:
    """math-verify's anchored extraction (``final answer is ...``, ``Answer: ...``; LaTeX,
    then plain expressions) on the response's end. Unanchored, any number in any text would
    count as an answer."""
    anchored = [LatexExtractionConfig(try_extract_without_anchor=False), ExprExtractionConfig(try_extract_without_anchor=False)]
    parsed = parse(tail, anchored, parsing_timeout=None, raise_on_error=True)
    if not parsed:
        return [], None
    text = parsed[-1] if isinstance(parsed[-1], str) else str(parsed[0])
    return parsed, text[:MAX_ANSWER_CHARS]


def _verify(gold: list[Any], predicted: list[Any]) -> bool:
    """math-verify's verdict; for a gold number under 1 in size, which math-verify compares
    rounded to 6 decimal places (``2.88e-19`` and ``1.3e-27`` both round to 0), the answer
    must also agree to a relative :data:`SMALL_NUMBER_REL_TOL`."""
    if not gold or not predicted:
        return False
    if not verify(gold, predicted, timeout_seconds=None, raise_on_error=True):
        return False
    target = _number(gold[0])
    if target is None or not 0 < abs(target) < 1:
        return True
    values = [v for v in map(_number, predicted) if v is not None]
    return not values or any(abs(v - target) <= SMALL_NUMBER_REL_TOL * abs(target) for v in values)


def _number(expr: Any) -> float | None:
    """The real value of a constant sympy expression, else ``None``."""
    if not isinstance(expr, Basic) or not expr.is_number:
        return None
    try:
        value = complex(expr.evalf(30))
    except (TypeError, ValueError, ArithmeticError):
        return None
    if value.imag or not math.isfinite(value.real):
        return None
    return value.real


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`_Deadline` in the body after ``seconds``; an outer ``ITIMER_REAL`` timer
    and SIGALRM handler are put back afterwards. Main thread only."""
    armed = True

    def on_alarm(signum: int, frame: Any) -> None:
        if armed:
            raise _Deadline

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    start = time.monotonic()
    try:
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if outer_delay > 0:
            remaining = outer_delay - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-6), outer_interval)


def _not_timeout_disabled_warning(record: logging.LogRecord) -> bool:
    return "Timeout is disabled" not in record.getMessage()


# math-verify warns once that its own (signal) timeouts are off: ours replace them.
for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_not_timeout_disabled_warning)


# --- outside the main thread: a worker process -----------------------------------------------

_worker_lock = threading.Lock()
_worker: ProcessPoolExecutor | None = None


def _grade_in_worker(response: str, gold: str, timeout_s: float) -> MathGrade:
    """Grade in a worker process, whose main thread can arm the time limit; a worker that
    does not answer within the limit plus :data:`WORKER_GRACE_S` is replaced."""
    global _worker
    with _worker_lock:
        if _worker is None:
            import multiprocessing

            _worker = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        pool = _worker
    try:
        return pool.submit(_grade_here, response, gold, timeout_s).result(timeout_s + WORKER_GRACE_S)
    except FutureTimeout:
        _drop_worker(pool)
        return MathGrade(False, None, timed_out=True, reason=f"grader worker hung past {timeout_s:g} s")
    except Exception as exc:  # noqa: BLE001 - a dead worker grades wrong, the next call starts anew
        _drop_worker(pool)
        return MathGrade(False, None, reason=f"grader worker failed: {type(exc).__name__}: {exc}")


def _drop_worker(pool: ProcessPoolExecutor) -> None:
    """Kill a worker pool's processes and forget it, so the next check starts a fresh one."""
    global _worker
    with _worker_lock:
        if _worker is pool:
            _worker = None
    for process in list(getattr(pool, "_processes", {}).values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _shutdown_worker() -> None:
    if _worker is not None:
        _drop_worker(_worker)


atexit.register(_shutdown_worker)
