"""LLMs as arena agents through the tiny Qwen3 on transformers: ``llm@`` specs in
``spiral-arena play`` and ``exact``, one model per process, moves batched over the games played
side by side (and the same moves as one game at a time), LLM specs as evaluation opponents."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import spiral_envs
from spiral_agents.arena import play_game, read_records, replay, run_tournament, summarize
from spiral_agents.cli import main
from spiral_agents.exact import kuhn_exploitability
from spiral_agents.llm import agent as llm_agents
from spiral_agents.llm.agent import LLMAgent, evaluate
from spiral_agents.llm.backend import SamplingConfig
from spiral_agents.llm.hf_backend import TransformersBackend
from spiral_agents.llm.prompts import BaseModelTemplate
from spiral_agents.llm.rollout import LLMPolicy
from spiral_agents.llm.scoring import ActionScorer
from spiral_agents.registry import make_agent


def spec(model: Path, **options: object) -> str:
    settings = {"model": model, "max_tokens": 8, **options}
    return "llm@" + ",".join(f"{key}={value}" for key, value in settings.items())


def test_llm_spec_plays_in_the_cli_with_records_that_replay(tiny_qwen3: Path, tmp_path, capsys):
    records, table = tmp_path / "games.jsonl", tmp_path / "table.json"
    llm = spec(tiny_qwen3)
    argv = ["play", "--game", "KuhnPoker-v1", "--agent", "kuhn-nash", "--agent", llm, "-n", "4"]
    assert main([*argv, "--quiet", "--records", str(records), "--json", str(table)]) == 0
    out = capsys.readouterr().out
    assert llm in out and "mean_reward" in out
    (row,) = json.loads(table.read_text())["results"]
    assert row["games"] == 4 and row["opponent"] == llm
    first = read_records(records)[0]
    assert first.agents == {"player_0": "kuhn-nash", "player_1": llm}
    assert main(["replay", str(records)]) == 0
    assert "4 game(s) replayed exactly" in capsys.readouterr().out


def test_one_model_per_process_and_batched_moves_as_single_games(tiny_qwen3: Path) -> None:
    llm = spec(tiny_qwen3, max_tokens=24, batch_size=13)  # options no other test uses
    loaded = llm_agents.loaded_backends()
    first = make_agent(llm, "TicTacToe-v0", seed=0)
    assert llm_agents.loaded_backends() == loaded + 1
    backend = first.policy.backend
    calls: list[int] = []
    generate = backend.generate

    def counted(prompts, sampling, seeds=None):  # a spy on the real backend
        calls.append(len(prompts))
        return generate(prompts, sampling, seeds)

    backend.generate = counted
    try:
        records = run_tournament(
            ["TicTacToe-v0", "KuhnPoker-v1"],
            [llm, "random", "kuhn-nash"],
            6,
            workers=2,
            move_timeout=30.0,
            progress=False,
            on_skip=lambda pairing: None,
        )
        assert llm_agents.loaded_backends() == loaded + 1  # every game, both games: one model
        assert make_agent(llm, "KuhnPoker-v1", seed=5).policy.backend is backend
        llm_moves = sum(
            move["seat"] == seat
            for record in records
            for seat, name in record.agents.items()
            if name == llm
            for move in record.moves
        )
        assert len(records) == 24 and sum(calls) == llm_moves
        assert len(calls) < llm_moves / 3  # moves of many games in each call
        for record in records[:6] + records[-6:]:  # one game at a time: the same game
            alone = play_game(record.game, dict(record.agents), record.seed)
            assert alone.moves == record.moves and alone.outcome == record.outcome
            replay(record)
    finally:
        del backend.generate


def test_exact_scores_the_models_own_probabilities(tiny_qwen3: Path, capsys) -> None:
    assert main(["exact", "--agent", spec(tiny_qwen3), "--games", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    backend = TransformersBackend(tiny_qwen3)
    scorer = ActionScorer(backend.model, backend.tokenizer, BaseModelTemplate())
    exploitability = kuhn_exploitability(scorer)  # the trainer's scorer: the same number
    assert lines[0] == f"Kuhn Poker exploitability (chips/hand): {exploitability:.6f}"
    assert 0 < exploitability < 1
    assert lines[1].startswith("TicTacToe optimal-move share vs random: ")


def test_action_probabilities_need_the_weights(tiny_qwen3: Path) -> None:
    agent = make_agent(spec(tiny_qwen3), "SimpleNegotiation-v1", seed=0)
    env = spiral_envs.env("SimpleNegotiation-v1")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="need a finite game"):
        agent.action_probabilities(env.observe("player_0"))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"backend": "sglang"}, "unknown backend 'sglang': use transformers or vllm"),
        ({"gpu_memory_utilization": 0.5}, "apply to backend=vllm"),
        ({"temperature": -1}, "temperature must be >= 0"),
        ({"seed": -3}, "seed must be a non-negative integer"),
        ({"speed": 2}, "does not take speed; it takes: seed, model, backend, template"),
    ],
)
def test_bad_llm_specs_are_one_line(tiny_qwen3: Path, options, message, capsys) -> None:
    argv = ["play", "--game", "TicTacToe-v0", "--agent", "random", "--quiet"]
    assert main([*argv, "--agent", spec(tiny_qwen3, **options)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spiral-arena: error: ") and err.count("\n") == 1 and message in err


def test_an_api_key_is_refused_in_a_spec_and_never_shown(capsys) -> None:
    secret = "sk-never-shown-1234"
    openai = f"openai@base_url=http://127.0.0.1:9/v1,model=m,api_key={secret}"
    assert main(["play", "--game", "TicTacToe-v0", "--agent", "random", "--agent", openai]) == 2
    err = capsys.readouterr().err
    assert "api_key_env=NAME" in err and secret not in err and err.count("\n") == 1
    missing = "openai@base_url=http://127.0.0.1:9/v1,model=m,api_key_env=SPIRAL_NO_SUCH_KEY"
    assert main(["play", "--game", "TicTacToe-v0", "--agent", "random", "--agent", missing]) == 2
    assert "the environment variable SPIRAL_NO_SUCH_KEY is not set" in capsys.readouterr().err


def test_llm_specs_as_evaluation_opponents_are_batched_too(tiny_qwen3: Path) -> None:
    policy = LLMPolicy(
        TransformersBackend(tiny_qwen3), sampling=SamplingConfig(max_tokens=8), name="policy"
    )
    opponent = spec(tiny_qwen3)
    records = evaluate(policy, [opponent, "kuhn-nash"], ["KuhnPoker-v1", "TicTacToe-v0"], 4)
    rows = {(r.game, r.b): r for r in summarize(records)}
    assert set(rows) == {
        ("KuhnPoker-v1", opponent),
        ("KuhnPoker-v1", "kuhn-nash"),
        ("TicTacToe-v0", opponent),
    }
    assert all(row.games == 4 for row in rows.values())
    assert isinstance(make_agent(opponent, "KuhnPoker-v1"), LLMAgent)


class ChatServer(ThreadingHTTPServer):
    """A loopback chat-completions server that answers ``\\boxed{[bet]}`` (or, ``failing``,
    HTTP 500) and keeps each request's Authorization header."""

    daemon_threads = True

    def __init__(self, failing: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.failing = failing
        self.authorization: list[str | None] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.authorization.append(self.headers.get("Authorization"))
        message = {"role": "assistant", "content": "I bet. \\boxed{[bet]}"}
        reply = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        assert body["messages"][0]["role"] == "user"
        data = json.dumps(reply).encode()
        self.send_response(500 if self.server.failing else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_openai_spec_reads_its_key_from_the_environment(monkeypatch) -> None:
    server = ChatServer()
    try:
        monkeypatch.setenv("SPIRAL_ARENA_TEST_KEY", "sk-arena-env-key-99")
        served = f"openai@base_url={server.url},model=any,api_key_env=SPIRAL_ARENA_TEST_KEY"
        records = run_tournament(
            ["KuhnPoker-v1"], [served, "kuhn-nash"], 4, move_timeout=None, progress=False
        )
        betting = [m for r in records for m in r.moves if r.agents[m["seat"]] == served]
        assert betting and all(m["action"] == "[bet]" for m in betting)
        assert set(server.authorization) == {"Bearer sk-arena-env-key-99"}
        assert not any("sk-arena" in record.to_json() for record in records)
    finally:
        server.stop()


def test_a_failing_server_forfeits_only_the_models_games() -> None:
    server = ChatServer(failing=True)
    try:
        served = f"openai@base_url={server.url},model=any,max_retries=0"
        records = run_tournament(
            ["KuhnPoker-v1"], [served, "kuhn-nash", "random"], 4, progress=False
        )
        for record in records:
            if served in record.agents.values():
                seat = next(s for s, a in record.agents.items() if a == served)
                assert record.ended_by == "forfeit" and record.outcome[seat] == "loss"
                assert f"{seat} raised GenerationFailed: " in record.error
                assert "HTTP 500" in record.error
            else:
                assert record.error is None
            replay(record)
        assert len(records) == 12
    finally:
        server.stop()


def test_the_trainer_config_takes_llm_specs_as_evaluation_opponents(tiny_qwen3: Path) -> None:
    from spiral_train.config import EvalConfig

    opponents = [spec(tiny_qwen3), "kuhn-nash"]
    assert EvalConfig(opponents=opponents, game_ids=["KuhnPoker-v1"]).opponents == opponents
