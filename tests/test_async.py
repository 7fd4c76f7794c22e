"""Asynchronous self-play (``max_staleness``): generation and learning overlap on Ray workers of
one learner and one generator (loopback only, as in tests/test_distributed.py), with the policy
version of every turn, bounded staleness and the importance weight toward the sampler."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from spiral_train.config import ASYNC_IMPORTANCE_CAP, ConfigError
from spiral_train.overlap import Overlap, split_stale
from tests.test_distributed import LOOPBACK, config_for, initial_weights, learner_weights


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in LOOPBACK.items():
            patch.setenv(name, value)
        ray.init(num_cpus=4, _temp_dir=str(tmp_path_factory.mktemp("ray")), include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


def async_config(model: Path, output: Path, k: int = 1, **overrides: object):
    """tests/test_distributed.py's two-step config on a local Ray: one learner, one generator."""
    return config_for(model, output, **{"cluster.address": "local", "max_staleness": k, **overrides})


def logprobs_match(weights: dict[str, torch.Tensor], model_path: str, samples: list) -> bool:
    """Whether the samples' sampling log-probs are a teacher-forced forward of ``weights``."""
    from transformers import AutoModelForCausalLM

    from spiral_train.learner import pack, token_logprobs

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.load_state_dict(weights, strict=False)
    batch = pack(samples, [0.0] * len(samples), pad_id=0)
    with torch.no_grad():
        forward = token_logprobs(model, batch)
    mask = batch.mask.bool()
    return torch.allclose(forward[mask], batch.sampler_logprobs[mask], atol=1e-4)


# --- settings ---------------------------------------------------------------------------------------


def test_async_settings_that_cannot_overlap_are_config_errors(tiny_qwen3: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"max_staleness: colocated placement cannot overlap .*set cluster.colocate=false or max_staleness=0"):
        async_config(tiny_qwen3, tmp_path, **{"cluster.colocate": "true"})
    with pytest.raises(ConfigError, match=r"max_staleness: in one process .*cluster.address=local"):
        config_for(tiny_qwen3, tmp_path, max_staleness=1)
    with pytest.raises(ConfigError, match=r"max_staleness: Input should be greater than or equal to 0"):
        async_config(tiny_qwen3, tmp_path, k=-1)
    on = async_config(tiny_qwen3, tmp_path, **{"generator.sleep_while_learning": "true"})
    assert on.learner.importance_cap == ASYNC_IMPORTANCE_CAP and not on.generator.sleep_while_learning
    assert async_config(tiny_qwen3, tmp_path, **{"learner.importance_cap": 5.0}).learner.importance_cap == 5.0
    assert async_config(tiny_qwen3, tmp_path, k=0).learner.importance_cap is None  # synchronous: as before


def test_a_game_that_spans_an_update_records_each_turns_version(tiny_qwen3: Path, tmp_path: Path) -> None:
    """Weights offered while a generator plays are loaded at its next safe point: later turns of
    the same games are played by them (their sampling log-probs say so) and record version 1."""
    from spiral_train.workers import GeneratorWorker

    config = async_config(tiny_qwen3, tmp_path, **{"rewards.invalid_move.retries": 3})  # several turns a game
    worker = GeneratorWorker(config)  # in this process: the Ray actor's class, called directly
    old = {k: v.detach().clone() for k, v in worker.backend.model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    new = {k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v for k, v in old.items()}
    generate, calls = worker.backend.generate, []

    def generate_then_offer(*args: object, **kwargs: object) -> object:
        outputs = generate(*args, **kwargs)
        calls.append(len(outputs))
        if len(calls) == 1:
            worker.offer_weights(new, 1)  # arrives while the first turns are being generated
        return outputs

    worker.backend.generate = generate_then_offer
    played = worker.play(0, list(range(6)))
    versions: dict[int, list[int]] = {}
    for sample in played.samples:
        versions.setdefault(sample.episode, []).append(sample.policy_version)
    assert all(turns[0] == 0 for turns in versions.values())  # every game's first turn: version 0
    assert any(set(turns) == {0, 1} for turns in versions.values())  # a game spans the update
    assert len(calls) > 1 and worker.policy.version == 1
    for version, weights in ((0, old), (1, new)):
        samples = [s for s in played.samples if s.policy_version == version and s.response_token_ids]
        assert samples and logprobs_match(weights, config.model.path, samples)
        assert not logprobs_match(new if version == 0 else old, config.model.path, samples)


def test_staleness_is_counted_in_updates_behind(tiny_qwen3: Path, tmp_path: Path) -> None:
    from spiral_agents.llm.rollout import TurnSample

    def turn(version: int | None) -> TurnSample:
        return TurnSample(0, "KuhnPoker-v1", "player_0", 0, version or 0, "policy", [1], [2], [0.0], "stop", "", None, False, policy_version=version)

    kept, stale = split_stale([turn(3), turn(2), turn(1), turn(3)], update=3, max_staleness=1)
    assert [s.policy_version for s in kept] == [3, 2, 3] and [s.policy_version for s in stale] == [1]
    with pytest.raises(ValueError, match="records no policy version"):
        split_stale([turn(None)], update=0, max_staleness=1)


# --- on Ray -----------------------------------------------------------------------------------------


def record_collected(trainer) -> list[tuple[int, list]]:
    """From now on, each step's (update, played turns) as the overlap takes them."""
    seen: list[tuple[int, list]] = []
    collect = trainer.overlap._collect

    def recording(pending):
        games, idle = collect(pending)
        seen.append((trainer.step_index, list(games.samples)))
        return games, idle

    trainer.overlap._collect = recording
    return seen


@pytest.mark.slow
def test_the_overlapped_loop_without_overlap_reproduces_the_synchronous_trainer(tiny_qwen3: Path, tmp_path: Path, ray_session: None) -> None:
    """max_staleness = 0 is the synchronous trainer; the asynchronous loop played 0 steps ahead
    (its weights offered and loaded at the next safe point) trains the same games to the same
    weights, bit for bit, so what k >= 1 changes is only which weights play the games."""
    from spiral_train.trainer import Trainer

    cap = {"learner.importance_cap": ASYNC_IMPORTANCE_CAP}
    with Trainer(async_config(tiny_qwen3, tmp_path / "sync", k=0, **cap)) as synchronous:
        assert synchronous.overlap is None
        history = [synchronous.train_step() for _ in range(2)]
        synchronous_weights = learner_weights(synchronous)
    with Trainer(async_config(tiny_qwen3, tmp_path / "async", k=1)) as overlapped:
        overlapped.overlap = Overlap(overlapped, depth=0)
        collected = record_collected(overlapped)
        overlapped_history = [overlapped.train_step() for _ in range(2)]
        overlapped_weights = learner_weights(overlapped)
    assert [m["loss"] for m in overlapped_history] == [m["loss"] for m in history]
    assert [(u, {s.policy_version for s in samples}) for u, samples in collected] == [(0, {0}), (1, {1})]
    moved = max((synchronous_weights[k] - v).abs().max().item() for k, v in initial_weights(tiny_qwen3).items())
    assert moved > 1e-3
    for name, tensor in synchronous_weights.items():
        torch.testing.assert_close(overlapped_weights[name], tensor, rtol=0, atol=0)


@pytest.mark.slow
def test_one_step_off_policy_lags_at_most_one_update_and_drops_older_turns(tiny_qwen3: Path, tmp_path: Path, ray_session: None) -> None:
    from spiral_train.trainer import Trainer

    config = async_config(tiny_qwen3, tmp_path, steps=5)
    with Trainer(config) as trainer:
        collected = record_collected(trainer)
        history = [trainer.train_step() for _ in range(3)]
        for update, samples in collected:
            lags = {update - s.policy_version for s in samples}
            assert lags <= {0, 1} and (update == 0 or 1 in lags)  # step u + 1 is played during update u
        assert [m["policy_lag_max"] for m in history] == [0, 1, 1] and history[2]["policy_lag_mean"] > 0
        assert all(m["stale_samples_dropped"] == 0 and m["trained_samples"] > 0 for m in history)
        assert all(m["learner_idle_seconds"] >= 0 and m["generator_idle_seconds"] >= 0 for m in history)

        # Turns played by version 0, taken at update 3, are 3 updates behind: none is trained.
        old_turns = [s for s in collected[0][1] if s.response_token_ids]
        assert {s.policy_version for s in old_turns} == {0}
        before = learner_weights(trainer)
        collect = trainer.overlap._collect

        def old_games(pending):
            games, idle = collect(pending)
            games.samples = list(collected[0][1])
            return games, idle

        trainer.overlap._collect = old_games
        dropped = trainer.train_step()
        assert dropped["stale_samples_dropped"] == len(old_turns) and dropped["trained_samples"] == 0
        after = learner_weights(trainer)
        assert all(torch.equal(after[k], v) for k, v in before.items())  # no update was made


def test_the_importance_weight_corrects_off_policy_turns_only(tiny_qwen3: Path, tmp_path: Path) -> None:
    """With the asynchronous default cap, turns sampled by older weights are reweighted toward
    the learner (the update differs from one without the weight); the learner's own turns have
    weight 1 up to float rounding (the update is the same)."""
    from spiral_train.learner import Learner
    from spiral_train.model import load_model
    from spiral_train.workers import GeneratorWorker

    config = async_config(tiny_qwen3, tmp_path, **{"rewards.invalid_move.retries": 3})
    worker = GeneratorWorker(config)
    on_policy = [s for s in worker.play(0, list(range(4))).samples if s.response_token_ids]
    generator = torch.Generator().manual_seed(1)
    older = {k: v + 0.1 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v for k, v in worker.backend.model.state_dict().items()}
    worker.offer_weights(older, 0)
    off_policy = [s for s in worker.play(1, list(range(4))).samples if s.response_token_ids]
    advantages = [1.0 if i % 2 else -1.0 for i in range(max(len(on_policy), len(off_policy)))]

    start, tokenizer = load_model(config)
    settings = dataclasses.replace(config.learner, epochs=1, minibatches=1, micro_batch_size=64)

    def updated(samples: list, cap: float | None) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(start)
        Learner(model, dataclasses.replace(settings, importance_cap=cap), tokenizer.pad_token_id).update(samples, advantages[: len(samples)])
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    assert config.learner.importance_cap == ASYNC_IMPORTANCE_CAP
    weighted, unweighted = updated(off_policy, ASYNC_IMPORTANCE_CAP), updated(off_policy, None)
    assert max((weighted[k] - v).abs().max().item() for k, v in unweighted.items()) > 1e-4
    weighted, unweighted = updated(on_policy, ASYNC_IMPORTANCE_CAP), updated(on_policy, None)
    assert max((weighted[k] - v).abs().max().item() for k, v in unweighted.items()) < 1e-5


# --- the whole run ------------------------------------------------------------------------------


def _cli(output: Path, model: Path, *extra: str) -> list[str]:
    settings = {
        "model.path": model, "output_dir": output, "steps": 4, "samples_per_step": 16, "concurrency": 16, "eval.every": 0,
        "warm_start.steps": 0, "checkpoint.every": 1, "checkpoint.keep_last": 5, "tensorboard": "false", "cluster.address": "local",
        "max_staleness": 1, "cluster.gpus_per_learner": 0, "cluster.gpus_per_generator": 0, "cluster.cpus_per_worker": 0.5,
    }
    return [sys.executable, "-m", "spiral_train.cli", "--config", "configs/cpu-demo.yaml", "--quiet", *(f"{k}={v}" for k, v in settings.items()), *extra]


@pytest.mark.slow
def test_a_killed_async_run_resumes_replaying_the_games_in_flight_with_the_checkpoints_weights(tiny_qwen3: Path, tmp_path: Path) -> None:
    import psutil

    from spiral_train.checkpoint import read_state

    env = {**os.environ, **LOOPBACK}
    metrics, saved = tmp_path / "metrics.jsonl", tmp_path / "checkpoints" / "step-000002"
    driver = subprocess.Popen(_cli(tmp_path, tiny_qwen3), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not saved.is_dir() and driver.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.1)
    children = psutil.Process(driver.pid).children(recursive=True) if driver.poll() is None else []
    driver.kill()  # step 3's games are in play
    driver.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    for process in alive:
        process.kill()
    done = subprocess.run(_cli(tmp_path, tiny_qwen3, "--resume"), env=env, check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from step 2" in done.stderr
    logged = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [m["step"] for m in logged] == [1, 2, 3, 4]  # each step once
    assert logged[2]["policy_lag_max"] == 0  # step 3's games replayed by the checkpoint's weights
    assert logged[3]["policy_lag_max"] <= 1 and all(m["stale_samples_dropped"] == 0 for m in logged)
    assert read_state(tmp_path / "checkpoints" / "step-000004").trainer.step == 4


@pytest.mark.slow
def test_the_cpu_demo_one_step_off_policy_on_ray_still_learns(tmp_path: Path, ray_session: None) -> None:
    """configs/cpu-demo.yaml (its own tiny model, built here) with max_staleness = 1, one
    learner and one generator on Ray, 10 steps: the exact exploitability falls well below its
    value after the warm start, and the win rate against random rises out of its interval."""
    from spiral_train.config import load_config
    from spiral_train.trainer import Trainer

    overrides = {
        "model.path": tmp_path / "tiny-demo", "output_dir": tmp_path / "run", "steps": 10, "tensorboard": "false", "max_staleness": 1,
        "cluster.address": "local", "cluster.gpus_per_learner": 0, "cluster.gpus_per_generator": 0, "cluster.cpus_per_worker": 1,
    }
    with Trainer(load_config("configs/cpu-demo.yaml", [f"{k}={v}" for k, v in overrides.items()])) as trainer:
        history = trainer.train(progress=False, log=lambda line: None)
    first, last = history[0], history[-1]
    assert first["step"] == 0 and last["step"] == 10
    assert last["eval/kuhn_exploitability"] < first["eval/kuhn_exploitability"] - 0.1  # seen: 0.523 -> 0.27-0.30
    win = "eval/KuhnPoker-v1/vs_random/win_rate"
    assert last[win + "_low"] > first[win + "_high"]
    steps = history[1:]
    assert all(m["policy_lag_max"] <= 1 and m["stale_samples_dropped"] == 0 for m in steps)
    assert sum(m["policy_lag_mean"] for m in steps) > 0  # trained one step off policy
