"""Benchmark problems: the registry, and loading from the Hugging Face Hub, local JSONL files
or the package's own smoke set.

Every loader turns a row into a :class:`Problem` (an id, the question, the gold answer as the
data set writes it, and for multiple choice the options as shown). A malformed row is an
error that names the file (or Hub set) and the line (or row) and field.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from spiral_agents.llm.answers import last_boxed

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class DataError(ValueError):
    """A benchmark file or Hub set that cannot be read as problems."""


@dataclass(frozen=True)
class Problem:
    """One problem of a benchmark."""

    benchmark: str
    id: str
    question: str
    answer: str
    """Math: the gold final answer as the data set writes it. Multiple choice: its letter."""
    choices: tuple[str, ...] = ()
    """Multiple choice: the options in the order shown (``A`` first); empty for math."""

    @property
    def kind(self) -> Literal["math", "choice"]:
        return "choice" if self.choices else "math"


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark's problems come from and how a row becomes a :class:`Problem`.

    Field names are candidates, tried in order (data sets spell them differently).
    """

    name: str
    kind: Literal["math", "choice"]
    description: str
    hub_id: str | None = None
    hub_config: str | None = None
    split: str = "test"
    revision: str | None = None
    """The Hub commit loaded; ``None``: not pinned here, the commit loaded is recorded."""
    question_fields: tuple[str, ...] = ("problem", "question")
    answer_fields: tuple[str, ...] = ("answer",)
    id_fields: tuple[str, ...] = ("id", "unique_id", "idx", "question_id")
    solution_fields: tuple[str, ...] = ("solution",)
    """Answer fields that hold a worked solution: the gold is its last ``\\boxed{}``."""
    after_hashes: bool = False
    """The gold is the text after the last ``####`` (GSM8K's solutions)."""
    choice_fields: tuple[str, ...] = ("choices", "options")
    correct_field: str | None = None
    """Multiple choice given as one correct option and ``incorrect_fields`` (GPQA)."""
    incorrect_fields: tuple[str, ...] = ()
    shuffle_choices: bool = False
    """Options are shuffled per problem with the protocol's ``choice_seed`` (GPQA's options
    come correct-first)."""
    package_file: str | None = None
    """A file of this package's ``data/`` folder (the smoke sets)."""
    gated: bool = False


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in [
        BenchmarkSpec(
            "math500", "math", "MATH-500 (OpenAI's 500-problem MATH test subset)",
            hub_id="HuggingFaceH4/MATH-500", revision="6e4ed1a2a79af7d8630a6b768ec859cb5af4d3be",
        ),
        BenchmarkSpec("aime24", "math", "AIME 2024 (30 problems)", hub_id="HuggingFaceH4/aime_2024", split="train"),
        BenchmarkSpec("aime25", "math", "AIME 2025 (30 problems)", hub_id="math-ai/aime25"),
        BenchmarkSpec("amc23", "math", "AMC 2023 (40 problems)", hub_id="math-ai/amc23"),
        BenchmarkSpec(
            "olympiadbench", "math", "OlympiadBench, English text-only math (675 problems)",
            hub_id="math-ai/olympiadbench", answer_fields=("final_answer", "answer"),
        ),
        BenchmarkSpec(
            "minerva", "math", "Minerva Math (272 problems)", hub_id="math-ai/minervamath",
            answer_fields=("answer", "solution"),
        ),
        BenchmarkSpec(
            "gsm8k", "math", "GSM8K test (1,319 problems)", hub_id="openai/gsm8k", hub_config="main",
            after_hashes=True,
        ),
        BenchmarkSpec(
            "gpqa-diamond", "choice", "GPQA Diamond (198 questions, 4 options, shuffled)",
            hub_id="Idavidrein/gpqa", hub_config="gpqa_diamond", split="train",
            question_fields=("Question",), id_fields=("Record ID",), correct_field="Correct Answer",
            incorrect_fields=("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"),
            shuffle_choices=True, gated=True,
        ),
        BenchmarkSpec(
            "mmlu-pro", "choice", "MMLU-Pro test (12,032 questions, up to 10 options)",
            hub_id="TIGER-Lab/MMLU-Pro", revision="3373e0b32277875b8db2aa555a333b78a08477ea",
            question_fields=("question",), id_fields=("question_id",), choice_fields=("options",),
        ),
        BenchmarkSpec(
            "smoke-math", "math", "this project's smoke set: 16 short math problems (no download)",
            question_fields=("question",), package_file="smoke_math.jsonl",
        ),
        BenchmarkSpec(
            "smoke-choice", "choice", "this project's smoke set: 6 multiple-choice questions (no download)",
            question_fields=("question",), package_file="smoke_choice.jsonl",
        ),
    ]
}  # fmt: skip

SMOKE = ("smoke-math", "smoke-choice")
MATH_SUITE = ("math500", "aime24", "aime25", "amc23", "olympiadbench", "minerva")
"""SPIRAL's math benchmarks."""
GENERAL_SUITE = ("gpqa-diamond", "mmlu-pro")
"""SPIRAL's general-reasoning benchmarks."""


@dataclass(frozen=True)
class FieldMap:
    """Field names of a local file that differ from the benchmark's (``None``: keep)."""

    question: str | None = None
    answer: str | None = None
    id: str | None = None
    choices: str | None = None

    @classmethod
    def parse(cls, text: str) -> FieldMap:
        """From ``question=problem,answer=final,...`` (CLI form)."""
        values: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not value.strip() or key.strip() not in cls.__dataclass_fields__:
                known = ", ".join(cls.__dataclass_fields__)
                raise ValueError(f"bad field mapping {item!r}: use KEY=FIELD with KEY one of {known}")
            values[key.strip()] = value.strip()
        return cls(**values)

    def apply(self, spec: BenchmarkSpec) -> BenchmarkSpec:
        changes: dict[str, Any] = {}
        if self.question:
            changes["question_fields"] = (self.question,)
        if self.answer:
            changes["answer_fields"] = (self.answer,)
        if self.id:
            changes["id_fields"] = (self.id,)
        if self.choices:
            changes.update(choice_fields=(self.choices,), kind="choice", correct_field=None)
        return replace(spec, **changes)


@dataclass
class Benchmark:
    """A benchmark's problems and where they came from (written into the results)."""

    name: str
    problems: list[Problem]
    source: dict[str, Any] = field(default_factory=dict)


def spec_for(name: str, path: str | Path | None = None) -> BenchmarkSpec:
    """The registered spec, or for a local file under a new name a generic one."""
    if name in BENCHMARKS:
        return BENCHMARKS[name]
    if path is None:
        raise DataError(f"unknown benchmark {name!r}: use one of {', '.join(BENCHMARKS)} or give a JSONL file")
    return BenchmarkSpec(name, "math", f"local file {path}")


def load_benchmark(
    name: str | BenchmarkSpec,
    path: str | Path | None = None,
    *,
    fields: FieldMap | None = None,
    limit: int | None = None,
    choice_seed: int = 0,
) -> Benchmark:
    """A benchmark's problems (by registered name, or a spec of your own): from ``path``
    (JSONL) if given, else the package's smoke file, else the Hugging Face Hub at the spec's
    revision (with ``datasets``). ``limit`` keeps the first problems."""
    spec = name if isinstance(name, BenchmarkSpec) else spec_for(name, path)
    if fields is not None:
        spec = fields.apply(spec)
    if path is not None:
        source: dict[str, Any] = {"file": str(Path(path).resolve())}
        rows = _jsonl_rows(Path(path))
    elif spec.package_file is not None:
        source = {"package_file": f"spiral_train/reasoning/data/{spec.package_file}"}
        data = resources.files("spiral_train.reasoning").joinpath("data", spec.package_file)
        rows = _jsonl_lines(data.read_text(encoding="utf-8").splitlines(), spec.package_file)
    else:
        source, rows = _hub_rows(spec)
    problems = _problems(spec, rows, limit, choice_seed, source.get("file") or source.get("package_file") or str(spec.hub_id))
    return Benchmark(spec.name, problems, source)


def _problems(
    spec: BenchmarkSpec, rows: Iterable[tuple[str, dict[str, Any]]], limit: int | None, choice_seed: int, where: str
) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for index, (place, row) in enumerate(rows):
        if limit is not None and len(problems) >= limit:
            break
        problem = _problem(spec, row, index, place, choice_seed)
        if problem.id in seen:
            raise DataError(f"{place}: problem id {problem.id!r} repeats ({seen[problem.id]})")
        seen[problem.id] = place
        problems.append(problem)
    if not problems:
        raise DataError(f"{where} holds no problems")
    return problems


def _problem(spec: BenchmarkSpec, row: Mapping[str, Any], index: int, place: str, choice_seed: int) -> Problem:
    question = _text(row, spec.question_fields, place, "question")
    id_field = next((f for f in spec.id_fields if row.get(f) is not None), None)
    problem_id = str(row[id_field]) if id_field else str(index)
    if spec.kind == "math":
        return Problem(spec.name, problem_id, question, _math_gold(spec, row, place))
    choices, answer = _choices(spec, row, place)
    if spec.shuffle_choices:
        order = list(range(len(choices)))
        random.Random(f"{choice_seed}:{spec.name}:{problem_id}").shuffle(order)
        answer = LETTERS[order.index(LETTERS.index(answer))]
        choices = tuple(choices[i] for i in order)
    return Problem(spec.name, problem_id, question, answer, choices)


def _math_gold(spec: BenchmarkSpec, row: Mapping[str, Any], place: str) -> str:
    name = _present(row, spec.answer_fields, place, "answer")
    value = row[name]
    if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) for v in value):
        text = ", ".join(str(v).strip() for v in value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        text = _number_text(value)
    elif isinstance(value, str):
        text = value
    else:
        raise DataError(f"{place}: field {name!r} must be text, a number or a list of them, got {type(value).__name__}")
    if spec.after_hashes:
        if "####" not in text:
            raise DataError(f"{place}: field {name!r} has no '#### ANSWER' line")
        text = text.rsplit("####", 1)[1]
    elif name in spec.solution_fields:
        boxed = last_boxed(text)
        if boxed is None:
            raise DataError(f"{place}: field {name!r} is a solution without a \\boxed{{}} answer")
        text = boxed
    text = text.strip()
    if not text:
        raise DataError(f"{place}: field {name!r} is empty")
    return text


def _choices(spec: BenchmarkSpec, row: Mapping[str, Any], place: str) -> tuple[tuple[str, ...], str]:
    if spec.correct_field is not None:
        correct = _text(row, (spec.correct_field,), place, "correct option")
        wrong = [_text(row, (f,), place, "incorrect option") for f in spec.incorrect_fields]
        return (correct, *wrong), "A"
    name = _present(row, spec.choice_fields, place, "choices")
    options = row[name]
    if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
        raise DataError(f"{place}: field {name!r} must be a non-empty list of texts")
    if len(options) > len(LETTERS):
        raise DataError(f"{place}: field {name!r} has {len(options)} options, at most {len(LETTERS)} are supported")
    answer_name = _present(row, spec.answer_fields + ("answer_index",), place, "answer")
    value = row[answer_name]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(options):
        letter = LETTERS[value]
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip() in LETTERS[: len(options)]:
        letter = value.strip()
    else:
        raise DataError(
            f"{place}: field {answer_name!r} must be a letter A-{LETTERS[len(options) - 1]} "
            f"or an index 0-{len(options) - 1}, got {value!r}"
        )
    return tuple(o.strip() for o in options), letter


def _present(row: Mapping[str, Any], names: tuple[str, ...], place: str, what: str) -> str:
    for name in names:
        if row.get(name) is not None:
            return name
    tried = ", ".join(repr(n) for n in names)
    present = ", ".join(repr(k) for k in list(row)[:12])
    raise DataError(f"{place}: no {what} field (tried {tried}); the row has {present}")


def _text(row: Mapping[str, Any], names: tuple[str, ...], place: str, what: str) -> str:
    name = _present(row, names, place, what)
    value = row[name]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{place}: field {name!r} must be non-empty text, got {type(value).__name__}")
    return value.strip()


def _number_text(value: float) -> str:
    """``27.0`` -> ``27`` (AMC23 stores integers as floats)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a JSONL file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None
    return _jsonl_lines(text.splitlines(), str(path))


def _jsonl_lines(lines: list[str], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        place = f"{where} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{place}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise DataError(f"{place}: JSON nested too deeply") from None
        if not isinstance(row, dict):
            raise DataError(f"{place}: expected a JSON object, got {type(row).__name__}")
        yield place, row


def _hub_rows(spec: BenchmarkSpec) -> tuple[dict[str, Any], Iterator[tuple[str, dict[str, Any]]]]:
    """Rows from the Hub with ``datasets``; the commit loaded goes into the source record."""
    if spec.hub_id is None:
        raise DataError(f"benchmark {spec.name!r} has no Hub source: give a JSONL file")
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"loading {spec.name} from the Hugging Face Hub needs `datasets` (pip install 'spiral[eval]'), "
            "or give a local JSONL file"
        ) from None
    try:
        table = datasets.load_dataset(spec.hub_id, spec.hub_config, split=spec.split, revision=spec.revision)
    except Exception as exc:  # noqa: BLE001 - the Hub's many failure types become one clear error
        gated = " (a gated set: accept its terms on the Hub and log in with `hf auth login`)" if spec.gated else ""
        raise DataError(f"cannot load {spec.hub_id} from the Hub{gated}: {type(exc).__name__}: {exc}") from None
    source = {
        "hub_id": spec.hub_id,
        "config": spec.hub_config,
        "split": spec.split,
        "revision": spec.revision or _resolved_revision(spec),
        "pinned": spec.revision is not None,
    }
    where = f"{spec.hub_id} ({spec.split})"
    return source, ((f"{where} row {i}", dict(row)) for i, row in enumerate(table))


def _resolved_revision(spec: BenchmarkSpec) -> str | None:
    """The commit of an unpinned set's default branch, as the Hub reports it now."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(spec.hub_id).sha
    except Exception:  # noqa: BLE001 - offline or gated: the source then records no commit
        return None
