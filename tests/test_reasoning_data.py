"""Benchmark loading: the smoke set, local JSONL files (gold answers in each data set's own
layout, field maps, errors that name file, line and field) and the Hub path of `datasets`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from spiral_train.reasoning.data import BENCHMARKS, DataError, FieldMap, load_benchmark


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_the_smoke_sets_ship_as_package_data() -> None:
    math = load_benchmark("smoke-math")
    choice = load_benchmark("smoke-choice")
    assert len(math.problems) == 16 and all(p.kind == "math" and p.answer for p in math.problems)
    assert len(choice.problems) == 6 and all(p.kind == "choice" for p in choice.problems)
    assert all(p.answer in "ABCDEFGHIJ"[: len(p.choices)] for p in choice.problems)
    assert math.source == {"package_file": "spiral_train/reasoning/data/smoke_math.jsonl"}
    assert len({p.id for p in math.problems}) == 16


@pytest.mark.parametrize(
    ("name", "row", "gold"),
    [
        ("math500", {"problem": "p", "answer": "\\frac{1}{2}", "unique_id": "test/a/1.json"}, "\\frac{1}{2}"),
        ("amc23", {"id": 0, "question": "q", "answer": 27.0}, "27"),
        ("gsm8k", {"question": "q", "answer": "3 + 4 = 7\n#### 1,200"}, "1,200"),
        ("minerva", {"problem": "p", "solution": "so $s=\\boxed{1.6}$ cm"}, "1.6"),
        ("minerva", {"question": "q", "answer": "4.5e33"}, "4.5e33"),
        ("olympiadbench", {"id": 7, "question": "q", "final_answer": ["$(3,2),(-3,2)$"]}, "$(3,2),(-3,2)$"),
        ("olympiadbench", {"id": 7, "question": "q", "final_answer": ["1", "2"]}, "1, 2"),
        ("aime24", {"id": 60, "problem": "p", "answer": "204"}, "204"),
    ],
)
def test_gold_answers_come_from_each_data_set_s_own_layout(tmp_path: Path, name: str, row: dict, gold: str) -> None:
    problem = load_benchmark(name, write_jsonl(tmp_path / "set.jsonl", [row])).problems[0]
    assert problem.answer == gold
    assert problem.question in ("p", "q") and problem.benchmark == name


def test_ids_come_from_the_data_or_the_row_number(tmp_path: Path) -> None:
    problems = load_benchmark("mine", write_jsonl(tmp_path / "a.jsonl", [{"question": "q1", "answer": "1"}, {"question": "q2", "answer": "2"}])).problems
    assert [p.id for p in problems] == ["0", "1"]
    problems = load_benchmark("math500", write_jsonl(tmp_path / "b.jsonl", [{"problem": "q", "answer": "1", "unique_id": "u/7"}])).problems
    assert problems[0].id == "u/7"


def test_field_maps_rename_the_fields_of_a_local_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mine.jsonl", [{"key": "k1", "text": "What is 1+1?", "final": "2"}])
    problem = load_benchmark("mine", path, fields=FieldMap.parse("question=text,answer=final,id=key")).problems[0]
    assert (problem.id, problem.question, problem.answer) == ("k1", "What is 1+1?", "2")
    with pytest.raises(ValueError, match="bad field mapping"):
        FieldMap.parse("question")
    with pytest.raises(ValueError, match="bad field mapping"):
        FieldMap.parse("colour=red")


def test_a_local_multiple_choice_file_takes_letters_or_indices(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mc.jsonl", [
        {"id": "a", "question": "q", "options": ["x", "y", "z"], "answer": "B"},
        {"id": "b", "question": "q", "options": ["x", "y", "z"], "answer": 2},
    ])  # fmt: skip
    problems = load_benchmark("quiz", path, fields=FieldMap(choices="options")).problems
    assert [(p.answer, p.choices) for p in problems] == [("B", ("x", "y", "z")), ("C", ("x", "y", "z"))]
    mmlu = load_benchmark("mmlu-pro", write_jsonl(tmp_path / "m.jsonl", [{"question_id": 70, "question": "q", "options": list("abcdefghij"), "answer": "J", "answer_index": 9}]))
    assert mmlu.problems[0].answer == "J" and len(mmlu.problems[0].choices) == 10


def test_gpqa_options_are_shuffled_by_the_seed_and_the_answer_follows(tmp_path: Path) -> None:
    rows = [
        {"Record ID": f"r{i}", "Question": f"q{i}", "Correct Answer": "right",
         "Incorrect Answer 1": "w1", "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3"}
        for i in range(40)
    ]  # fmt: skip
    path = write_jsonl(tmp_path / "gpqa.jsonl", rows)
    first = load_benchmark("gpqa-diamond", path, choice_seed=0).problems
    again = load_benchmark("gpqa-diamond", path, choice_seed=0).problems
    other = load_benchmark("gpqa-diamond", path, choice_seed=1).problems
    assert first == again and first != other
    for problem in first + other:
        assert problem.choices["ABCD".index(problem.answer)] == "right"
        assert sorted(problem.choices) == ["right", "w1", "w2", "w3"]
    assert len({p.answer for p in first}) == 4  # the correct option is not always first


def test_limit_keeps_the_first_problems(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"question": f"q{i}", "answer": str(i)} for i in range(10)])
    assert [p.answer for p in load_benchmark("mine", path, limit=3).problems] == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "q", "answer": "1"}\n{"question": "q2", "answer": \n', r"line 2: not valid JSON"),
        ('["q", "1"]\n', r"line 1: expected a JSON object, got list"),
        ('{"question": "q"}\n', r"line 1: no answer field \(tried 'answer'\); the row has 'question'"),
        ('{"prompt": "q", "answer": "1"}\n', r"line 1: no question field \(tried 'problem', 'question'\)"),
        ('{"question": ["q"], "answer": "1"}\n', r"line 1: field 'question' must be non-empty text, got list"),
        ('{"question": "q", "answer": {"v": 1}}\n', r"line 1: field 'answer' must be text, a number or a list"),
        ('{"question": "q", "answer": "  "}\n', r"line 1: field 'answer' is empty"),
        ('{"id": 1, "question": "q", "answer": "1"}\n\n{"id": 1, "question": "r", "answer": "2"}\n',
         r"line 3: problem id '1' repeats \(.* line 1\)"),
        ("\n\n", r"holds no problems"),
        ("[" * 100_000 + "\n", r"line 1: (JSON nested too deeply|not valid JSON)"),
    ],
)
def test_a_malformed_file_names_file_line_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as error:
        load_benchmark("mine", path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("name", "row", "message"),
    [
        ("gsm8k", {"question": "q", "answer": "no hashes"}, r"line 1: field 'answer' has no '#### ANSWER' line"),
        ("minerva", {"problem": "p", "solution": "no box"}, r"line 1: field 'solution' is a solution without a \\boxed\{\}"),
        ("mmlu-pro", {"question": "q", "options": ["a", "b"], "answer": "C"}, r"line 1: field 'answer' must be a letter A-B or an index 0-1, got 'C'"),
        ("mmlu-pro", {"question": "q", "options": ["a", "b"], "answer": "AB"}, r"must be a letter A-B"),
        ("mmlu-pro", {"question": "q", "options": [], "answer": "A"}, r"field 'options' must be a non-empty list of texts"),
        ("gpqa-diamond", {"Question": "q", "Correct Answer": "x"}, r"no incorrect option field \(tried 'Incorrect Answer 1'\)"),
    ],
)
def test_data_set_specific_errors_name_the_field(tmp_path: Path, name: str, row: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_benchmark(name, write_jsonl(tmp_path / "bad.jsonl", [row]))


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_benchmark("mine", tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="is a directory"):
        load_benchmark("mine", tmp_path)
    binary = tmp_path / "latin1.jsonl"
    binary.write_bytes(b'{"question": "caf\xe9", "answer": "1"}\n')
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_benchmark("mine", binary)
    with pytest.raises(DataError, match="unknown benchmark 'nope'"):
        load_benchmark("nope")


def test_the_hub_path_loads_with_datasets_and_records_its_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub loader through `datasets` itself, on a local dataset folder (no network)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "gsm8k-like"
    (folder / "data").mkdir(parents=True)
    write_jsonl(folder / "data" / "test.jsonl", [{"question": "1+1?", "answer": "so #### 2"}, {"question": "2+3?", "answer": "#### 5"}])
    spec = replace(BENCHMARKS["gsm8k"], hub_id=str(folder), hub_config=None, revision=None)
    benchmark = load_benchmark(spec)
    assert [p.answer for p in benchmark.problems] == ["2", "5"]
    assert benchmark.source["hub_id"] == str(folder) and benchmark.source["pinned"] is False
    broken = replace(spec, hub_id=str(tmp_path / "nowhere"), gated=True)
    with pytest.raises(DataError, match=r"cannot load .*nowhere from the Hub \(a gated set"):
        load_benchmark(broken)


def test_every_registered_hub_set_names_its_source() -> None:
    for spec in BENCHMARKS.values():
        assert spec.hub_id or spec.package_file, spec.name
        assert spec.revision is None or len(spec.revision) == 40
