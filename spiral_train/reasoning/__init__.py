"""Reasoning-transfer evaluation: math and multiple-choice benchmarks graded with a pinned
protocol, on any backend of the library (``spiral-eval`` on the command line).

    from spiral_train.reasoning import PRESETS, evaluate_reasoning, grade, load_benchmark

    grade("... so the answer is \\\\boxed{0.5}", "\\\\frac{1}{2}")          # True
    problems = load_benchmark("smoke-math").problems
    results = evaluate_reasoning(backend, template, problems, PRESETS["greedy"])
    results.metrics()     # {"reasoning/smoke-math/accuracy": ..., ...}
"""

from spiral_train.reasoning.data import (
    BENCHMARKS,
    Benchmark,
    BenchmarkSpec,
    DataError,
    FieldMap,
    Problem,
    load_benchmark,
)
from spiral_train.reasoning.evaluate import SettingsMismatch, evaluate_reasoning
from spiral_train.reasoning.grading import MathGrade, extract_choice, grade, grade_math
from spiral_train.reasoning.protocol import PRESETS, Protocol
from spiral_train.reasoning.results import (
    BenchmarkResult,
    Comparison,
    EvalResults,
    compare,
    load_results,
)

__all__ = [
    "BENCHMARKS",
    "PRESETS",
    "Benchmark",
    "BenchmarkResult",
    "BenchmarkSpec",
    "Comparison",
    "DataError",
    "EvalResults",
    "FieldMap",
    "MathGrade",
    "Problem",
    "Protocol",
    "SettingsMismatch",
    "compare",
    "evaluate_reasoning",
    "extract_choice",
    "grade",
    "grade_math",
    "load_benchmark",
    "load_results",
]
