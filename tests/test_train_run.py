"""Training runs on the tiny model: config, checkpoints (kill-safe), resume equivalence, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spiral_train.checkpoint import (
    latest_checkpoint,
)
from spiral_train.config import load_config
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]


def tiny_overrides(model: Path, output: Path, **extra: object) -> list[str]:
    settings = {
        "model.path": f'"{model}"',
        "model.template": '"spiral-base"',
        "output_dir": f'"{output}"',
        "generator.backend": '"transformers"',
        "generator.sleep_while_learning": "false",
        "games": '[{id = "KuhnPoker-v1", env_kwargs = {rounds = 1}}, {id = "TicTacToe-v0"}]',
        "sampling.max_tokens": "8",
        "samples_per_step": "12",
        "concurrency": "6",
        "learner.learning_rate": "1e-3",
        "learner.micro_batch_size": "8",
        "learner.normaliser": "8.0",
        "learner.gradient_checkpointing": "false",
        "eval.every": "0",
        "eval.kuhn_exploitability": "false",
        "tensorboard": "false",
        "steps": "3",
        "checkpoint.every": "1",
    }
    settings.update({k: str(v) for k, v in extra.items()})
    return [f"{k}={v}" for k, v in settings.items()]


# --- runs -----------------------------------------------------------------------------------


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.learners.workers[0].model.state_dict().items()}


def test_games_with_a_failed_request_are_left_out(tiny_qwen3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spiral_agents.llm.backend import error_generations
    from spiral_train.trainer import Trainer

    trainer = Trainer(load_config(None, tiny_overrides(tiny_qwen3, tmp_path, steps=1)))
    generate = trainer.generators.workers[0].backend.generate

    def flaky(prompts, sampling, seeds):
        outputs = generate(prompts, sampling, seeds)
        return [error_generations(1, "HTTP 503") if seed % 3 == 0 else out for out, seed in zip(outputs, seeds)]

    monkeypatch.setattr(trainer.generators.workers[0].backend, "generate", flaky)
    trained = []
    update = trainer.learners.workers[0].learner.update
    monkeypatch.setattr(trainer.learners.workers[0].learner, "update", lambda samples, advantages: trained.extend(samples) or update(samples, advantages))
    counted = []
    game_metrics = trainer._game_metrics
    monkeypatch.setattr(trainer, "_game_metrics", lambda played, *rest: counted.extend(played) or game_metrics(played, *rest))
    metrics = trainer.step()
    assert 0 < metrics["void_games"] < metrics["games"]
    assert trained and all(s.finish_reason != "error" for s in trained)
    # neither trained on nor counted: no turn of a game that had a failed request
    void = {s.episode for s in counted if s.finish_reason == "error"}
    assert not void and {s.episode for s in trained} <= {s.episode for s in counted}
    assert len({s.episode for s in counted}) == metrics["games"] - metrics["void_games"]


@pytest.mark.slow
def test_resumed_run_makes_the_same_updates(tiny_qwen3: Path, tmp_path: Path) -> None:
    from spiral_train.trainer import Trainer

    full = Trainer(load_config(None, tiny_overrides(tiny_qwen3, tmp_path / "full")))
    full.train(progress=False)

    first = Trainer(load_config(None, tiny_overrides(tiny_qwen3, tmp_path / "split", steps=2)))
    first.train(progress=False)
    resumed = Trainer(load_config(None, tiny_overrides(tiny_qwen3, tmp_path / "split")))
    history = resumed.train(resume=True, progress=False)
    assert resumed.step_index == 3 and [h["step"] for h in history] == [3]
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.baselines.values == resumed.baselines.values


@pytest.mark.slow
def test_end_to_end_with_transformers_logs_metrics_and_evaluates(tiny_qwen3: Path, tmp_path: Path) -> None:
    from spiral_train.metrics import read_metrics
    from spiral_train.trainer import Trainer

    overrides = tiny_overrides(
        tiny_qwen3, tmp_path, steps=2, **{"eval.every": 2, "eval.games": 6, "eval.kuhn_exploitability": "true",
        "eval.game_ids": '["KuhnPoker-v1"]', "warm_start.steps": 3, "tensorboard": "true"}
    )  # fmt: skip
    trainer = Trainer(load_config(None, overrides))
    before = _weights(trainer)
    history = trainer.train(progress=False)
    after = _weights(trainer)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    last = history[-1]
    for key in ("loss", "clip_fraction", "grad_norm", "learning_rate", "time_generation", "time_learning",
                "generation_tokens_per_second", "learner_tokens_per_second", "eval/kuhn_exploitability",
                "eval/KuhnPoker-v1/vs_random/win_rate_low"):
        assert key in last, key
    for suffix in ("/role0/return", "/role1/baseline", "/role0/invalid_rate", "/role1/response_tokens"):
        assert any(k.endswith(suffix) for k in last), suffix
    assert 0 <= last["eval/kuhn_exploitability"] <= 1.5
    logged = read_metrics(tmp_path / "metrics.jsonl")
    assert [m["step"] for m in logged] == [0, 0, 1, 2]
    assert any((tmp_path / "tensorboard").iterdir())
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-000002"


def _count_pushes(trainer) -> list[int]:
    """Record the step index at each weight push to the generator."""
    pushed: list[int] = []
    push = trainer.generators.workers[0].backend.update_weights

    def counting(state_dict) -> None:
        pushed.append(trainer.step_index)
        push(state_dict)

    trainer.generators.workers[0].backend.update_weights = counting
    return pushed


def _assert_generator_runs_the_trained_weights(trainer, untrained: Path) -> None:
    from transformers import AutoModelForCausalLM

    from spiral_agents.llm.backend import SamplingConfig

    prompt = trainer.generators.workers[0].policy.prompt("Player 0, your move. Your legal moves: [check], [bet]")
    generation = trainer.generators.workers[0].backend.generate([prompt], SamplingConfig(max_tokens=6), [0])[0][0]
    ids = torch.tensor([prompt + generation.token_ids])

    def logprobs(model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1 : -1].log_softmax(-1)
        return logits.gather(1, torch.tensor(generation.token_ids)[:, None]).squeeze(1)

    sampled = torch.tensor(generation.logprobs)
    assert torch.allclose(sampled, logprobs(trainer.learners.workers[0].model), atol=1e-3)
    assert not torch.allclose(sampled, logprobs(AutoModelForCausalLM.from_pretrained(untrained)), atol=1e-3)


@pytest.mark.slow
def test_end_to_end_with_vllm_on_the_cpu_pushes_weights_to_the_generator(tiny_qwen3: Path, tmp_path: Path) -> None:
    from spiral_train.trainer import Trainer

    overrides = tiny_overrides(
        tiny_qwen3, tmp_path, steps=2, **{"generator.backend": '"vllm"', "generator.max_model_len": 1024, "warm_start.steps": 2}
    )
    trainer = Trainer(load_config(None, overrides))
    pushed = _count_pushes(trainer)
    trainer.train(progress=False)
    assert pushed == [0, 1, 2]  # after the warm start and after each update
    _assert_generator_runs_the_trained_weights(trainer, tiny_qwen3)


@pytest.mark.slow
def test_end_to_end_with_a_vllm_server_that_reloads_each_update(vllm_server: str, tiny_qwen3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spiral_agents.llm.vllm_server import WeightSyncError
    from spiral_train.trainer import Trainer

    served = {"generator.backend": '"vllm-server"', "generator.base_url": f'"{vllm_server}"'}
    trainer = Trainer(load_config(None, tiny_overrides(tiny_qwen3, tmp_path / "a", steps=2, **served, **{"warm_start.steps": 2})))
    untrained = _weights(trainer)
    pushed = _count_pushes(trainer)
    try:
        trainer.train(progress=False)
        assert pushed == [0, 1, 2]
        _assert_generator_runs_the_trained_weights(trainer, tiny_qwen3)
        assert [p.name for p in (tmp_path / "a" / "served-weights").iterdir()] == ["weights-000003"]

        # The server stops answering after the first update: that step is checkpointed, and a
        # resumed run sends its weights first, then goes on.
        config = load_config(None, tiny_overrides(tiny_qwen3, tmp_path / "b", steps=2, **served))
        failing = Trainer(config)
        monkeypatch.setattr(failing.generators.workers[0].backend, "server_url", f"http://127.0.0.1:{free_port()}")
        monkeypatch.setattr(failing.generators.workers[0].backend, "max_retries", 0)
        with pytest.raises(WeightSyncError, match="ConnectError(.|\\n)*step-000001(.|\\n)*--resume"):
            failing.train(progress=False)
        assert latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step-000001"
        resumed = Trainer(config)
        pushed = _count_pushes(resumed)
        resumed.train(resume=True, progress=False)
        assert pushed == [1, 2] and resumed.step_index == 2
    finally:
        trainer.generators.workers[0].backend.update_weights(untrained)  # the session's server goes back to the tiny Qwen3


def test_reasoning_subset_is_evaluated_on_the_live_policy(tiny_qwen3: Path, tmp_path: Path) -> None:
    from spiral_train.metrics import read_metrics
    from spiral_train.trainer import Trainer

    settings = {"steps": 1, "eval.reasoning.every": 1, "eval.reasoning.limit": 2, "eval.reasoning.max_tokens": 8}
    trainer = Trainer(load_config(None, tiny_overrides(tiny_qwen3, tmp_path, **settings)))
    trainer.train(progress=False, log=lambda line: None)
    logged = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/reasoning/smoke-math/accuracy" in r]
    assert [r["step"] for r in logged] == [0, 1]
    assert all(r["eval/reasoning/smoke-math/errors"] == 0 for r in logged)
    records = (tmp_path / "reasoning" / "step-000001" / "records" / "smoke-math.jsonl").read_text().splitlines()
    assert len(records) == 2
