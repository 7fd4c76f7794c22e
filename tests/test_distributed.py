"""The trainer on Ray: learner ranks (FSDP2 over gloo) and generator workers on this machine's
loopback, against the single-process trainer on the same config.

Ray runs on 127.0.0.1 only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, see the scale-out notes), in its
own temporary folder, started and stopped by this module's fixture.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from spiral_train.config import ConfigError, load_config

LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}


@pytest.fixture(scope="module")
def crash_marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crash") / "crash-now"


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory: pytest.TempPathFactory, crash_marker: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**LOOPBACK, "SPIRAL_TEST_CRASH_MARKER": str(crash_marker)}.items():
            patch.setenv(name, value)
        ray.init(num_cpus=4, _temp_dir=str(tmp_path_factory.mktemp("ray")), include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


def config_for(model: Path, output: Path, learners: int = 1, generators: int = 1, **overrides: object):
    settings = {
        "model.path": str(model),
        "generator.backend": "transformers",
        "generator.sleep_while_learning": "false",
        "games": "[{id: KuhnPoker-v1, env_kwargs: {rounds: 1}}]",
        "steps": 2,
        "samples_per_step": 16,
        "concurrency": 16,
        "eval.every": 0,
        "warm_start.steps": 0,
        "learner.learning_rate": 1e-3,
        "learner.minibatches": 2,
        "learner.micro_batch_size": 4,
        "learner.gradient_checkpointing": "false",
        "rae.drop_zero_advantage": "false",
        "tensorboard": "false",
        "output_dir": str(output),
        "cluster.learners": learners,
        "cluster.generators": generators,
        "cluster.gpus_per_learner": 0,
        "cluster.gpus_per_generator": 0,
        "cluster.cpus_per_worker": 0.5,
        **overrides,
    }
    return load_config("configs/cpu-demo.yaml", [f"{key}={value}" for key, value in settings.items()])


def record_games(trainer) -> list[tuple[list, list]]:
    """From now on, each step's (episode, turn, tokens, reward) of every turn and its games."""
    seen: list[tuple[list, list]] = []
    play = trainer._play

    def recording(*plan):
        games = play(*plan)
        seen.append(
            (
                [(s.episode, s.turn, tuple(s.response_token_ids), s.reward) for s in games.samples],
                sorted((g.seed, tuple(sorted(g.rewards.items()))) for g in games.games),
            )
        )
        return games

    trainer._play = recording
    return seen


def learner_weights(trainer) -> dict[str, torch.Tensor]:
    """The learners' full weights (rank 0's gathered state), fetched here."""
    state = trainer.learners.first_ref("generator_state")
    return ray.get(state) if isinstance(state, ray.ObjectRef) else {k: v.detach().cpu().clone() for k, v in state.items()}


def initial_weights(model: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).state_dict()


def sampler_matches_learner(trainer, step: int) -> None:
    """Every generator's sampling log-probs equal a teacher-forced forward of the learners'
    weights (loaded into a fresh transformers model here)."""
    from transformers import AutoModelForCausalLM

    from spiral_train.learner import pack, token_logprobs

    model = AutoModelForCausalLM.from_pretrained(trainer.config.model.path, dtype=torch.float32)
    model.load_state_dict(learner_weights(trainer), strict=False)
    for played in trainer.generators.call_each("play", [(step, [7, 8])] * len(trainer.generators)):
        samples = [s for s in played.samples if s.response_token_ids]
        batch = pack(samples, [0.0] * len(samples), pad_id=0)
        with torch.no_grad():
            forward = token_logprobs(model, batch)
        sampled = batch.sampler_logprobs
        assert torch.allclose(forward[batch.mask.bool()], sampled[batch.mask.bool()], atol=1e-4)


# --- configuration errors, before anything starts -------------------------------------------------


def test_bad_cluster_settings_are_config_errors_before_anything_starts(tiny_qwen3: Path, tmp_path: Path) -> None:
    from spiral_train.cluster import preflight

    gpus = {"cluster.gpus_per_learner": 1, "cluster.gpus_per_generator": 1}
    with pytest.raises(ConfigError, match=r"cluster: needs 3 GPUs .* this machine has 0"):
        preflight(config_for(tiny_qwen3, tmp_path, 1, 2, **gpus))
    with pytest.raises(ConfigError, match=r"cluster.address: cannot reach a Ray head at 127.0.0.1:1"):
        preflight(config_for(tiny_qwen3, tmp_path, **{"cluster.address": "127.0.0.1:1"}))
    with pytest.raises(ConfigError, match=r"cluster.address: expected host:port"):
        preflight(config_for(tiny_qwen3, tmp_path, **{"cluster.address": "nowhere"}))
    with pytest.raises(ConfigError, match=r"cluster.colocate: .*generators \(1\) must equal learners \(2\)"):
        config_for(tiny_qwen3, tmp_path, 2, 1, **{"cluster.colocate": "true"})
    with pytest.raises(ConfigError, match=r"cluster.generators: a vllm-server generator"):
        config_for(tiny_qwen3, tmp_path, 1, 2, **{"generator.backend": "vllm-server", "generator.base_url": "http://127.0.0.1:1/v1"})


# --- one generator more than one process ----------------------------------------------------------


@pytest.mark.slow
def test_two_learners_and_two_generators_compute_what_one_process_computes(tiny_qwen3: Path, tmp_path: Path, ray_session: None) -> None:
    """The same games (seeds, every token, outcomes) and, after 2 updates of 2 optimizer steps
    each, the same weights up to float32 rounding: two ranks sum their halves of each
    mini-batch's gradient in another order than one rank does (~1e-7 relative). Where the two
    halves nearly cancel, that rounding is a large part of the small gradient left, and Adam's
    step ``lr * m / (sqrt(v) + eps)`` does not shrink with the gradient: such entries move by a
    different fraction of the learning rate. Seen here: at most 9e-6 with lr 1e-3 (weights move
    by up to 8e-3); the bound is 5e-5, 5 % of one step at this learning rate."""
    from spiral_train.trainer import Trainer

    with Trainer(config_for(tiny_qwen3, tmp_path / "one")) as one:
        alone = record_games(one)
        one.step()
        one.step()
        alone_weights = learner_weights(one)
    with Trainer(config_for(tiny_qwen3, tmp_path / "ray", 2, 2)) as spread:
        assert spread.workers.distributed
        shared = record_games(spread)
        for step in range(2):
            spread.step()
            sampler_matches_learner(spread, step + 5)
            if step == 0:
                two_rank_checkpoint = spread.save()
        spread_weights = learner_weights(spread)
    assert shared == alone  # the same games, turn by turn, token by token
    assert spread_weights.keys() == alone_weights.keys()
    moved = max((alone_weights[k] - v).abs().max().item() for k, v in initial_weights(tiny_qwen3).items())
    assert moved > 4e-3
    assert largest_difference(spread_weights, alone_weights) <= 5e-5

    # the 2-rank checkpoint of step 1 resumes in one process (DCP reshards) and goes on alike
    with Trainer(config_for(tiny_qwen3, tmp_path / "ray")) as resumed:
        resumed.resume(two_rank_checkpoint)
        assert not resumed.workers.distributed and resumed.step_index == 1
        resumed_games = record_games(resumed)
        resumed.step()
        assert resumed_games == alone[1:]
        assert largest_difference(learner_weights(resumed), alone_weights) <= 5e-5


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - v).abs().max().item() for k, v in b.items())


@pytest.mark.slow
def test_a_generator_that_dies_mid_step_voids_only_its_games(tiny_qwen3: Path, tmp_path: Path, ray_session: None, crash_marker: Path) -> None:
    from spiral_train.trainer import Trainer

    config = config_for(tiny_qwen3, tmp_path, 1, 2, imports="[tests.crashing_game]", games="[{id: CrashingKuhnPoker-v1, env_kwargs: {rounds: 1}}]")
    with Trainer(config) as trainer:
        first = trainer.generators.call("ping")
        crash_marker.touch()
        metrics = trainer.step()
        assert not crash_marker.exists()  # a generator dealt after it appeared, and died
        assert metrics["generator_failures"] == 1 and metrics["void_games"] > 0
        assert metrics["samples"] >= 16  # a further round made up the lost games' turns
        second = trainer.generators.call("ping")
        assert len(set(first) & set(second)) == 1  # Ray restarted the dead one in a new process
        sampler_matches_learner(trainer, 1)  # and it got the current weights first
        after = trainer.step()
        assert after["generator_failures"] == 1 and after["void_games"] == 0


@pytest.mark.slow
def test_two_learners_and_two_vllm_cpu_generators_train_two_steps(tiny_qwen3: Path, tmp_path: Path, ray_session: None) -> None:
    from spiral_train.trainer import Trainer

    config = config_for(tiny_qwen3, tmp_path, 2, 2, **{"generator.backend": "vllm", "generator.max_model_len": 1024})
    with Trainer(config) as trainer:
        history = trainer.train(progress=False, log=lambda line: None)
        assert [m["step"] for m in history] == [1, 2]
        assert all(m["samples"] >= 16 and m["weight_sync_bytes"] > 0 and m["void_games"] == 0 for m in history)
        sampler_matches_learner(trainer, 3)  # vLLM's sampling log-probs after the last sync


def _cli(output: Path, model: Path, *extra: str) -> list[str]:
    settings = {
        "model.path": model, "output_dir": output, "steps": 4, "samples_per_step": 16, "concurrency": 16, "eval.every": 0,
        "warm_start.steps": 0, "checkpoint.every": 1, "checkpoint.keep_last": 5, "tensorboard": "false", "cluster.generators": 2,
        "cluster.gpus_per_learner": 0, "cluster.gpus_per_generator": 0, "cluster.cpus_per_worker": 0.5,
    }
    spiral_train = Path(sys.executable).with_name("spiral-train")
    return [str(spiral_train), "--config", "configs/cpu-demo.yaml", "--quiet", *(f"{k}={v}" for k, v in settings.items()), *extra]


def _kill_after_steps(command: list[str], metrics: Path, steps: int, delay: float) -> None:
    """Start ``command``; once ``metrics`` holds ``steps`` lines, wait ``delay`` s and SIGKILL
    the driver, then the Ray processes it started (they share its fate, most of them at once)."""
    import psutil

    env = {**os.environ, **LOOPBACK}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while (not metrics.exists() or len(metrics.read_text().splitlines()) < steps) and driver.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.2)
    time.sleep(delay)
    children = psutil.Process(driver.pid).children(recursive=True) if driver.poll() is None else []
    driver.kill()
    driver.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    for process in alive:
        process.kill()


@pytest.mark.slow
def test_a_driver_killed_at_random_moments_resumes_to_the_uninterrupted_run(tiny_qwen3: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from spiral_train.export import export_checkpoint

    clean, killed = tmp_path / "clean", tmp_path / "killed"
    env = {**os.environ, **LOOPBACK}
    subprocess.run(_cli(clean, tiny_qwen3), env=env, check=True, capture_output=True)
    rng = random.Random(5)
    for steps in (1, 2):  # a kill after the first step's metrics and one after the second's, at random moments
        _kill_after_steps(_cli(killed, tiny_qwen3, "--resume"), killed / "metrics.jsonl", steps, rng.uniform(0.0, 1.5))
    done = subprocess.run(_cli(killed, tiny_qwen3, "--resume"), check=False, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from step" in done.stderr
    logged = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]  # each step once, whatever was cut short
    weights = []
    for run in (clean, killed):
        export_checkpoint(run, run / "exported")
        weights.append(AutoModelForCausalLM.from_pretrained(run / "exported").state_dict())
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=0, atol=0)  # the same updates exactly


@pytest.mark.slow
def test_colocated_workers_train_and_a_dead_learner_rank_stops_the_run_with_continue_with_resume(tiny_qwen3: Path, tmp_path: Path, ray_session: None) -> None:
    from spiral_train.cluster import WorkerFailure
    from spiral_train.trainer import Trainer

    with Trainer(config_for(tiny_qwen3, tmp_path, 2, 2, **{"cluster.colocate": "true"})) as trainer:
        assert trainer.step()["samples"] >= 16  # colocated: rank i and generator i share bundle i
        ray.kill(trainer.learners.actors[1])  # rank 0 alone would wait in its collectives forever
        with pytest.raises(WorkerFailure, match=r"(?s)learner rank 1 failed during update: .*Step 2 was not applied; continue with --resume"):
            trainer.train(progress=False, log=lambda line: None)
