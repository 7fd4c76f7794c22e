"""Run an evaluation on any backend of the library: prompts, batched generation, grading,
per-problem records, resume, results.

:func:`evaluate_reasoning` is the Python API (the trainer calls it on its live generator);
``spiral-eval`` wraps it. With an output directory a run writes::

    settings.json            the protocol, template, model and data sources (checked on resume)
    records/<benchmark>.jsonl one line per problem: prompt, every response, extracted answers,
                             correct flags, finish reasons, lengths, or the generation error
    results.json, results.csv

Records are appended after each batch, so a killed run continues from them with
``resume=True``: problems with a record are kept, problems whose generation failed (an error
record: the server, not the model) are generated again, never graded wrong.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from spiral_agents.llm.backend import Backend, Generation
from spiral_agents.llm.prompts import PromptEncoder, PromptTemplate
from spiral_train.reasoning.data import LETTERS, Benchmark, DataError, Problem
from spiral_train.reasoning.grading import extract_choice, grade_math
from spiral_train.reasoning.protocol import (
    Protocol,
    prompt_messages,
    render_prompt,
    template_settings,
)
from spiral_train.reasoning.results import EvalResults, summarize, write_atomic

DEFAULT_BATCH_SIZE = 64
"""Problems per generation call (each with ``protocol.samples`` samples)."""


class SettingsMismatch(ValueError):
    """``resume`` was asked for a directory whose run used other settings."""


def evaluate_reasoning(
    backend: Backend,
    template: PromptTemplate,
    problems: Sequence[Problem] | Sequence[Benchmark],
    protocol: Protocol,
    *,
    output_dir: str | Path | None = None,
    resume: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    run_info: Mapping[str, Any] | None = None,
) -> EvalResults:
    """Evaluate ``backend`` on ``problems`` (or whole :class:`Benchmark` objects, whose data
    sources then go into the settings) with ``protocol``; prompts are wrapped as ``template``
    wraps a game observation.

    ``output_dir`` keeps settings, records and results there (``None``: in memory only);
    ``resume`` continues a run in ``output_dir`` made with the same settings. ``run_info``
    (e.g. the model id) is written into the settings.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    problems, sources = _flatten(problems)
    settings = {
        "protocol": protocol.to_dict(),
        "template": template_settings(template),
        "benchmarks": {name: {"problems": count, "source": sources.get(name)} for name, count in _counts(problems).items()},
        **dict(run_info or {}),
    }
    directory = Path(output_dir) if output_dir is not None else None
    records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in settings["benchmarks"]}
    if directory is not None:
        _start(directory, settings, resume)
        for name in records:
            records[name] = read_records(directory / "records" / f"{name}.jsonl")
    todo = [p for p in problems if records[p.benchmark].get(p.id, {"error": "missing"}).get("error") is not None]

    started = time.perf_counter()
    generation_s = grading_s = 0.0
    bar = _progress(len(problems), len(problems) - len(todo), progress)
    encoder = PromptEncoder(backend.tokenizer, cache_size=0) if getattr(backend, "tokenizer", None) is not None else None
    sampling = protocol.sampling()
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            shown, prompts = _prompts(batch, protocol, template, backend, encoder)
            seeds = [problem_seed(protocol.seed, p) for p in batch]
            tick = time.perf_counter()
            outputs = _generate(backend, prompts, sampling, seeds)
            tock = time.perf_counter()
            new = [_record(p, text, seed, gens, protocol) for p, text, seed, gens in zip(batch, shown, seeds, outputs)]
            grading_s += time.perf_counter() - tock
            generation_s += tock - tick
            for record in new:
                records[record["benchmark"]][record["id"]] = record
            if directory is not None:
                _append(directory, new)
            bar(len(batch))
    finally:
        bar(None)
    wall_s = time.perf_counter() - started
    ordered = {name: [records[name][p.id] for p in problems if p.benchmark == name] for name in records}
    timing = {"wall_s": wall_s, "generation_s": generation_s, "grading_s": grading_s, "problems_run": len(todo)}
    results = summarize(ordered, protocol.samples, settings, timing)
    if directory is not None:
        results.write(directory)
    return results


def problem_seed(seed: int, problem: Problem) -> int:
    """A problem's sampling seed: the same for the same protocol seed, benchmark and id (so a
    resumed run samples what the uninterrupted one would have)."""
    return zlib.crc32(f"{seed}:{problem.benchmark}:{problem.id}".encode()) & 0x7FFFFFFF


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records by problem id (a later line wins: a retried problem's new record). A last line
    cut short by a kill is dropped; any other unreadable line is an error naming it."""
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    records: dict[str, dict[str, Any]] = {}
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise ValueError("not a problem record")  # noqa: TRY004 - bad file content
        except ValueError as exc:
            if number == last:
                break  # the write a kill interrupted
            raise DataError(f"{path} line {number + 1}: unreadable record ({exc})") from None
        records[record["id"]] = record
    return records


# --- steps -------------------------------------------------------------------------------------


def _flatten(items: Sequence[Problem] | Sequence[Benchmark]) -> tuple[list[Problem], dict[str, Any]]:
    problems: list[Problem] = []
    sources: dict[str, Any] = {}
    for item in items:
        if isinstance(item, Benchmark):
            problems.extend(item.problems)
            sources[item.name] = item.source
        elif isinstance(item, Problem):
            problems.append(item)
        else:
            raise TypeError(f"expected Problem or Benchmark items, got {type(item).__name__}")
    if not problems:
        raise ValueError("no problems to evaluate")
    seen: set[tuple[str, str]] = set()
    for problem in problems:
        key = (problem.benchmark, problem.id)
        if key in seen:
            raise ValueError(f"problem {problem.id!r} of {problem.benchmark} is given twice")
        seen.add(key)
    return problems, sources


def _counts(problems: Iterable[Problem]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for problem in problems:
        counts[problem.benchmark] = counts.get(problem.benchmark, 0) + 1
    return counts


def _start(directory: Path, settings: dict[str, Any], resume: bool) -> None:
    """Write the settings of a new run, or check them against those of the run resumed."""
    path = directory / "settings.json"
    if path.exists():
        if not resume:
            raise SettingsMismatch(f"{directory} already holds a run: resume it, or use another directory")
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SettingsMismatch(f"{path}: unreadable settings ({exc})") from None
        current = json.loads(json.dumps(settings))
        differing = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        if differing:
            raise SettingsMismatch(f"{directory} holds a run with other settings ({', '.join(differing)}): use another directory")
        return
    if (directory / "records").exists() and any((directory / "records").iterdir()):
        raise SettingsMismatch(f"{directory} holds records but no settings.json: use another directory")
    write_atomic(path, json.dumps(settings, indent=1) + "\n")


def _prompts(
    batch: list[Problem], protocol: Protocol, template: PromptTemplate, backend: Backend, encoder: PromptEncoder | None
) -> tuple[list[Any], list[Any]]:
    """What each record shows as the prompt (text or messages) and what the backend gets."""
    messages = [protocol.user_message(p) for p in batch]
    if encoder is None:
        chats = [prompt_messages(template, m) for m in messages]
        return chats, chats
    texts = [render_prompt(template, m, backend.tokenizer) for m in messages]
    return texts, encoder(texts)


def _generate(backend: Backend, prompts: list[Any], sampling: Any, seeds: list[int]) -> list[list[Generation]]:
    """The backend's generations; a failure of the whole call is an error for every prompt."""
    try:
        outputs = backend.generate(prompts, sampling, seeds)
    except Exception as exc:  # noqa: BLE001 - a failed call becomes error records, retried on resume
        message = f"generate failed: {type(exc).__name__}: {exc}"
        return [[Generation(text="", finish_reason="error", error=message)] for _ in prompts]
    if not isinstance(outputs, list) or len(outputs) != len(prompts):
        message = f"backend returned {len(outputs) if isinstance(outputs, list) else type(outputs).__name__} results for {len(prompts)} prompts"
        return [[Generation(text="", finish_reason="error", error=message)] for _ in prompts]
    return outputs


def _record(problem: Problem, prompt: Any, seed: int, generations: list[Generation], protocol: Protocol) -> dict[str, Any]:
    """The problem's record: every response graded, or the error that left it ungraded."""
    record: dict[str, Any] = {
        "benchmark": problem.benchmark,
        "id": problem.id,
        "question": problem.question,
        "gold": problem.answer,
        **({"choices": list(problem.choices)} if problem.choices else {}),
        "prompt": prompt,
        "seed": seed,
        "error": None,
    }
    failed = [g for g in generations if g.finish_reason == "error"]
    if failed or len(generations) != protocol.samples:
        record["error"] = (failed[0].error or "generation failed") if failed else (
            f"backend returned {len(generations)} of {protocol.samples} samples"
        )
        return record
    grades = [_grade(problem, g.text, protocol) for g in generations]
    record.update(
        responses=[g.text for g in generations],
        finish_reasons=[g.finish_reason for g in generations],
        response_tokens=[len(g.token_ids) if g.token_ids else None for g in generations],
        extracted=[extracted for extracted, _, _ in grades],
        correct=[correct for _, correct, _ in grades],
        timed_out=[timed_out for _, _, timed_out in grades],
    )
    return record


def _grade(problem: Problem, text: str, protocol: Protocol) -> tuple[str | None, bool, bool]:
    """(extracted answer, correct, symbolic check timed out) for one response."""
    if problem.kind == "choice":
        letter = extract_choice(text, LETTERS[: len(problem.choices)])
        return letter, letter == problem.answer, False
    result = grade_math(text, problem.answer, timeout_s=protocol.grade_timeout_s)
    return result.extracted, result.correct, result.timed_out


def _append(directory: Path, records: list[dict[str, Any]]) -> None:
    """Append records to their benchmark's file, flushed (a kill loses at most this batch)."""
    folder = directory / "records"
    folder.mkdir(parents=True, exist_ok=True)
    by_benchmark: dict[str, list[str]] = {}
    for record in records:
        by_benchmark.setdefault(record["benchmark"], []).append(json.dumps(record, ensure_ascii=False))
    for name, lines in by_benchmark.items():
        with open(folder / f"{name}.jsonl", "a", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
            out.flush()


def _progress(total: int, done: int, show: bool) -> Callable[[int | None], None]:
    """A progress bar over problems; ``bar(n)`` advances it, ``bar(None)`` closes it."""
    if not show:
        return lambda n: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=done, desc="problems", unit="problem")

    def update(n: int | None) -> None:
        if n is None:
            bar.close()
        else:
            bar.update(n)

    return update
