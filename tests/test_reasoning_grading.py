"""The reasoning grader: equivalent answer forms, close wrong answers, multiple-choice letters,
and its guarantees on hostile text (never raises, linear time, a time limit per check)."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiral_train.reasoning import grade
from spiral_train.reasoning.grading import (
    MAX_ANSWER_CHARS,
    extract_choice,
    extract_math_answer,
    grade_math,
)

MB = 1 << 20


def boxed(answer: str) -> str:
    return f"Let me reason step by step. ... so the answer is \\boxed{{{answer}}}."


EQUIVALENT = [
    # (gold as a data set writes it, the model's final answer)
    ("\\frac{1}{2}", "0.5"),
    ("\\frac{1}{2}", "1/2"),
    ("\\frac{3}{4}", "\\dfrac34"),
    ("0.375", "\\frac{3}{8}"),
    ("\\frac{1}{3}", "0.333333"),
    ("25\\%", "25"),
    ("0.25", "25\\%"),
    ("9\\text{ cm}", "9"),
    ("9", "9 \\text{ cm}"),
    ("\\text{Sunday}", "Sunday"),
    ("\\text{(C)}", "C"),
    ("(-1, 3)", "(-1,3)"),
    ("[2, \\infty)", "[2,\\infty)"),
    ("\\{-2, 2\\}", "\\{2, -2\\}"),
    ("(-2, 3)", "\\left( -2, 3 \\right)"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
    ("120^\\circ", "120"),
    ("30^\\circ", "30^{\\circ}"),
    ("4.5e33", "4.5 \\times 10^{33}"),
    ("4.5 \\times 10^{6}", "4500000"),
    ("2.88e-19", "2.88 \\times 10^{-19}"),
    ("1,450,000", "1450000"),
    ("10,\\!080", "10080"),
    ("x^2 + 2x + 1", "(x+1)^2"),
    ("5\\sqrt{2}", "\\sqrt{50}"),
    ("x=5", "5"),
    ("\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}", "\\begin{pmatrix} -\\frac{1}{3} \\\\ \\frac{2}{3} \\end{pmatrix}"),
    ("27", "27.0"),
    ("$m_{\\max }=n^{2}-n-1$", "m_{\\max}=n^2-n-1"),
]

CLOSE_BUT_WRONG = [
    ("0.375", "0.376"),
    ("\\frac{1}{3}", "0.33"),
    ("(1, 2)", "(2, 1)"),
    ("[1, 2)", "(1, 2)"),
    ("\\{1, 2\\}", "\\{1, 3\\}"),
    ("2.88e-19", "1.325e-27"),
    (".0000672", ".0000671"),
    ("120^\\circ", "60^\\circ"),
    ("4.5e33", "4.6 \\times 10^{33}"),
    ("x^2 + 2x + 1", "(x-1)^2"),
    ("1,450,000", "1,450,001"),
    ("\\text{Sunday}", "Monday"),
    ("12", "-12"),
]


@pytest.mark.parametrize(("gold", "answer"), EQUIVALENT)
def test_equivalent_forms_grade_correct(gold: str, answer: str) -> None:
    assert grade(boxed(answer), gold), (gold, answer)


@pytest.mark.parametrize(("gold", "answer"), CLOSE_BUT_WRONG)
def test_close_wrong_answers_grade_wrong(gold: str, answer: str) -> None:
    assert not grade(boxed(answer), gold), (gold, answer)


def test_small_numbers_are_compared_relatively() -> None:
    """math-verify rounds numbers to 6 decimal places, so 2.88e-19 and 1.325e-27 (both 0.0)
    compared equal: Minerva's physics answers graded each other correct."""
    assert not grade(boxed("1.325e-27"), "2.88e-19")
    assert not grade(boxed("0.0000671"), "0.0000672")
    assert grade(boxed("0.0000672"), "6.72 \\times 10^{-5}")


def test_the_answer_is_the_last_box_after_the_reasoning() -> None:
    assert grade("<think>\\boxed{7}</think>\nSo the answer is \\boxed{12}", "12")
    assert not grade("<think>\\boxed{12}</think>\nSo the answer is \\boxed{7}", "12")
    assert not grade("<think> so it must be \\boxed{12}", "12")  # reasoning never closed
    assert grade("first \\boxed{3}, then on reflection \\boxed{12}", "12")
    assert grade("\\boxed{\\boxed{12}}", "12")
    assert grade("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{\\sqrt{2}}{2}")


def test_without_a_box_anchored_answers_count_and_stray_numbers_do_not() -> None:
    assert grade("So the final answer is 12.", "12")
    assert grade("Answer: $\\frac{3}{4}$", "0.75")
    no_answer = grade_math("mis neither 58si 12 O 1230 43", "12")
    assert not no_answer.correct and no_answer.extracted is None and no_answer.reason


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("<think> 2 + 2 is 4, so \\boxed{4}", "never closed"),
        ("\\boxed{}", "empty"),
        ("\\boxed{" + "1" * (MAX_ANSWER_CHARS + 1) + "}", "longer than"),
        ("I do not know.", "no final answer"),
    ],
)
def test_responses_without_a_gradable_answer_say_why(response: str, reason: str) -> None:
    result = grade_math(response, "4")
    assert not result.correct and result.extracted is None
    assert reason in (result.reason or "")


def test_extract_math_answer_returns_the_inner_last_box() -> None:
    assert extract_math_answer("x \\boxed{a \\boxed{5}}") == ("5", None)
    assert extract_math_answer("no box here") == (None, None)


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("I think it is B.\nAnswer: C", "C"),
        ("**Answer:** (D)", "D"),
        ("The answer is: A", "A"),
        ("so \\boxed{B}", "B"),
        ("so \\boxed{(C)}", "C"),
        ("so \\boxed{\\text{D}}", "D"),
        ("so \\boxed{B) Mercury}", "B"),
        ("Answer: B\nWait, no. Answer: A", "A"),
        ("<think>Answer: A</think>Answer: B", "B"),
        ("Answer: E", None),
        ("Answer: a new idea", None),
        ("Answer: Absolutely", None),
        ("no letter at all", None),
    ],
)
def test_multiple_choice_letter_extraction(response: str, letter: str | None) -> None:
    assert extract_choice(response, "ABCD") == letter


def test_multiple_choice_accepts_up_to_the_question_s_letters() -> None:
    assert extract_choice("Answer: J", "ABCDEFGHIJ") == "J"
    assert extract_choice("Answer: J", "ABCD") is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    response=st.text(alphabet=st.sampled_from(list("\\{}$^_()[]<>/=.,-+0123456789 abcxeE")) | st.characters(), max_size=300),
    gold=st.text(max_size=40),
)
def test_grading_never_raises(response: str, gold: str) -> None:
    text = response.replace("b", "\\boxed{").replace("t", "</think>")
    result = grade_math(text, gold, timeout_s=2)
    assert isinstance(result.correct, bool)
    assert extract_choice(text, "ABCD") in {None, "A", "B", "C", "D"}


@settings(max_examples=40, deadline=None)
@given(answer=st.one_of(st.integers(-10**6, 10**6).map(str), st.fractions(max_denominator=50).map(str)))
def test_any_gold_number_matches_itself_and_not_its_successor(answer: str) -> None:
    assert grade(boxed(answer), answer)
    assert not grade(boxed(f"{answer}+1"), answer)


def test_non_text_input_is_graded_wrong_not_raised() -> None:
    assert grade(None, "1") is False  # type: ignore[arg-type]
    assert grade_math(b"\\boxed{1}", "1").reason  # type: ignore[arg-type]


ADVERSARIAL = {
    "open braces": "{" * MB,
    "close braces": "}" * MB,
    "unbalanced boxes": "\\boxed{" * (MB // 7),
    "nested boxes": "\\boxed{" * (MB // 16) + "1" + "}" * (MB // 16),
    "many boxes": "\\boxed{1}" * (MB // 9),
    "huge number": "\\boxed{" + "9" * (MB - 8) + "}",
    "deep latex": "\\frac{" * (MB // 12) + "1" + "}{2}" * (MB // 12),
    "unclosed thinking": "<think>" * (MB // 7),
    "answer then spaces": "Answer:" + " " * MB,
    "answer then stars": "answer" + "*" * MB + "x",
    "scientific runs": "1e5" * (MB // 3),
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_one_megabyte_of_hostile_text_is_graded_in_linear_time(name: str) -> None:
    text = ADVERSARIAL[name]
    grade_math("warm up \\boxed{1}", "1")
    timings = []
    for size in (len(text) // 4, len(text)):
        start = time.perf_counter()
        result = grade_math(text[:size], "12", timeout_s=2)
        extract_choice(text[:size], "ABCD")
        timings.append(time.perf_counter() - start)
        assert not result.correct and not result.timed_out
    assert timings[1] < 3.0, timings
    assert timings[1] < 12 * timings[0] + 0.2, timings  # 4x the text: about 4x the time


@pytest.mark.parametrize("answer", ["10^{10^{10}}", "9^{9^{9^{9}}}", "(10^{9})!", "\\prod_{k=1}^{10^{6}} k"])
def test_a_slow_symbolic_check_times_out_wrong_and_flagged(answer: str) -> None:
    start = time.perf_counter()
    result = grade_math(boxed(answer), "3", timeout_s=0.3)
    assert time.perf_counter() - start < 3.0
    assert not result.correct
    assert result.timed_out and result.extracted == answer


def test_the_time_limit_leaves_an_outer_timer_and_handler_in_place() -> None:
    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert grade(boxed("0.5"), "\\frac{1}{2}")
        assert grade_math(boxed("10^{10^{10}}"), "3", timeout_s=0.2).timed_out
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25.0 < remaining <= 30.0
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        time.sleep(0.2)
        assert fired == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_off_the_main_thread_grading_runs_in_a_worker_with_the_time_limit() -> None:
    results: dict[str, object] = {}

    def work() -> None:
        results["right"] = grade(boxed("0.5"), "\\frac{1}{2}")
        results["wrong"] = grade(boxed("0.6"), "\\frac{1}{2}")
        results["slow"] = grade_math(boxed("10^{10^{10}}"), "3", timeout_s=0.5)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(120)
    assert results["right"] is True and results["wrong"] is False
    slow = results["slow"]
    assert slow.timed_out and not slow.correct  # type: ignore[attr-defined]
