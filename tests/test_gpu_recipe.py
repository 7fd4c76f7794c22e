"""What the GPU recipe relies on, checked on the CPU: LoRA weights built out of place, exactly
samples_per_step turns a step, turns that stop at <|im_end|>, the generator's sleep and wake
order (in process and on a vLLM server), the KL reference, GPU checkpoints loading on the CPU."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from spiral_train.config import load_config
from tests.test_train_core import S
from tests.test_train_run import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
from tests.helpers import serving


def trainer_for(model: Path, output: Path, **extra: object):
    from spiral_train.trainer import Trainer

    return Trainer(load_config(None, tiny_overrides(model, output, **extra)))


def lora_model(path: Path, dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))


# --- LoRA weights for the generator -----------------------------------------------------------


def test_lora_weights_are_merged_out_of_place_and_the_base_never_drifts(tiny_qwen3: Path) -> None:
    from spiral_train.model import generator_weights

    model = lora_model(tiny_qwen3)
    base = {k: v.clone() for k, v in model.get_base_model().state_dict().items() if "lora_" not in k}
    layer = model.base_model.model.model.layers[0].mlp.down_proj
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):  # a slowly growing adapter, synced after every update
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.add_(torch.randn(parameter.shape, generator=generator) * 1e-4)
        sent = generator_weights(model)
    after = {k: v for k, v in model.get_base_model().state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base[k], after[k]) for k in base)  # bit-identical frozen base
    exact = (layer.base_layer.weight.float() + layer.get_delta_weight("default").float()).to(torch.bfloat16)
    assert torch.equal(sent["model.layers.0.mlp.down_proj.weight"], exact)  # one rounding
    from transformers import AutoModelForCausalLM

    assert set(sent) == set(AutoModelForCausalLM.from_pretrained(tiny_qwen3).state_dict())  # the base's names


# --- samples per step ------------------------------------------------------------------------


def _trained(trainer) -> list[list[tuple[int, int]]]:
    """Record (episode, turn) of every sample each update trains on."""
    seen: list[list[tuple[int, int]]] = []
    update = trainer.learners.workers[0].learner.update

    def recording(samples, advantages):
        seen.append([(s.episode, s.turn) for s in samples])
        return update(samples, advantages)

    trainer.learners.workers[0].learner.update = recording
    return seen


def test_each_step_trains_exactly_samples_per_step_turns_drawn_by_the_seed(tiny_qwen3: Path, tmp_path: Path) -> None:
    # retries: the untrained model's invalid moves do not end its games at once, so they last
    # several turns and the step's games hold more turns than the 9 it trains on
    settings = {"rae.drop_zero_advantage": "false", "samples_per_step": 9, "concurrency": 16, "rewards.invalid_move.retries": 3}
    runs = []
    for name in ("a", "b"):
        trainer = trainer_for(tiny_qwen3, tmp_path / name, **settings)
        seen = _trained(trainer)
        metrics = [trainer.step(), trainer.step()]
        runs.append(seen)
    assert all(m["samples"] >= 10 and m["trained_samples"] == 9 for m in metrics)
    assert [len(batch) for batch in runs[0]] == [9, 9] and runs[0] == runs[1]
    assert runs[0][0] != runs[0][1]
    everything = trainer_for(tiny_qwen3, tmp_path / "all", train_all_turns="true", **settings)
    metrics = everything.step()
    assert metrics["trained_samples"] == metrics["samples"] >= 10


# --- stop tokens -----------------------------------------------------------------------------


def test_a_policy_turn_stops_at_im_end_whatever_the_generation_config_says(tiny_qwen3: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    # Qwen3 base models' generation_config.json names only <|endoftext|>: a model set up so
    model = Path(shutil.copytree(tiny_qwen3, tmp_path / "base-like"))
    tokenizer = AutoTokenizer.from_pretrained(model)
    end_of_text, im_end = (tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>"))
    for name, key, value in (("tokenizer_config.json", "eos_token", "<|endoftext|>"), ("generation_config.json", "eos_token_id", [end_of_text])):
        settings = json.loads((model / name).read_text())
        settings[key] = value
        (model / name).write_text(json.dumps(settings))
    trainer = trainer_for(model, tmp_path / "run")
    assert trainer.learners.workers[0].tokenizer.eos_token_id == end_of_text and im_end not in trainer.generators.workers[0].backend.stop_ids
    assert set(trainer.generators.workers[0].policy.sampling.stop_token_ids) == {end_of_text, im_end}


def test_evaluation_seeds_its_requests_where_training_does_not(tiny_qwen3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spiral_agents.llm import agent

    trainer = trainer_for(tiny_qwen3, tmp_path, **{"eval.games": 2, "eval.game_ids": '["KuhnPoker-v1"]'})
    trainer.generators.workers[0].backend.request_seeds = False  # as VLLMBackend(request_seeds=False) has it
    seeded = []
    evaluate = agent.evaluate
    monkeypatch.setattr(agent, "evaluate", lambda *a, **kw: seeded.append(trainer.generators.workers[0].backend.request_seeds) or evaluate(*a, **kw))
    trainer.evaluate()
    assert seeded == [True] and trainer.generators.workers[0].backend.request_seeds is False


# --- sleeping while learning -------------------------------------------------------------------


def test_the_generator_sleeps_for_the_update_and_wakes_weights_before_its_kv_cache(
    tiny_qwen3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = trainer_for(tiny_qwen3, tmp_path, **{"generator.sleep_while_learning": "true"})
    calls: list[str] = []
    monkeypatch.setattr(trainer.generators.workers[0].backend, "sleep", lambda level=1: calls.append(f"sleep {level}"), raising=False)
    monkeypatch.setattr(trainer.generators.workers[0].backend, "wake_up", lambda tags=None: calls.append(f"wake {tags}"), raising=False)
    monkeypatch.setattr(trainer.learners.workers[0], "free_memory", lambda: calls.append("free"))
    update, sync = trainer.learners.workers[0].learner.update, trainer._sync_weights
    monkeypatch.setattr(trainer.learners.workers[0].learner, "update", lambda *a: calls.append("update") or update(*a))
    monkeypatch.setattr(trainer, "_sync_weights", lambda: calls.append("sync") or sync())
    trainer.step()
    assert calls == ["sleep 2", "update", "free", "wake ['weights']", "sync", "free", "wake ['kv_cache']"]


def test_a_generator_that_will_not_sleep_stops_the_run_at_the_saved_step(tiny_qwen3: Path, tmp_path: Path) -> None:
    from spiral_agents.llm.vllm_server import WeightSyncError

    trainer_for(tiny_qwen3, tmp_path, steps=1).train(progress=False, log=lambda line: None)
    resumed = trainer_for(tiny_qwen3, tmp_path, steps=2, **{"generator.sleep_while_learning": "true"})

    def refuse(level: int = 1) -> None:
        raise WeightSyncError("POST /sleep: HTTP 500")

    resumed.generators.workers[0].backend.sleep = refuse
    with pytest.raises(WeightSyncError, match="(?s)HTTP 500.*Step 1 is saved in .*step-000001"):
        resumed.train(resume=True, progress=False, log=lambda line: None)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-000001"]


class SleepServer(ThreadingHTTPServer):
    """Answers vLLM's dev-mode sleep endpoints; records each request's path and query."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, status: int = 200) -> None:
        super().__init__(("127.0.0.1", 0), SleepHandler)
        self.status = status
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class SleepHandler(BaseHTTPRequestHandler):
    server: SleepServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.server.requests.append(self.path)
        payload = json.dumps({"status": "ok"}).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def sleep_server() -> Iterator[SleepServer]:
    yield from serving(SleepServer())


def test_a_vllm_server_sleeps_and_wakes_through_its_dev_endpoints(sleep_server: SleepServer, tmp_path: Path) -> None:
    from spiral_agents.llm.vllm_server import VLLMServerBackend, WeightSyncError

    backend = VLLMServerBackend(sleep_server.url, "policy", tokenizer=None, weights_dir=tmp_path, backoff=0.01)
    backend.sleep(level=2)
    backend.sleep(level=2)  # asleep already: nothing sent
    backend.wake_up(tags=["weights"])
    backend.wake_up(tags=["weights"])  # awake already
    backend.wake_up()
    assert sleep_server.requests == ["/sleep?level=2", "/wake_up?tags=weights", "/wake_up?tags=kv_cache"]
    backend.sleep(level=1)
    backend.wake_up()
    assert sleep_server.requests[3:] == ["/sleep?level=1", "/wake_up?tags=weights&tags=kv_cache"]
    with pytest.raises(ValueError, match="sleep level"):
        backend.sleep(level=3)
    with pytest.raises(ValueError, match="wake_up tags"):
        backend.wake_up(tags=["everything"])
    sleep_server.status = 404
    with pytest.raises(WeightSyncError, match="VLLM_SERVER_DEV_MODE=1"):
        backend.sleep(level=2)


# --- the KL reference ------------------------------------------------------------------------


def test_the_kl_reference_of_lora_is_the_adapter_disabled_base(tiny_qwen3: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from spiral_train.learner import pack, token_logprobs

    trainer = trainer_for(tiny_qwen3, tmp_path, **{"model.lora_rank": 4, "learner.kl_coef": 0.1})
    reference = trainer.learners.workers[0].learner.reference
    assert reference.module is trainer.learners.workers[0].model  # no second copy of the weights
    metrics = trainer.step()
    assert metrics["kl"] >= 0 and metrics["optimizer_steps"] == 2
    batch = pack([S("g", 0, 0, 1.0, [5, 6, 7, 8], [9, 10, 11], None)], [1.0], pad_id=0)
    with torch.no_grad():
        with reference.on(torch.device("cpu")) as frozen:
            got = token_logprobs(frozen, batch)
        trained = token_logprobs(trainer.learners.workers[0].model, batch)
        expected = token_logprobs(AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.bfloat16), batch)
    assert torch.allclose(got, expected, atol=1e-5) and not torch.allclose(trained, expected, atol=1e-5)


def test_the_kl_reference_of_full_training_is_a_frozen_copy_waiting_on_the_cpu(tiny_qwen3: Path, tmp_path: Path) -> None:
    trainer = trainer_for(tiny_qwen3, tmp_path, **{"learner.kl_coef": 0.1})
    reference = trainer.learners.workers[0].learner.reference.module
    assert reference is not trainer.learners.workers[0].model and not any(p.requires_grad for p in reference.parameters())
    assert trainer.step()["kl"] >= 0
    assert {p.device.type for p in reference.parameters()} == {"cpu"}


# --- checkpoints from a GPU machine --------------------------------------------------------------


def test_weights_load_in_the_same_dtype_on_every_device() -> None:
    from spiral_train.model import load_dtype

    assert load_dtype(load_config(None, [])) == torch.float32  # trained: float32 master weights
    assert load_dtype(load_config(None, ["model.lora_rank=8"])) == torch.bfloat16  # a frozen base
    assert load_dtype(load_config(None, ["model.dtype=float16"])) == torch.float16


def test_a_checkpoint_written_on_a_gpu_in_bfloat16_loads_on_the_cpu(tiny_qwen3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spiral_train.checkpoint import TrainerState
    from spiral_train.learner import Learner, LearnerConfig
    from tests.single_process_checkpoint import load_checkpoint, save_checkpoint

    config = LearnerConfig(learning_rate=1e-3, epochs=1, normaliser=4.0, gradient_checkpointing=False)
    samples = [S("g", i, i % 2, 1.0, [5 + i, 6, 7], [8, 9 + i], None) for i in range(4)]
    saved = Learner(lora_model(tiny_qwen3), config, pad_id=0)  # bfloat16 base, float32 adapters
    saved.update(samples, [1.0, -1.0, 0.5, -0.5])
    cuda_state = torch.arange(16, dtype=torch.uint8)  # a CUDA generator's state: seed and offset
    with monkeypatch.context() as gpu:  # as saved where torch sees one GPU
        gpu.setattr(torch.cuda, "is_available", lambda: True)
        gpu.setattr(torch.cuda, "get_rng_state_all", lambda: [cuda_state])
        state = TrainerState(1, 4, 2, {"values": []}, {"steps": 2})
        path = save_checkpoint(tmp_path, state, saved.model, saved.optimizer, saved.scheduler, saved.generator)
    assert "rng.cuda.0" in json.loads((path / "training.json").read_text())["rng"]["cuda"][0].values()
    loaded = Learner(lora_model(tiny_qwen3), config, pad_id=0)
    assert load_checkpoint(path, loaded.model, loaded.optimizer, loaded.scheduler, loaded.generator) == state
    a, b = saved.model.state_dict(), loaded.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and b["base_model.model.lm_head.weight"].dtype == torch.bfloat16
    for p, q in zip(saved.parameters, loaded.parameters):
        assert all(torch.equal(saved.optimizer.state[p][k], loaded.optimizer.state[q][k]) for k in ("exp_avg", "exp_avg_sq"))
    # the next update goes on identically
    assert saved.update(samples, [1.0, -1.0, 0.5, -0.5])["loss"] == loaded.update(samples, [1.0, -1.0, 0.5, -0.5])["loss"]


# --- the GPU benchmark ---------------------------------------------------------------------------


@pytest.mark.slow
def test_the_gpu_benchmark_runs_its_checks_on_tiny_shapes() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_recipe.py", "precision", "leftpad", "lora", "padding", "memory80", "--smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    precision = [line for line in lines if line.startswith("[precision]") and "%" in line]
    assert "100.00% of weights changed" in precision[0] and "RMSNorm weights 0.00%" in precision[1]
    assert "frozen base changed in 0.0% of entries" in next(line for line in lines if line.startswith("[lora]"))
    assert "all positions finite: True; loss finite: True; grads finite: True" in next(
        line for line in lines if line.startswith("[leftpad]")
    )
