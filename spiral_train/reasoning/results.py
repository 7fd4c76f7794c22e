"""Results of an evaluation: per-benchmark statistics, the average, the table, CSV and JSON,
and the paired comparison of two runs.

Accuracy is pass@1 averaged over each problem's samples, then over problems; its 95 %
interval is a percentile bootstrap over problems. ``compare`` pairs two runs problem by
problem and bootstraps the mean difference.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
_CHUNK = 200


@dataclass
class BenchmarkResult:
    """One benchmark's numbers."""

    name: str
    problems: int
    samples: int
    graded: int
    """Problems with every sample generated and graded (the others failed to generate)."""
    errors: int
    accuracy: float | None
    accuracy_ci95: tuple[float, float] | None
    pass_at_k: dict[str, float]
    mean_response_tokens: float | None
    mean_response_chars: float | None
    cut_off_share: float | None
    """Share of responses stopped by the token limit."""
    no_answer_share: float | None
    """Share of responses with no final answer found."""
    timed_out: int
    """Responses whose symbolic check ran out of time (graded wrong)."""
    scores: dict[str, float] = field(default_factory=dict)
    """Per problem id: the share of its samples graded correct (what ``compare`` pairs)."""


@dataclass
class EvalResults:
    """A whole run: settings, per-benchmark results, the average over benchmarks, timing."""

    settings: dict[str, Any]
    benchmarks: dict[str, BenchmarkResult]
    average: dict[str, Any]
    timing: dict[str, float]
    complete: bool
    """Every problem graded (no failed generation left to retry)."""

    def metrics(self, prefix: str = "reasoning") -> dict[str, float]:
        """Flat scalars for a metrics logger (TensorBoard, metrics.jsonl)."""
        flat: dict[str, float] = {}
        for name, result in self.benchmarks.items():
            for key in ("accuracy", "mean_response_tokens", "mean_response_chars", "cut_off_share", "no_answer_share"):
                value = getattr(result, key)
                if value is not None:
                    flat[f"{prefix}/{name}/{key}"] = float(value)
            flat[f"{prefix}/{name}/errors"] = float(result.errors)
        if self.average.get("accuracy") is not None:
            flat[f"{prefix}/average/accuracy"] = float(self.average["accuracy"])
        return flat

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "complete": self.complete,
            "average": self.average,
            "benchmarks": {name: asdict(result) for name, result in self.benchmarks.items()},
            "timing": self.timing,
        }

    def table(self) -> str:
        """The printed table: one row per benchmark and the average."""
        samples = max((r.samples for r in self.benchmarks.values()), default=1)
        header = ["benchmark", "problems", "accuracy", "95% CI", f"pass@{samples}", "tokens", "cut off", "no answer", "errors"]
        rows = [header]
        for result in self.benchmarks.values():
            rows.append([
                result.name, str(result.problems), _pct(result.accuracy), _interval(result.accuracy_ci95),
                _pct(result.pass_at_k.get(str(result.samples))), _num(result.mean_response_tokens),
                _pct(result.cut_off_share), _pct(result.no_answer_share), str(result.errors),
            ])  # fmt: skip
        average = self.average
        rows.append([
            "average", str(average.get("benchmarks", 0)), _pct(average.get("accuracy")),
            _interval(average.get("accuracy_ci95")), "", "", "", "", "",
        ])  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)

    def csv(self) -> str:
        """One row per benchmark plus the average."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([
            "benchmark", "problems", "samples", "graded", "errors", "accuracy", "ci95_low", "ci95_high",
            "pass_at_k", "mean_response_tokens", "mean_response_chars", "cut_off_share", "no_answer_share", "timed_out",
        ])  # fmt: skip
        for r in self.benchmarks.values():
            low, high = r.accuracy_ci95 or (None, None)
            writer.writerow([
                r.name, r.problems, r.samples, r.graded, r.errors, r.accuracy, low, high,
                json.dumps(r.pass_at_k), r.mean_response_tokens, r.mean_response_chars,
                r.cut_off_share, r.no_answer_share, r.timed_out,
            ])  # fmt: skip
        low, high = self.average.get("accuracy_ci95") or (None, None)
        writer.writerow(["average", self.average.get("benchmarks"), "", "", "", self.average.get("accuracy"), low, high])
        return out.getvalue()

    def write(self, directory: str | Path) -> None:
        """``results.json`` and ``results.csv`` in ``directory``, each written whole or not."""
        directory = Path(directory)
        write_atomic(directory / "results.json", json.dumps(self.to_dict(), indent=1) + "\n")
        write_atomic(directory / "results.csv", self.csv())


def summarize(
    records: Mapping[str, Sequence[Mapping[str, Any]]],
    samples: int,
    settings: dict[str, Any],
    timing: dict[str, float],
) -> EvalResults:
    """Results from per-benchmark problem records (see :mod:`spiral_train.reasoning.evaluate`)."""
    benchmarks = {name: _benchmark(name, rows, samples) for name, rows in records.items()}
    scored = [r for r in benchmarks.values() if r.scores]
    average: dict[str, Any] = {"benchmarks": len(scored), "accuracy": None, "accuracy_ci95": None}
    if scored:
        arrays = [np.array(list(r.scores.values())) for r in scored]
        average["accuracy"] = float(np.mean([a.mean() for a in arrays]))
        average["accuracy_ci95"] = _bootstrap_average(arrays)
    complete = all(r.errors == 0 and r.graded == r.problems for r in benchmarks.values())
    return EvalResults(settings, benchmarks, average, timing, complete)


def _benchmark(name: str, rows: Sequence[Mapping[str, Any]], samples: int) -> BenchmarkResult:
    graded = [row for row in rows if row.get("error") is None]
    scores = {str(row["id"]): sum(map(bool, row["correct"])) / len(row["correct"]) for row in graded if row["correct"]}
    responses = [i for row in graded for i in range(len(row["correct"]))]
    count = len(responses)

    def share(key: str, test: Any) -> float | None:
        return sum(test(v) for row in graded for v in row[key]) / count if count else None

    def mean(key: str) -> float | None:
        values = [v for row in graded for v in row[key] if v is not None]
        return float(np.mean(values)) if values else None

    values = np.array(list(scores.values()))
    counts = [(len(row["correct"]), sum(map(bool, row["correct"]))) for row in graded if row["correct"]]
    return BenchmarkResult(
        name=name,
        problems=len(rows),
        samples=samples,
        graded=len(graded),
        errors=len(rows) - len(graded),
        accuracy=float(values.mean()) if len(values) else None,
        accuracy_ci95=bootstrap_interval(values) if len(values) else None,
        pass_at_k={str(k): pass_at_k(counts, k) for k in range(1, samples + 1)} if counts else {},
        mean_response_tokens=mean("response_tokens"),
        mean_response_chars=float(np.mean([len(t) for row in graded for t in row["responses"]])) if count else None,
        cut_off_share=share("finish_reasons", lambda v: v == "length"),
        no_answer_share=share("extracted", lambda v: v is None),
        timed_out=sum(bool(v) for row in graded for v in row["timed_out"]),
        scores=scores,
    )


def pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """The unbiased pass@k estimate, ``1 - C(n-c, k) / C(n, k)``, averaged over problems
    given as ``(samples n, correct c)``; a problem with fewer than ``k`` samples uses all."""
    total = 0.0
    for n, c in counts:
        kk = min(k, n)
        total += 1.0 - math.comb(n - c, kk) / math.comb(n, kk)
    return total / len(counts)


def bootstrap_interval(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of ``values`` (resampling problems)."""
    rng = np.random.default_rng(seed)
    means = np.concatenate([
        values[rng.integers(0, len(values), (min(_CHUNK, resamples - start), len(values)))].mean(axis=1)
        for start in range(0, resamples, _CHUNK)
    ])  # fmt: skip
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _bootstrap_average(arrays: list[np.ndarray]) -> tuple[float, float]:
    """Interval of the unweighted average of benchmark means, each resampled on its own."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    totals = np.zeros(BOOTSTRAP_RESAMPLES)
    for values in arrays:
        totals += np.concatenate([
            values[rng.integers(0, len(values), (min(_CHUNK, BOOTSTRAP_RESAMPLES - start), len(values)))].mean(axis=1)
            for start in range(0, BOOTSTRAP_RESAMPLES, _CHUNK)
        ])  # fmt: skip
    low, high = np.percentile(totals / len(arrays), [2.5, 97.5])
    return float(low), float(high)


# --- comparing two runs --------------------------------------------------------------------


@dataclass
class Comparison:
    """Per benchmark present in both runs: accuracies on the problems both graded, the
    difference B - A and its paired-bootstrap 95 % interval."""

    benchmark: str
    paired: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    ci95: tuple[float, float]

    @property
    def beyond_noise(self) -> bool:
        """The interval excludes zero."""
        return self.ci95[0] > 0 or self.ci95[1] < 0


def load_results(path: str | Path) -> dict[str, Any]:
    """A ``results.json`` (or the run directory holding one), checked enough to compare."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such results file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable results file ({exc})") from None
    benchmarks = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(benchmarks, dict):
        raise ValueError(f"{path}: no 'benchmarks' object: not a spiral-eval results file")  # noqa: TRY004 - bad file content
    for name, result in benchmarks.items():
        scores = result.get("scores") if isinstance(result, dict) else None
        if not isinstance(scores, dict) or not all(isinstance(v, (int, float)) for v in scores.values()):
            raise ValueError(f"{path}: benchmark {name!r} has no per-problem 'scores'")
    return data


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Comparison]:
    """Paired comparison of two loaded results, benchmark by benchmark (problems matched by
    id; benchmarks or problems in only one run are left out)."""
    comparisons = []
    for name, result_a in a["benchmarks"].items():
        result_b = b["benchmarks"].get(name)
        if result_b is None:
            continue
        common = sorted(set(result_a["scores"]) & set(result_b["scores"]))
        if not common:
            continue
        scores_a = np.array([result_a["scores"][i] for i in common], dtype=float)
        scores_b = np.array([result_b["scores"][i] for i in common], dtype=float)
        comparisons.append(
            Comparison(
                name, len(common), float(scores_a.mean()), float(scores_b.mean()),
                float((scores_b - scores_a).mean()), bootstrap_interval(scores_b - scores_a),
            )
        )  # fmt: skip
    return comparisons


def comparison_table(comparisons: Sequence[Comparison], label_a: str, label_b: str) -> str:
    rows = [["benchmark", "paired", "A", "B", "B - A", "95% CI", "beyond noise"]]
    for c in comparisons:
        rows.append([
            c.benchmark, str(c.paired), _pct(c.accuracy_a), _pct(c.accuracy_b),
            f"{100 * c.difference:+.1f}", f"[{100 * c.ci95[0]:+.1f}, {100 * c.ci95[1]:+.1f}]",
            "yes" if c.beyond_noise else "no",
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return f"A = {label_a}\nB = {label_b}\n" + "\n".join(lines)


# --- helpers ---------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".writing")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _interval(interval: Sequence[float] | None) -> str:
    return "-" if interval is None else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
