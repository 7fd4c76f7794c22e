"""Resuming never loses work: the start is chosen and said, no step folder or result is
overwritten, changed settings take effect, each step is logged once, no NaN reaches a checkpoint."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch

from spiral_train.checkpoint import CheckpointError
from spiral_train.config import ConfigError, load_config
from spiral_train.learner import Learner, LearnerConfig, NonFiniteError
from spiral_train.metrics import MetricsLogger, read_metrics
from spiral_train.run_folder import RunFolderError, plan_start
from tests.test_train_run import tiny_overrides


def _trainer(tiny_qwen3: Path, output: Path, **extra: object):
    from spiral_train.trainer import Trainer

    return Trainer(load_config(None, tiny_overrides(tiny_qwen3, output, **extra)))


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_steps(tiny_qwen3: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step run (checkpoints step-1 and step-2, metrics, TensorBoard)."""
    output = tmp_path_factory.mktemp("two-steps")
    _trainer(tiny_qwen3, output, steps=2, tensorboard="true").train(progress=False, log=lambda line: None)
    return output


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


@pytest.mark.parametrize(
    "damage",
    ["missing", "empty", "garbage", "names a file", "path outside", "absolute", "incomplete folder"],
)
def test_resume_without_a_good_latest_continues_from_the_newest_loadable_step(
    two_steps: Path, tiny_qwen3: Path, tmp_path: Path, damage: str
) -> None:
    output = _copy(two_steps, tmp_path)
    root = output / "checkpoints"
    latest = root / "latest"
    if damage == "missing":
        latest.unlink()
    elif damage == "empty":
        latest.write_text("")
    elif damage == "garbage":
        latest.write_bytes(b"\x00\xffstep-\n\n")
    elif damage == "names a file":
        latest.write_text("step-000002/model.safetensors")
    elif damage == "path outside":
        latest.write_text("../../other")
    elif damage == "absolute":
        latest.write_text(str(root / "step-000002"))
    elif damage == "incomplete folder":
        (root / "step-000003").mkdir()
        latest.write_text("step-000003")
    before = _digests(root / "step-000001") | {"2/" + k: v for k, v in _digests(root / "step-000002").items()}
    config = load_config(None, tiny_overrides(tiny_qwen3, output, steps=3))
    if damage == "incomplete folder":  # step-000003 would be written over: refuse, listing it
        with pytest.raises(RunFolderError, match="step-000003 .* come after step-000002"):
            plan_start(config, resume=True)
        return
    start = plan_start(config, resume=True)
    assert start.checkpoint == root / "step-000002"
    assert start.message.startswith(f"resumed from step 2 ({root / 'step-000002'}); ")
    lines: list[str] = []
    trainer = _trainer(tiny_qwen3, output, steps=3)
    history = trainer.train(start=start, progress=False, log=lines.append)
    assert lines[0] == start.message and [h["step"] for h in history] == [3]
    after = _digests(root / "step-000001") | {"2/" + k: v for k, v in _digests(root / "step-000002").items()}
    assert after == before  # no step folder was written over
    assert (root / "step-000003" / "manifest.json").exists()


def test_resume_from_picks_a_step_and_sets_later_ones_aside_only_when_asked(two_steps: Path, tiny_qwen3: Path, tmp_path: Path) -> None:
    output = _copy(two_steps, tmp_path)
    config = load_config(None, tiny_overrides(tiny_qwen3, output, steps=2))
    with pytest.raises(RunFolderError, match="step-000002 .* --overwrite"):
        plan_start(config, resume_from="step-1")
    start = plan_start(config, resume_from="1", overwrite=True)
    assert start.checkpoint.name == "step-000001" and "set aside step-000002" in start.message
    assert any((output / "checkpoints" / "superseded").rglob("manifest.json"))
    with pytest.raises(CheckpointError, match="step-000007"):
        plan_start(config, resume_from="step-7")


def test_resume_with_nothing_loadable_lists_what_is_there(two_steps: Path, tiny_qwen3: Path, tmp_path: Path) -> None:
    output = _copy(two_steps, tmp_path)
    for step in ("step-000001", "step-000002"):
        (output / "checkpoints" / step / "model.safetensors").write_bytes(b"truncated")
    config = load_config(None, tiny_overrides(tiny_qwen3, output, steps=3))
    with pytest.raises(CheckpointError, match=r"no loadable checkpoint .*step-000001.*step-000002"):
        plan_start(config, resume=True)


def test_a_fresh_run_never_writes_over_an_earlier_run(two_steps: Path, tiny_qwen3: Path, tmp_path: Path) -> None:
    output = _copy(two_steps, tmp_path)
    config = load_config(None, tiny_overrides(tiny_qwen3, output, steps=2))
    with pytest.raises(RunFolderError, match=r"already holds a run \(checkpoints, metrics.jsonl, tensorboard\).*--resume.*--overwrite"):
        plan_start(config)
    (output / "notes.txt").write_text("mine")
    start = plan_start(config, overwrite=True)
    assert start.checkpoint is None and start.message.startswith("starting fresh")
    assert not (output / "checkpoints").exists() and (output / "notes.txt").read_text() == "mine"
    assert plan_start(load_config(None, tiny_overrides(tiny_qwen3, tmp_path / "new"))).message.startswith("starting fresh")


def test_changed_settings_take_effect_and_are_reported(two_steps: Path, tiny_qwen3: Path, tmp_path: Path) -> None:
    output = _copy(two_steps, tmp_path)
    config = load_config(None, tiny_overrides(tiny_qwen3, output, steps=3, **{"learner.learning_rate": "2e-3", "rae.alpha": "0.5"}))
    start = plan_start(config, resume=True)
    assert "learner.learning_rate: 0.001 -> 0.002" in start.changes and "steps: 2 -> 3" in start.changes
    trainer = _trainer(tiny_qwen3, output, steps=3, **{"learner.learning_rate": "2e-3", "rae.alpha": "0.5"})
    history = trainer.train(start=start, progress=False, log=lambda line: None)
    assert history[-1]["learning_rate"] == 2e-3 and trainer.baselines.alpha == 0.5
    assert all(group["lr"] == 2e-3 for group in trainer.learners.workers[0].learner.optimizer.param_groups)
    for change in ("model.lora_rank=4", 'games=[{id = "KuhnPoker-v1", env_kwargs = {rounds = 2}}, {id = "TicTacToe-v0"}]'):
        changed = load_config(None, [*tiny_overrides(tiny_qwen3, output, steps=3), change])
        with pytest.raises(ConfigError, match="cannot change on resume"):
            plan_start(changed, resume=True)


def test_each_step_is_logged_once_after_a_kill_and_resume(two_steps: Path, tiny_qwen3: Path, tmp_path: Path) -> None:
    """A run killed after logging step 2 but before checkpointing it resumes from step 1."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = _copy(two_steps, tmp_path)
    root = output / "checkpoints"
    import shutil

    shutil.rmtree(root / "step-000002")
    (root / "latest").write_text("step-000001")
    trainer = _trainer(tiny_qwen3, output, steps=3, tensorboard="true")
    trainer.train(resume=True, progress=False, log=lambda line: None)
    steps = [r["step"] for r in read_metrics(output / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3]
    events = EventAccumulator(str(output / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3]


def test_metrics_keep_nan_and_skip_a_line_cut_by_a_kill(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(1, {"loss": float("nan"), "grad_norm": float("inf"), "note": "text"})
    logger.close()
    with open(tmp_path / "metrics.jsonl", "a") as file:
        file.write('{"step": 2, "loss": 0.')
    (record,) = read_metrics(tmp_path / "metrics.jsonl")
    assert math.isnan(record["loss"]) and record["grad_norm"] == math.inf and "note" not in record
    MetricsLogger(tmp_path, tensorboard=False, resume_step=1).close()
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


def _learner(tiny_qwen3: Path, **settings: object) -> Learner:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3)
    config = LearnerConfig(learning_rate=1e-3, micro_batch_size=4, normaliser=2.0, gradient_checkpointing=False, **settings)
    return Learner(model, config, pad_id=0)


def _samples():
    from tests.test_train_core import S

    return [S("g", i, i % 2, 1.0, [5 + i, 6, 7, 8], [9, 10 + i], None) for i in range(4)]


def test_a_non_finite_step_is_skipped_and_counted_then_the_run_stops(tiny_qwen3: Path) -> None:
    learner = _learner(tiny_qwen3, epochs=1, max_nonfinite_steps=2)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    metrics = learner.update(_samples(), [float("nan")] * 4)
    assert metrics["skipped_steps"] == 1 and metrics["optimizer_steps"] == 0 and math.isnan(metrics["loss"])
    assert all(torch.equal(before[k], v) for k, v in learner.model.state_dict().items())
    assert learner.update(_samples(), [1.0, -1.0, 0.5, -0.5])["skipped_steps"] == 0  # the streak resets
    learner.update(_samples(), [float("inf")] * 4)
    with pytest.raises(NonFiniteError, match="2 optimizer steps in a row had a non-finite loss"):
        learner.update(_samples(), [float("nan")] * 4)


def test_non_finite_weights_are_never_saved_or_sent(tiny_qwen3: Path, tmp_path: Path) -> None:
    trainer = _trainer(tiny_qwen3, tmp_path, steps=1)
    with torch.no_grad():
        next(trainer.learners.workers[0].model.parameters())[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="weights hold NaN or infinity"):
        trainer.save()
    with pytest.raises(NonFiniteError):
        trainer._sync_weights()
    assert not (tmp_path / "checkpoints").exists()


def test_resumed_optimizer_follows_the_new_schedule(tiny_qwen3: Path) -> None:
    learner = _learner(tiny_qwen3, epochs=1, warmup_steps=4)
    learner.update(_samples(), [1.0, -1.0, 0.5, -0.5])
    state = learner.optimizer.state_dict(), learner.scheduler.state_dict()
    resumed = _learner(tiny_qwen3, epochs=1, warmup_steps=4)
    resumed.optimizer.load_state_dict(state[0])
    resumed.scheduler.load_state_dict(state[1])
    resumed.apply_config(LearnerConfig(learning_rate=4e-3, warmup_steps=2, betas=(0.8, 0.9), normaliser=2.0))
    group = resumed.optimizer.param_groups[0]
    assert group["lr"] == 4e-3 and group["betas"] == (0.8, 0.9)  # step 1 of a 2-step warm-up: full rate
    assert resumed.scheduler.get_last_lr() == [4e-3]
