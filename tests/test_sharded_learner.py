"""The learner on 2 ranks (FSDP2 on gloo, spawned processes) makes the 1-rank update: the same
weights and metrics up to float32 summation order. Also: the generator's full weights gathered
from the shards, non-finite weights found on any rank's shard, the rank-splitting helpers."""

from __future__ import annotations

import datetime
import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spiral_train.learner import Learner, LearnerConfig, nonfinite_parameters, pack, token_logprobs
from spiral_train.model import FrozenReference, generator_weights
from spiral_train.sharding import generator_state, plan_passes, shard_model, split_by_tokens
from tests.helpers import free_port
from tests.test_train_core import S

RANKS = 2
TIMING = ("learner_seconds", "learner_tokens_per_second")

# Tolerances, measured here (torch 2.13 CPU, float32). Two ranks sum each gradient in another
# order, so gradients differ from one rank's by float32 rounding (~1e-7 of their scale). AdamW
# normalises every element's step to about the learning rate (lr), so an element whose gradient
# is at that noise level steps differently by a fraction of lr, the others by almost nothing:
# the worst weight seen differed by 0.038 lr and 0.006 % of the weights by more than 0.01 lr,
# while every tensor moved by 2 to 5 lr. Bounds: 0.25 lr and 0.1 %. The metrics (means over the
# steps) differed by at most 1.5e-5 relative (the gradient norm of the second epoch, taken at
# weights that differ as above); bound: 1e-4. Averaging the ranks' gradients instead of summing
# them halves the gradient norm; dividing a rank's loss by its share of the sequences doubles
# the loss: both far outside (seen failing, as did dropping any of the other all-reduces).
WEIGHT_MAX_LR = 0.25
WEIGHT_BEYOND_LR = (0.01, 1e-3)
"""(lr multiple, share): at most ``share`` of all the weights differ by more than that many lr."""
METRIC_RTOL = 1e-4


def turns(count: int, nan_logprob: bool = False) -> list[S]:
    """Turns of different prompt and response lengths, two of each length (so that a shuffle
    moves rows between ranks), with sampler log-probs; with ``nan_logprob`` the last one has a
    NaN inside its response (its loss is NaN)."""
    made = []
    for i in range(count):
        prompt = list(range(5 + i % 2, 8 + i % 2 + 5 * (i // 2 % 4)))
        response = list(range(40 + i, 42 + i + 3 * ((i // 2 * 7) % 5)))
        logprobs = [-0.5 - 0.1 * ((i + t) % 3) for t in range(len(response))]
        made.append(S("g", i, i % 2, 1.0, prompt, response, logprobs))
    if nan_logprob:
        made[-1].logprobs[-1] = math.nan
    return made


def advantages(count: int) -> list[float]:
    return [((i * 5) % 7 - 3) / 3 for i in range(count)]


@dataclass(frozen=True)
class Scenario:
    name: str
    config: dict[str, Any]
    count: int = 12
    lora: bool = False
    """LoRA on a float32 base: a bfloat16 one rounds activations at 4e-3, which AdamW turns into
    steps that differ by up to 2 lr (measured), so only float32 compares tightly."""
    reference: bool = False
    """A KL penalty to a separate frozen copy (LoRA: to the model with its adapters off)."""
    nan_logprob: bool = False


BASE = {"learning_rate": 1e-4, "epochs": 2, "micro_batch_size": 2, "normaliser": 8.0, "gradient_checkpointing": False}
SCENARIOS = [
    Scenario("one mini-batch: old log-probs from the first pass", {**BASE, "minibatches": 1}),
    Scenario(
        "two mini-batches, KL to a frozen copy, importance weight",
        {**BASE, "minibatches": 2, "kl_coef": 0.1, "importance_cap": 2.0},
        reference=True,
    ),
    Scenario("mini-batches of one row, fewer than the ranks; clipped", {**BASE, "minibatches": 3, "max_grad_norm": 0.05}, count=3),
    Scenario("a NaN loss on one rank's share: both skip", {**BASE, "epochs": 1, "importance_cap": 2.0}, nan_logprob=True),
    Scenario(
        "LoRA, gradient checkpointing, KL to the adapters off",
        {**BASE, "learning_rate": 1e-3, "minibatches": 2, "kl_coef": 0.1, "gradient_checkpointing": True},
        lora=True,
        reference=True,
    ),
]


def load(path: Path, lora: bool, base: torch.dtype = torch.float32, random_adapters: bool = False) -> torch.nn.Module:
    """The tiny Qwen3 in ``base`` dtype, LoRA-wrapped (float32 adapters; ``random_adapters``:
    B != 0, the same in every process) if ``lora``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=base)
    if lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        lora_config = LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=not random_adapters)
        model = get_peft_model(model, lora_config)
    return model


def full_weights(model: torch.nn.Module, sharded: bool) -> dict[str, torch.Tensor] | None:
    """All of ``model``'s weights (adapters too) on the CPU; gathered on rank 0 if sharded."""
    if not sharded:
        return {name: value.detach().clone() for name, value in model.state_dict().items()}
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if dist.get_rank() == 0 else None


def train(path: Path, scenario: Scenario, sharded: bool) -> dict[str, Any]:
    """One update of ``scenario``'s batch, on one rank or (every rank calls it) sharded."""
    model = load(path, scenario.lora)
    reference = None
    if scenario.reference:
        reference = FrozenReference(model, adapters_of=True) if scenario.lora else FrozenReference(load(path, lora=False))
    if sharded:
        model = shard_model(model)
    learner = Learner(model, LearnerConfig(**scenario.config), pad_id=0, reference=reference, seed=3)
    metrics = learner.update(turns(scenario.count, scenario.nan_logprob), advantages(scenario.count))
    return {"metrics": metrics, "streak": learner.nonfinite_streak, "weights": full_weights(model, sharded)}


def _rank_main(rank: int, port: int, work: Callable[[int], Any], out: Path) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    # a rank that misses a collective fails the test in a minute instead of hanging it
    dist.init_process_group("gloo", rank=rank, world_size=RANKS, timeout=datetime.timedelta(seconds=60))
    try:
        torch.save(work(rank), out / f"rank{rank}.pt")
        dist.barrier()  # no rank tears the group down while another still talks to it
    finally:
        dist.destroy_process_group()


def on_ranks(work: Callable[[int], Any], out: Path) -> list[Any]:
    """``work(rank)`` on each of 2 spawned gloo ranks on loopback; their results."""
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(free_port(), work, out), nprocs=RANKS)
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(RANKS)]


def _train_all(path: Path, rank: int) -> list[dict[str, Any]]:
    return [train(path, scenario, sharded=True) for scenario in SCENARIOS]


@pytest.mark.slow
def test_two_ranks_make_the_one_rank_update(tiny_qwen3: Path, tmp_path: Path) -> None:
    sharded = on_ranks(functools.partial(_train_all, tiny_qwen3), tmp_path)
    start = load(tiny_qwen3, lora=False).state_dict()
    for index, scenario in enumerate(SCENARIOS):
        one, ranks = train(tiny_qwen3, scenario, sharded=False), [sharded[0][index], sharded[1][index]]
        lr = scenario.config["learning_rate"]
        for result in ranks:  # every rank reports the global numbers and decided alike
            assert result["streak"] == one["streak"], scenario.name
            for key, value in one["metrics"].items():
                if key not in (*TIMING, "learner_padding"):
                    got = result["metrics"][key]
                    assert got == pytest.approx(value, rel=METRIC_RTOL, abs=1e-9, nan_ok=True), (scenario.name, key)
            assert 0 <= result["metrics"]["learner_padding"] < 1  # all ranks' passes, all tokens
        assert ranks[0]["metrics"]["learner_padding"] == ranks[1]["metrics"]["learner_padding"]
        gathered = ranks[0]["weights"]
        assert gathered.keys() == one["weights"].keys() and ranks[1]["weights"] is None
        diffs = {name: (gathered[name].float() - value.float()).abs() / lr for name, value in one["weights"].items()}
        worst = max(diffs, key=lambda name: float(diffs[name].max()))
        assert float(diffs[worst].max()) <= WEIGHT_MAX_LR, (scenario.name, worst, float(diffs[worst].max()))
        beyond, share = WEIGHT_BEYOND_LR
        beyond_share = sum(int((d > beyond).sum()) for d in diffs.values()) / sum(d.numel() for d in diffs.values())
        assert beyond_share <= share, (scenario.name, beyond_share)
        if not scenario.lora and not scenario.nan_logprob:  # the comparison is not vacuous
            assert min(float((one["weights"][n] - start[n]).abs().max()) for n in start) > 1.5 * lr


def _shards(path: Path, rank: int) -> dict[str, Any]:
    """On each rank: the generator's weights (plain and LoRA on a bfloat16 base), the LoRA
    model's log-probs of a batch (one FSDP group all-gathers bfloat16 and float32), then a NaN
    in one element of rank 1's shard and what each rank's nonfinite_parameters says, then an
    update given other advantages on each rank."""
    plain = shard_model(load(path, lora=False))
    lora = shard_model(load(path, lora=True, base=torch.bfloat16, random_adapters=True))
    with torch.no_grad():
        logprobs = token_logprobs(lora.eval(), pack(turns(5), advantages(5), pad_id=0))
    seen = {"plain": generator_state(plain), "lora": generator_state(lora), "logprobs": logprobs}
    seen["clean"] = nonfinite_parameters(plain)
    if rank == 1:
        with torch.no_grad():
            dict(plain.named_parameters())["model.layers.1.mlp.up_proj.weight"].to_local()[0, 0] = math.nan
    seen["poisoned"] = nonfinite_parameters(plain)
    learner = Learner(shard_model(load(path, lora=False)), LearnerConfig(**BASE), pad_id=0)
    try:
        learner.update(turns(4), [1.0, -1.0, 0.5, 0.5 + rank])
    except RuntimeError as error:
        seen["different batches"] = str(error)
    return seen


@pytest.mark.slow
def test_generator_state_nonfinite_weights_and_different_batches_on_two_ranks(
    tiny_qwen3: Path, tmp_path: Path
) -> None:
    ranks = on_ranks(functools.partial(_shards, tiny_qwen3), tmp_path)
    for kind, lora in (("plain", False), ("lora", True)):
        model = load(tiny_qwen3, lora, base=torch.bfloat16 if lora else torch.float32, random_adapters=True)
        expected = generator_weights(model)
        got = ranks[0][kind]
        assert ranks[1][kind] is None and got.keys() == expected.keys()
        assert not lora or any("q_proj" in name for name in got) and not any("lora_" in name for name in got)
        for name, value in expected.items():  # gathered exactly, LoRA merged exactly alike
            assert got[name].device.type == "cpu" and torch.equal(got[name], value), (kind, name)
    with torch.no_grad():
        expected = token_logprobs(model.eval(), pack(turns(5), advantages(5), pad_id=0))
    for seen in ranks:  # the same computation, whole batch on each rank: the same numbers
        torch.testing.assert_close(seen["logprobs"], expected, rtol=0, atol=0)
    assert ranks[0]["clean"] == ranks[1]["clean"] == []
    assert ranks[0]["poisoned"] == ranks[1]["poisoned"] == ["model.layers.1.mlp.up_proj.weight"]
    for seen in ranks:  # every rank stops before its first pass, with the same message
        assert "ranks' advantages differ" in seen["different batches"]


def test_generator_state_of_an_unsharded_model_is_its_generator_weights(tiny_qwen3: Path) -> None:
    model = load(tiny_qwen3, lora=True, base=torch.bfloat16, random_adapters=True)
    got, expected = generator_state(model), generator_weights(model)
    assert got.keys() == expected.keys() and all(torch.equal(got[n], expected[n]) for n in expected)


def _longest_first(size: int) -> Callable[[Sequence[int], Sequence[int]], list[list[int]]]:
    def cut(rows: Sequence[int], lengths: Sequence[int]) -> list[list[int]]:
        order = sorted(rows, key=lambda r: -lengths[r])
        return [order[i : i + size] for i in range(0, len(order), size)]

    return cut


@given(lengths=st.lists(st.integers(1, 50), min_size=1, max_size=30), ranks=st.integers(1, 4), size=st.integers(1, 4))
def test_every_rank_runs_as_many_passes_over_a_balanced_partition_of_the_rows(lengths: list[int], ranks: int, size: int) -> None:
    rows = list(range(len(lengths)))[::-1]
    shares = split_by_tokens(rows, lengths, ranks)
    assert sorted(r for share in shares for r in share) == sorted(rows)
    assert all(share == [r for r in rows if r in share] for share in shares)  # the rows' order
    loads = [sum(lengths[r] for r in share) for share in shares]
    assert max(loads) - min(loads) <= max(lengths)  # longest first to the least loaded
    cut = _longest_first(size)
    plans = [plan_passes(rows, lengths, cut, rank, ranks) for rank in range(ranks)]
    assert len({plan.passes for plan in plans}) == 1 and len({plan.padded_tokens for plan in plans}) == 1
    own = [r for plan in plans for batch, mine in plan if mine for r in batch]
    assert sorted(own) == sorted(rows)
    extra = [batch for plan in plans for batch, mine in plan if not mine]
    shortest = min(lengths)
    assert all(len(batch) == 1 and lengths[batch[0]] == shortest for batch in extra)
    assert plans[0].padded_tokens == sum(len(b) * max(lengths[r] for r in b) for share in shares for b in cut(share, lengths))
    if ranks == 1:  # one rank: exactly the micro-batches of all the rows, no extra pass
        assert plans[0].micro_batches == cut(rows, lengths) and plans[0].passes == len(cut(rows, lengths))
