"""The learner on N ranks: the model sharded with torch FSDP2, each mini-batch's rows split
across the ranks, and the full weights a generator needs gathered on rank 0.

Every rank holds the same samples and the same shuffle; each trains its share of a mini-batch
(balanced by tokens) and the gradients are summed across ranks, so N ranks make one rank's
update up to float rounding. FSDP2's collectives need every rank to run the same passes: a rank
with fewer micro-batches runs extra ones whose loss mask is all zero (:class:`RankPlan`).

The controller starts one process per rank, each with the default process group initialised
(gloo on the CPU, NCCL on GPUs with the rank's GPU as the current device), loads the model,
calls :func:`shard_model` and then builds its :class:`spiral_train.learner.Learner` on it.
Collective calls that every rank must make, in the same order: ``Learner.update``,
:func:`generator_state`, ``spiral_train.learner.nonfinite_parameters``.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

if TYPE_CHECKING:
    from spiral_train.learner import Batch

SHARDED_FORWARD = "sharded_token_logprobs"
"""The method :func:`shard_model` gives the model: the learner's log-prob pass (decoder, then
the output layer in chunks, not ``model.forward``) run as an FSDP forward of the root."""


def shard_model(model: torch.nn.Module, bf16: bool = True) -> torch.nn.Module:
    """Shard ``model`` in place over the default process group and return it: FSDP2
    ``fully_shard`` on each decoder layer, then on the root (a HF causal LM, LoRA-wrapped or not).

    Trained parameters become float32 master weights first. On CUDA with ``bf16`` the passes
    compute in bfloat16 and gradients are reduced in float32 (the learner's single-process
    recipe); on the CPU everything stays float32. Gradients are summed across ranks, not
    averaged: the learner divides each rank's loss by the global mini-batch's sequence count.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import (
        FSDPModule,
        MixedPrecisionPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )

    from spiral_train.model import upcast_trained

    if not dist.is_initialized():
        raise RuntimeError("shard_model needs torch.distributed's default process group initialised on every rank")
    upcast_trained(model)
    device = next(model.parameters()).device
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    bfloat16 = bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported()
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bfloat16 else MixedPrecisionPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            # Sum, not FSDP's default mean over ranks: a divide factor of 1 with plain sums.
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)
    setattr(model, SHARDED_FORWARD, functools.partial(_root_forward, model))
    register_fsdp_forward_method(model, SHARDED_FORWARD)
    return model


def _root_forward(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    from spiral_train.learner import decoder_logprobs  # the learner imports this module

    # A fresh tensor, not a view of one: FSDP hooks the root's backward onto it.
    return decoder_logprobs(model, batch).clone()


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers of a causal LM: the one ``ModuleList`` under ``get_decoder()``."""
    decoder = model.get_decoder()
    lists = [child for child in decoder.children() if isinstance(child, torch.nn.ModuleList)]
    if len(lists) != 1:
        raise TypeError(f"{type(decoder).__name__} has {len(lists)} ModuleLists; sharding needs exactly one of decoder layers")
    return list(lists[0])


def shard_group(model: torch.nn.Module) -> dist.ProcessGroup | None:
    """The process group ``model``'s parameters are sharded over; None if it is not sharded."""
    for parameter in model.parameters():
        if isinstance(parameter, DTensor):
            return parameter.device_mesh.get_group()
    return None


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a sharded tensor; any other tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def split_by_tokens(rows: Sequence[int], lengths: Sequence[int], ranks: int) -> list[list[int]]:
    """``rows`` split into ``ranks`` shares of about equal tokens (``lengths[row]`` each):
    longest first to the least-loaded rank (the lowest on a tie); each share keeps the order of
    ``rows``. Deterministic, so every rank computes every rank's share."""
    loads = [0] * ranks
    owner: dict[int, int] = {}
    for row in sorted(rows, key=lambda r: -lengths[r]):
        rank = min(range(ranks), key=lambda k: loads[k])
        owner[row] = rank
        loads[rank] += lengths[row]
    return [[row for row in rows if owner[row] == rank] for rank in range(ranks)]


@dataclass(frozen=True)
class RankPlan:
    """The passes one rank runs over some rows (a mini-batch, or a whole batch of log-probs)."""

    micro_batches: list[list[int]]
    """This rank's share of the rows, cut into micro-batches."""
    passes: int
    """Passes every rank runs: the most micro-batches of any rank."""
    filler: int
    """The row the extra passes pack, with its loss mask zeroed (no loss, no gradient)."""
    padded_tokens: int
    """Tokens (rows x the longest) of all ranks' micro-batches, padding included."""

    def __iter__(self) -> Iterator[tuple[list[int], bool]]:
        """Each pass's rows and whether it is one of this rank's (False: an extra pass)."""
        for index in range(self.passes):
            if index < len(self.micro_batches):
                yield self.micro_batches[index], True
            else:
                yield [self.filler], False


def plan_passes(
    rows: Sequence[int],
    lengths: Sequence[int],
    micro_batches: Callable[[Sequence[int], Sequence[int]], list[list[int]]],
    rank: int = 0,
    ranks: int = 1,
) -> RankPlan:
    """Rank ``rank``'s passes over ``rows`` split :func:`split_by_tokens` across ``ranks``,
    each share cut by ``micro_batches(share, lengths)``. One rank: all of ``rows``, no extra
    passes."""
    rows = list(rows)
    shares = split_by_tokens(rows, lengths, ranks) if ranks > 1 else [rows]
    plans = [micro_batches(share, lengths) for share in shares]
    padded = sum(len(batch) * max(lengths[row] for row in batch) for plan in plans for batch in plan)
    filler = min(rows, key=lambda row: lengths[row])
    return RankPlan(plans[rank], max(len(plan) for plan in plans), filler, padded)


def clip_gradients(parameters: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale the gradients of ``parameters`` to a total norm of at most ``max_norm``, the norm
    over all ranks' shards when they are sharded; returns that norm (a plain 0-dim tensor)."""
    norm = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
    if isinstance(norm, DTensor):  # already reduced over the shards (replicated): as a tensor
        norm = norm.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return norm


def check_same_batch(
    lengths: Sequence[int], advantages: Sequence[float], generator: torch.Generator, group: dist.ProcessGroup, device: torch.device
) -> None:
    """Raise on every rank of ``group`` unless all got the same batch (token counts and
    advantages) and hold the same shuffling generator: otherwise they would train on rows
    that do not add up, or wait for each other's collectives forever."""
    parts = {
        "token counts": torch.tensor(lengths, dtype=torch.int64),
        "advantages": torch.tensor(advantages, dtype=torch.float64),
        "shuffle generator states": generator.get_state(),
    }
    mine = torch.tensor([zlib.crc32(part.numpy().tobytes()) for part in parts.values()], device=device)
    extremes = torch.cat([mine, -mine])
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX, group=group)
    differ = [name for name, high, low in zip(parts, extremes[: len(parts)].tolist(), extremes[len(parts) :].tolist()) if high != -low]
    if differ:
        raise RuntimeError(f"the ranks' {' and '.join(differ)} differ: every rank's learner must get the same samples and advantages")


def all_reduce_sum(tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """``tensor`` summed in place across ``group`` (nothing to do without one)."""
    if group is not None and dist.get_world_size(group) > 1:
        dist.all_reduce(tensor, group=group)
    return tensor


@torch.no_grad()
def generator_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The full weights a generator needs, on the CPU, under the base model's names, LoRA
    merged out of place as :func:`spiral_train.model.generator_weights` does.

    A sharded model's state is gathered once (a collective: every rank calls this) and only
    rank 0 gets it; other ranks get None. An unsharded model's weights are returned on any
    rank, without a collective."""
    from spiral_train.model import generator_weights, is_lora

    if shard_group(model) is None:
        return {name: tensor.cpu() for name, tensor in generator_weights(model).items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    if not is_lora(model):
        return state
    return _merged_lora(model, state)


def _merged_lora(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (the full state of a peft model, under the root's names) as the base model's
    weights with each LoRA layer's ``(W.float() + scaling * B @ A).to(W.dtype)``."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import transpose

    base = model.get_base_model()
    prefix = next(name for name, module in model.named_modules() if module is base)
    prefix = f"{prefix}." if prefix else ""
    weights = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    for name, module in base.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if not isinstance(module, LoraLinear):
            raise TypeError(f"generator_state merges LoRA on Linear layers only; {name} is a {type(module).__name__}")
        key = f"{name}.base_layer.weight"
        total = weights[key].float()
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                down = weights[f"{name}.lora_A.{adapter}.weight"].float()
                up = weights[f"{name}.lora_B.{adapter}.weight"].float()
                total = total + transpose(up @ down, module.fan_in_fan_out) * module.scaling[adapter]
        weights[key] = total.to(weights[key].dtype)
    return {key.replace(".base_layer", ""): value for key, value in weights.items() if "lora_" not in key}
