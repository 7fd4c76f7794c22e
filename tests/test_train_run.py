"""Training runs on the tiny model: config, checkpoints (kill-safe), resume equivalence, end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spiral_train.checkpoint import TrainerState, latest_checkpoint, load_checkpoint, save_checkpoint
from spiral_train.config import TrainConfig, load_config
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
        "checkpoint_every": "1",
    }
    settings.update({k: str(v) for k, v in extra.items()})
    return [f"{k}={v}" for k, v in settings.items()]


# --- config ---------------------------------------------------------------------------------


def test_shipped_configs_load_and_validate() -> None:
    for path in sorted((ROOT / "configs").glob("*")):
        config = load_config(path)
        assert isinstance(config, TrainConfig)
    paper = load_config(ROOT / "configs" / "qwen3-4b-base.yaml")
    assert paper.learner.learning_rate == 1e-6 and paper.samples_per_step == 128 and paper.steps == 400
    assert paper.learner.clip == 0.2 and paper.learner.epochs == 2 and paper.learner.kl_coef == 0.0
    assert (paper.rewards.invalid_offender, paper.rewards.invalid_opponent) == (-1.5, 0.5)
    assert paper.rae.alpha == 0.95 and paper.sampling.max_tokens == 4096
    assert [g.id for g in paper.games] == ["TicTacToe-v0", "KuhnPoker-v1", "SimpleNegotiation-v1"]
    lora = load_config(ROOT / "configs" / "qwen3-4b-instruct-lora.yaml")
    assert lora.model.lora_rank == 32 and lora.learner.learning_rate == 4e-5


def test_toml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('steps = 7\n[learner]\nlearning_rate = 2e-6\n[[games]]\nid = "Nim-v0"\n')
    config = load_config(path, ["learner.epochs=3", "eval.opponents=['random', 'nim-optimal']"])
    assert config.steps == 7 and config.learner.learning_rate == 2e-6 and config.learner.epochs == 3
    assert [g.id for g in config.games] == ["Nim-v0"]
    assert config.eval.opponents == ["random", "nim-optimal"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("learner.learning_rte=1", "unknown setting"),
        ("steps=0", "steps must be at least 1"),
        ("steps=ten", "expected an integer"),
        ("learner.clip=1.5", "clip"),
        ("rae.alpha=1.0", "rae.alpha"),
        ("generator.backend=tpu", "generator.backend"),
        ("generator.backend=vllm-server", "generator.base_url must be an http"),
        ("generator.request_timeout=0", "generator.request_timeout"),
        ("games=[{id = \"Chess-v0\"}]", "unknown game"),
        ("learner=3", "expected a table"),
        ("nonsense", "section.key=value"),
    ],
)
def test_bad_config_values_give_clear_errors(override: str, message: str) -> None:
    with pytest.raises((ValueError, KeyError), match=message):
        load_config(None, [override])


def test_cli_reports_bad_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spiral_train.cli", "steps=-1"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "steps must be at least 1" in result.stderr


# --- checkpoints ----------------------------------------------------------------------------


def _model_and_optimizer(tiny_qwen3: Path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()
    return model, optimizer, scheduler


def test_checkpoint_round_trip(tiny_qwen3: Path, tmp_path: Path) -> None:
    model, optimizer, scheduler = _model_and_optimizer(tiny_qwen3)
    generator = torch.Generator().manual_seed(5)
    state = TrainerState(step=3, samples=40, games=9, baselines={"alpha": 0.95, "update_first": False, "values": [["g", 0, 0.25]]}, config={"steps": 3})
    path = save_checkpoint(tmp_path, state, model, optimizer, scheduler, generator)
    expected_draw = torch.rand(3, generator=generator)
    fresh, fresh_opt, fresh_sched = _model_and_optimizer(tiny_qwen3)
    fresh_generator = torch.Generator()
    loaded = load_checkpoint(latest_checkpoint(tmp_path), fresh, fresh_opt, fresh_sched, fresh_generator)
    assert path.name == "step-000003" and loaded == state
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(torch.rand(3, generator=fresh_generator), expected_draw)
    a, b = optimizer.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)


def test_failure_during_a_checkpoint_write_keeps_the_last_good_one(tiny_qwen3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import spiral_train.checkpoint as checkpoint

    model, optimizer, scheduler = _model_and_optimizer(tiny_qwen3)
    generator = torch.Generator()
    state = TrainerState(1, 1, 1, {}, {})
    save_checkpoint(tmp_path, state, model, optimizer, scheduler, generator)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, TrainerState(2, 2, 2, {}, {}), model, optimizer, scheduler, generator)
    monkeypatch.undo()
    good = latest_checkpoint(tmp_path)
    assert good.name == "step-000001"
    assert load_checkpoint(good, model).step == 1


def test_kill_at_any_moment_leaves_a_loadable_checkpoint(tiny_qwen3: Path, tmp_path: Path) -> None:
    code = f"""
import torch, itertools
from transformers import AutoModelForCausalLM
from spiral_train.checkpoint import TrainerState, save_checkpoint
model = AutoModelForCausalLM.from_pretrained({str(tiny_qwen3)!r})
opt = torch.optim.AdamW(model.parameters()); sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
print("ready", flush=True)
for step in itertools.count(1):
    save_checkpoint({str(tmp_path)!r}, TrainerState(step, step, step, {{}}, {{}}), model, opt, sched, torch.Generator())
"""
    for delay in (0.3, 0.7, 1.1):
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        from transformers import AutoModelForCausalLM

        path = latest_checkpoint(tmp_path)
        assert path is not None
        state = load_checkpoint(path, AutoModelForCausalLM.from_pretrained(tiny_qwen3))
        assert state.step >= 1


# --- runs -----------------------------------------------------------------------------------


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_games_with_a_failed_request_are_left_out(tiny_qwen3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spiral_agents.llm.backend import error_generations
    from spiral_train.trainer import Trainer

    trainer = Trainer(load_config(None, tiny_overrides(tiny_qwen3, tmp_path, steps=1)))
    generate = trainer.backend.generate

    def flaky(prompts, sampling, seeds):
        outputs = generate(prompts, sampling, seeds)
        return [error_generations(1, "HTTP 503") if seed % 3 == 0 else out for out, seed in zip(outputs, seeds)]

    monkeypatch.setattr(trainer.backend, "generate", flaky)
    trained = []
    update = trainer.learner.update
    monkeypatch.setattr(trainer.learner, "update", lambda samples, advantages: trained.extend(samples) or update(samples, advantages))
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
    push = trainer.backend.update_weights

    def counting(state_dict) -> None:
        pushed.append(trainer.step_index)
        push(state_dict)

    trainer.backend.update_weights = counting
    return pushed


def _assert_generator_runs_the_trained_weights(trainer, untrained: Path) -> None:
    from transformers import AutoModelForCausalLM

    from spiral_agents.llm.backend import SamplingConfig

    prompt = trainer.policy.prompt("Player 0, your move. Your legal moves: [check], [bet]")
    generation = trainer.backend.generate([prompt], SamplingConfig(max_tokens=6), [0])[0][0]
    ids = torch.tensor([prompt + generation.token_ids])

    def logprobs(model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1 : -1].log_softmax(-1)
        return logits.gather(1, torch.tensor(generation.token_ids)[:, None]).squeeze(1)

    sampled = torch.tensor(generation.logprobs)
    assert torch.allclose(sampled, logprobs(trainer.model), atol=1e-3)
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
        monkeypatch.setattr(failing.backend, "server_url", f"http://127.0.0.1:{free_port()}")
        monkeypatch.setattr(failing.backend, "max_retries", 0)
        with pytest.raises(WeightSyncError, match="ConnectError(.|\\n)*step-000001(.|\\n)*--resume"):
            failing.train(progress=False)
        assert latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step-000001"
        resumed = Trainer(config)
        pushed = _count_pushes(resumed)
        resumed.train(resume=True, progress=False)
        assert pushed == [1, 2] and resumed.step_index == 2
    finally:
        trainer.backend.update_weights(untrained)  # the session's server goes back to the tiny Qwen3
