"""Evaluation runs: the pinned protocol, end to end on transformers and a real vLLM server,
failed requests as error records retried on resume, a killed run resumed, comparison."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from spiral_agents.llm.openai_backend import OpenAICompatibleBackend
from spiral_agents.llm.prompts import BaseModelTemplate, ChatTemplate, CustomTemplate
from spiral_train.reasoning.cli import main
from spiral_train.reasoning.data import SMOKE, DataError, load_benchmark
from spiral_train.reasoning.evaluate import evaluate_reasoning, read_records
from spiral_train.reasoning.protocol import PRESETS, Protocol, render_prompt
from spiral_train.reasoning.results import compare, load_results

SMOKE_PROBLEMS = [p for name in SMOKE for p in load_benchmark(name).problems]
FAST = PRESETS["spiral"].with_overrides(max_tokens=16, samples=2)
from tests.helpers import serving

# --- the protocol ------------------------------------------------------------------------------


def test_the_spiral_preset_pins_spiral_s_settings_and_prompt() -> None:
    spiral = PRESETS["spiral"]
    assert (spiral.temperature, spiral.top_p, spiral.samples, spiral.max_tokens) == (0.6, 0.95, 4, 8192)
    greedy = PRESETS["greedy"]
    assert (greedy.temperature, greedy.samples) == (0.0, 1) and greedy.math_prompt == spiral.math_prompt
    problem = load_benchmark("smoke-math").problems[0]
    assert render_prompt(BaseModelTemplate(), spiral.user_message(problem), None) == (
        "<|im_start|>user\nPlease reason step by step, and put your final answer within \\boxed{}.\n"
        "Question: What is 7 + 5?<|im_end|>\n<|im_start|>assistant\n"
    )
    choice = load_benchmark("smoke-choice").problems[0]
    message = spiral.user_message(choice)
    assert "where LETTER is one of ABCD." in message
    assert message.endswith("Which planet is closest to the Sun?\n\nA) Venus\nB) Mercury\nC) Earth\nD) Mars")
    assert render_prompt(CustomTemplate("Q: {observation}\nA:"), "hi", None) == "Q: hi\nA:"


def test_protocol_overrides_are_marked_and_checked() -> None:
    changed = PRESETS["spiral"].with_overrides(samples=8, max_tokens=None)
    assert changed.samples == 8 and changed.name == "spiral+overrides"
    assert PRESETS["spiral"].with_overrides(samples=4) is PRESETS["spiral"]
    with pytest.raises(ValueError, match="greedy decoding"):
        PRESETS["greedy"].with_overrides(samples=4)
    with pytest.raises(ValueError, match="unknown protocol fields: colour"):
        PRESETS["spiral"].with_overrides(colour="red")
    with pytest.raises(ValueError, match="top_p"):
        Protocol(top_p=0)
    with pytest.raises(ValueError, match=r"\{question\}"):
        Protocol(math_prompt="no field")


def test_a_chat_template_renders_through_the_tokenizer(tiny_qwen3: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    text = render_prompt(ChatTemplate(enable_thinking=False), "What is 1+1?", tokenizer)
    assert text == "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


# --- end to end on transformers ----------------------------------------------------------------


def test_end_to_end_on_transformers_writes_records_and_results(tiny_qwen3: Path, tmp_path: Path) -> None:
    from spiral_agents.llm.hf_backend import TransformersBackend

    backend = TransformersBackend(str(tiny_qwen3))
    results = evaluate_reasoning(backend, BaseModelTemplate(), SMOKE_PROBLEMS, FAST, output_dir=tmp_path, run_info={"model": "tiny"})
    assert results.complete and set(results.benchmarks) == set(SMOKE)
    math = results.benchmarks["smoke-math"]
    assert (math.problems, math.graded, math.samples, math.errors) == (16, 16, 2, 0)
    assert 0 <= math.accuracy <= 1 and math.accuracy_ci95[0] <= math.accuracy <= math.accuracy_ci95[1]
    assert set(math.pass_at_k) == {"1", "2"} and 1 <= math.mean_response_tokens <= 16
    assert 0 <= math.cut_off_share <= 1 and 0 <= math.no_answer_share <= 1
    records = read_records(tmp_path / "records" / "smoke-math.jsonl")
    record = records["m01"]
    assert record["prompt"].startswith("<|im_start|>user\nPlease reason step by step")
    assert len(record["responses"]) == len(record["correct"]) == len(record["extracted"]) == 2
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["settings"]["protocol"]["samples"] == 2 and saved["settings"]["model"] == "tiny"
    assert saved["settings"]["template"] == {"name": "spiral-base"}
    assert saved["settings"]["benchmarks"]["smoke-math"]["problems"] == 16
    assert (tmp_path / "results.csv").read_text().splitlines()[0].startswith("benchmark,problems,samples")
    assert "smoke-math" in results.table() and "average" in results.table()
    assert {"reasoning/smoke-math/accuracy", "reasoning/average/accuracy"} <= set(results.metrics())
    again = evaluate_reasoning(backend, BaseModelTemplate(), SMOKE_PROBLEMS, FAST)
    assert again.benchmarks["smoke-math"].scores == math.scores  # seeded per problem


def test_the_trainer_s_live_module_can_be_evaluated_in_memory(tiny_qwen3: Path) -> None:
    """What the trainer's ``eval.reasoning`` hook does: its generator, its template, a subset."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spiral_agents.llm.hf_backend import TransformersBackend

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3)
    backend = TransformersBackend(model, tokenizer=AutoTokenizer.from_pretrained(tiny_qwen3))
    problems = load_benchmark("smoke-math", limit=4).problems
    results = evaluate_reasoning(backend, BaseModelTemplate(), problems, PRESETS["greedy"].with_overrides(max_tokens=8))
    metrics = results.metrics()
    assert metrics["reasoning/smoke-math/errors"] == 0.0
    assert set(metrics) >= {"reasoning/smoke-math/accuracy", "reasoning/smoke-math/cut_off_share"}
    assert results.timing["problems_run"] == 4 and results.timing["generation_s"] <= results.timing["wall_s"]


# --- a hostile OpenAI-compatible server: answers, failures, retries -----------------------------


class AnswerServer(ThreadingHTTPServer):
    """Answers each smoke question with its gold answer; questions in ``failing`` get HTTP 500."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), AnswerHandler)
        self.answers = {p.question: (p.kind, p.answer) for p in SMOKE_PROBLEMS}
        self.failing: set[str] = set()
        self.requests: Counter[str] = Counter()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class AnswerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: AnswerServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        content = body["messages"][-1]["content"]
        question = next(q for q in self.server.answers if q in content)
        with self.server.lock:
            self.server.requests[question] += 1
        if question in self.server.failing:
            self._send(500, {"error": "overloaded"})
            return
        kind, answer = self.server.answers[question]
        text = f"Thinking...\nAnswer: {answer}" if kind == "choice" else f"Step by step... so \\boxed{{{answer}}}"
        choices = [{"index": i, "message": {"content": text}, "finish_reason": "stop"} for i in range(body["n"])]
        self._send(200, {"choices": choices})

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def answer_server() -> Iterator[AnswerServer]:
    yield from serving(AnswerServer())


def cli_run(server: AnswerServer, output: Path, *extra: str) -> int:
    return main([
        "run", "--backend", "openai", "--base-url", server.url, "--model", "served", "--benchmarks", "smoke",
        "--output", str(output), "--quiet", "--samples", "2", "--template", "chat", "--batch-size", "5",
        "--retries", "0", *extra,
    ])  # fmt: skip


def test_failed_requests_are_error_records_retried_on_resume(answer_server: AnswerServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failing = {SMOKE_PROBLEMS[1].question, SMOKE_PROBLEMS[-1].question}
    answer_server.failing = set(failing)
    output = tmp_path / "run"
    assert cli_run(answer_server, output, "--request-timeout", "5") == 1
    assert "2 problem(s) could not be generated" in capsys.readouterr().err
    results = load_results(output)
    assert results["complete"] is False
    math, choice = results["benchmarks"]["smoke-math"], results["benchmarks"]["smoke-choice"]
    assert (math["errors"], choice["errors"]) == (1, 1)
    assert math["accuracy"] == 1.0 and choice["accuracy"] == 1.0  # graded ones only: errors are not wrong
    error_record = read_records(output / "records" / "smoke-math.jsonl")[SMOKE_PROBLEMS[1].id]
    assert "HTTP 500" in error_record["error"] and "correct" not in error_record

    answer_server.failing.clear()
    before = Counter(answer_server.requests)
    assert cli_run(answer_server, output, "--request-timeout", "5", "--resume") == 0
    retried = {q for q in answer_server.requests if answer_server.requests[q] > before[q]}
    assert retried == failing  # only the failed problems were asked again
    results = load_results(output)
    assert results["complete"] is True and results["average"]["accuracy"] == 1.0
    assert results["benchmarks"]["smoke-math"]["scores"][SMOKE_PROBLEMS[1].id] == 1.0


def test_resume_refuses_other_settings_and_a_run_directory_is_not_reused(answer_server: AnswerServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "run"
    assert cli_run(answer_server, output) == 0
    assert cli_run(answer_server, output) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert cli_run(answer_server, output, "--resume", "--max-tokens", "99") == 2
    assert "other settings (protocol)" in capsys.readouterr().err
    assert cli_run(answer_server, output, "--resume") == 0  # same settings: nothing left to do


def test_a_record_cut_short_by_a_kill_is_regenerated_and_a_corrupt_one_is_an_error(answer_server: AnswerServer, tmp_path: Path) -> None:
    output = tmp_path / "run"
    assert cli_run(answer_server, output) == 0
    path = output / "records" / "smoke-choice.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # killed mid-write
    before = sum(answer_server.requests.values())
    assert cli_run(answer_server, output, "--resume") == 0
    assert sum(answer_server.requests.values()) == before + 1
    assert load_results(output)["benchmarks"]["smoke-choice"]["graded"] == 6
    path.write_text("not json\n" + path.read_text())
    with pytest.raises(DataError, match=r"smoke-choice.jsonl line 1: unreadable record"):
        read_records(path)


def test_compare_pairs_problems_and_bootstraps_the_difference(answer_server: AnswerServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    assert cli_run(answer_server, good) == 0
    assert cli_run(answer_server, bad, "--math-prompt", "Reply with nothing. {question}") == 0
    results = load_results(bad / "results.json")
    for problem_id in list(results["benchmarks"]["smoke-math"]["scores"])[:12]:
        results["benchmarks"]["smoke-math"]["scores"][problem_id] = 0.0  # B: 12 of 16 now wrong
    (bad / "results.json").write_text(json.dumps(results))
    (comparison,) = [c for c in compare(load_results(good), load_results(bad)) if c.benchmark == "smoke-math"]
    assert comparison.paired == 16 and comparison.difference == pytest.approx(-0.75)
    assert comparison.ci95[1] < 0 and comparison.beyond_noise
    capsys.readouterr()
    assert main(["compare", str(good), str(bad)]) == 0
    table = capsys.readouterr().out
    assert re.search(r"smoke-math\s+16\s+100\.0\s+25\.0\s+-75\.0\s+\[-\d+\.\d, -\d+\.\d\]\s+yes", table), table
    assert re.search(r"smoke-choice\s+6\s+100\.0\s+100\.0\s+\+0\.0\s+\[\+0\.0, \+0\.0\]\s+no", table), table
    assert main(["compare", str(good), str(tmp_path / "nothing")]) == 2
    assert "no such results file" in capsys.readouterr().err


# --- bad command lines -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--benchmarks", "nope"], "unknown benchmark 'nope'"),
        (["--benchmarks", "math500", "--data", "math500=/nonexistent/m.jsonl"], "/nonexistent/m.jsonl: no such file"),
        (["--benchmarks", "smoke", "--data", "math500=x.jsonl"], "'math500' is given data or fields but is not in --benchmarks"),
        (["--benchmarks", "smoke", "--data", "smoke-math"], "expected NAME=PATH"),
        (["--benchmarks", "smoke", "--preset", "greedy", "--samples", "4"], "greedy decoding"),
        (["--benchmarks", "smoke", "--fields", "smoke-math:colour=red"], "--fields: bad field mapping"),
        (["--benchmarks", "smoke", "--limit", "0"], "--limit must be at least 1"),
        (["--benchmarks", "smoke", "--backend", "openai"], "needs --base-url"),
        (["--benchmarks", "smoke", "--model", "/nonexistent/model"], "cannot load"),
        (["--benchmarks", "smoke", "--template", "fancy"], "--template: unknown template"),
    ],
)
def test_bad_command_lines_are_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    argv = ["run", "--output", str(tmp_path / "out"), "--quiet", *args]
    if "--model" not in argv:
        argv += ["--model", "/nonexistent/model"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_list_names_benchmarks_suites_and_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "math500" in out and "HuggingFaceH4/MATH-500@6e4ed1a2a79a" in out and "spiral   temperature 0.6" in out


# --- slow end-to-end checks ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_results(tiny_qwen3: Path, tmp_path: Path) -> None:
    """Kill a CLI run (one problem per generation call) part way, resume it, and get what one
    uninterrupted run in one call gives: the same samples (seeded per problem), the same scores."""
    from spiral_agents.llm.hf_backend import TransformersBackend

    protocol = PRESETS["spiral"].with_overrides(samples=2, max_tokens=24)
    uninterrupted = evaluate_reasoning(
        TransformersBackend(str(tiny_qwen3)), BaseModelTemplate(), load_benchmark("smoke-math").problems,
        protocol, output_dir=tmp_path / "whole", run_info={"model": str(tiny_qwen3), "backend": "transformers", "limit": None},
    )  # fmt: skip
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "spiral_train.reasoning.cli", "run", "--model", str(tiny_qwen3),
               "--benchmarks", "smoke-math", "--output", str(killed), "--quiet", "--samples", "2",
               "--max-tokens", "24", "--batch-size", "1"]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = killed / "records" / "smoke-math.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if records.exists() and records.read_text().count("\n") >= 2:
            break
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=30)
    done = len(read_records(records))
    assert 2 <= done < 16, "the run was not killed part way"
    assert not (killed / "results.json").exists()
    subprocess.run([*command, "--resume"], check=True, env=env, capture_output=True, timeout=600)
    resumed = load_results(killed)
    assert resumed["benchmarks"]["smoke-math"]["scores"] == uninterrupted.benchmarks["smoke-math"].scores
    assert resumed["timing"]["problems_run"] == 16 - done
    first = read_records(tmp_path / "whole" / "records" / "smoke-math.jsonl")
    second = read_records(records)
    assert all(first[i]["responses"] == second[i]["responses"] for i in first)


@pytest.mark.slow
def test_end_to_end_through_a_real_vllm_server(vllm_server: str, tiny_qwen3: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    for api, template in [("completions", BaseModelTemplate()), ("chat", ChatTemplate())]:
        backend = OpenAICompatibleBackend(vllm_server, str(tiny_qwen3), api=api, tokenizer=tokenizer, timeout=120)
        results = evaluate_reasoning(backend, template, SMOKE_PROBLEMS, FAST, output_dir=tmp_path / api)
        assert results.complete, api
        math = results.benchmarks["smoke-math"]
        assert math.graded == 16 and math.mean_response_tokens is not None and math.mean_response_tokens <= 16
        record = read_records(tmp_path / api / "records" / "smoke-math.jsonl")["m01"]
        assert len(record["responses"]) == 2 and record["error"] is None
        if api == "chat":
            assert record["prompt"] == [{"role": "user", "content": PRESETS["spiral"].user_message(SMOKE_PROBLEMS[0])}]


@pytest.mark.slow
def test_end_to_end_on_in_process_vllm(tiny_qwen3: Path, tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    from spiral_agents.llm.vllm_backend import VLLMBackend

    backend = VLLMBackend(tiny_qwen3, max_model_len=1024)
    first = evaluate_reasoning(backend, BaseModelTemplate(), SMOKE_PROBLEMS, FAST, output_dir=tmp_path / "first")
    evaluate_reasoning(backend, BaseModelTemplate(), SMOKE_PROBLEMS, FAST, output_dir=tmp_path / "second")
    assert first.complete and first.benchmarks["smoke-math"].graded == 16
    for name in SMOKE:
        a = read_records(tmp_path / "first" / "records" / f"{name}.jsonl")
        b = read_records(tmp_path / "second" / "records" / f"{name}.jsonl")
        assert all(a[i]["responses"] == b[i]["responses"] for i in a)  # seeded per problem
