"""``openai@`` agent specs against a real vLLM OpenAI-compatible server on the tiny Qwen3, and
``llm@...,backend=vllm`` on vLLM's in-process engine (CPU here)."""

from __future__ import annotations

import json

import pytest

from spiral_agents.arena import read_records, run_tournament
from spiral_agents.cli import main
from spiral_agents.exact import kuhn_exploitability
from spiral_agents.llm import agent as llm_agents
from spiral_agents.registry import make_agent

pytestmark = pytest.mark.slow


def test_openai_spec_plays_the_arena_and_replays(vllm_server: str, tiny_qwen3, tmp_path, capsys):
    served = f"openai@base_url={vllm_server},model={tiny_qwen3},max_tokens=16"
    records, table = tmp_path / "games.jsonl", tmp_path / "table.json"
    argv = ["play", "--game", "KuhnPoker-v1", "--agent", "kuhn-nash", "--agent", served, "-n", "6"]
    assert main([*argv, "--quiet", "--records", str(records), "--json", str(table)]) == 0
    (row,) = json.loads(table.read_text())["results"]
    assert row["games"] == 6 and row["opponent"] == served
    assert not any("GenerationFailed" in (game.error or "") for game in read_records(records))
    assert main(["replay", str(records)]) == 0
    assert "6 game(s) replayed exactly" in capsys.readouterr().out


def test_openai_completions_spec_with_a_key_from_the_environment(
    vllm_server: str, tiny_qwen3, monkeypatch
) -> None:
    monkeypatch.setenv("SPIRAL_TEST_KEY", "sk-from-the-environment-7")
    served = (
        f"openai@base_url={vllm_server},model={tiny_qwen3},api=completions,"
        f"tokenizer={tiny_qwen3},max_tokens=8,api_key_env=SPIRAL_TEST_KEY"
    )
    loaded = llm_agents.loaded_backends()
    records = run_tournament(
        ["TicTacToe-v0"], [served, "random"], 4, move_timeout=None, progress=False
    )
    assert llm_agents.loaded_backends() == loaded + 1
    assert len(records) == 4 and all(r.error is None for r in records)
    assert all("sk-from" not in r.to_json() for r in records)


def test_llm_spec_on_in_process_vllm(tiny_qwen3) -> None:
    pytest.importorskip("vllm")
    spec = f"llm@model={tiny_qwen3},backend=vllm,max_model_len=1024,max_tokens=8"
    records = run_tournament(["TicTacToe-v0", "KuhnPoker-v1"], [spec, "random"], 4, progress=False)
    assert len(records) == 8 and all(r.error is None for r in records)
    assert all(r.moves for r in records)


def test_vllm_scores_the_same_action_probabilities_as_transformers(tiny_qwen3) -> None:
    pytest.importorskip("vllm")
    transformers = make_agent(f"llm@model={tiny_qwen3},max_tokens=8", "KuhnPoker-v1", seed=0)
    vllm = make_agent(
        f"llm@model={tiny_qwen3},backend=vllm,max_model_len=1024,max_tokens=8", "KuhnPoker-v1"
    )
    assert kuhn_exploitability(vllm) == pytest.approx(kuhn_exploitability(transformers), abs=1e-4)
