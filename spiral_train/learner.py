"""The learner: PPO updates of a causal LM on turn samples (prompt tokens carry no loss).

Old log-probs are recomputed by the learner before the first update of a batch; each epoch
walks the batch in shuffled mini-batches, each one optimizer step, accumulated over
micro-batches. The loss core is :func:`spiral_train.loss.policy_loss`.

Precision: trained weights and AdamW's states are float32 (master weights: a parameter loaded
in bfloat16 or float16 is upcast when the learner takes the model), and on CUDA the passes run
in bfloat16 under autocast (``bf16``). At SPIRAL's learning rate of 1e-6 an update is about 1 %
of a bfloat16 weight's spacing, so bfloat16 weights stepped in place would keep almost none of
it; this is what DeepSpeed's bf16 mode, which SPIRAL trains with, does too. It costs 16 bytes a
trained parameter (weight, gradient, two moments): 60 GiB for Qwen3-4B.

Speed and memory: a mini-batch is sorted by length and cut into micro-batches of at most
``micro_batch_size`` sequences and ``micro_batch_tokens`` padded tokens, each padded only to
its own longest sample. The output layer runs over chunks of :data:`LOGPROB_CHUNK` positions,
each recomputed in the backward pass, so no full-vocabulary logits of a whole micro-batch are
kept. Statistics stay on the device: one host sync per optimizer step.

On N ranks (a model sharded by :func:`spiral_train.sharding.shard_model`) every rank gets the
same batch and shuffles it alike; each trains its share of every mini-batch and the gradients,
log-probs and statistics are summed across ranks, so the update is one rank's up to float
rounding (see :mod:`spiral_train.sharding`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch.utils.checkpoint import checkpoint

from spiral_train.loss import LossConfig, check_range, policy_loss
from spiral_train.model import upcast_trained
from spiral_train.sharding import (
    SHARDED_FORWARD,
    RankPlan,
    all_reduce_sum,
    check_same_batch,
    clip_gradients,
    local,
    plan_passes,
    shard_group,
)

if TYPE_CHECKING:
    from spiral_train.model import FrozenReference

LOGPROB_CHUNK = 1024
"""Positions whose full-vocabulary logits exist at once (Qwen3: 0.6 GiB in float32)."""


@dataclass(frozen=True)
class LearnerConfig(LossConfig):
    """The optimizer's and the loss's settings (the ``learner`` section of a training config)."""

    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW's betas (SPIRAL, through oat: 0.9 and 0.95)."""
    warmup_steps: int = 0
    """Optimizer steps over which the learning rate rises linearly to its value."""
    epochs: int = 2
    minibatches: int = 1
    """Optimizer steps per epoch (the batch is split into this many mini-batches)."""
    micro_batch_size: int = 4
    """Most sequences per forward/backward pass (gradient accumulation over the mini-batch)."""
    micro_batch_tokens: int = 0
    """Most padded tokens (sequences x the longest) per forward/backward pass; 0 = no limit.
    A sample longer than this goes alone."""
    max_grad_norm: float = 1.0
    max_nonfinite_steps: int = 3
    """Optimizer steps in a row with a non-finite loss or gradient norm (each one skipped) that
    stop the run."""
    bf16: bool = True
    """bfloat16 autocast where the device supports it (CUDA); CPU runs float32."""
    gradient_checkpointing: bool = True
    kl_reference_every: int = 0
    """0: the KL penalty (``kl_coef``) pulls toward the policy self-play started from (after
    the warm start). N: the reference becomes the current policy every N steps, a moving anchor
    as in magnetic mirror descent and R-NaD: each stretch solves a game regularised toward the
    last anchor, whose solution moves toward the equilibrium instead of cycling around it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("learning_rate", self.learning_rate, self.learning_rate > 0, "must be positive")
        check_range("weight_decay", self.weight_decay, self.weight_decay >= 0, "must be >= 0")
        if len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers, got {self.betas!r}")
        for beta in self.betas:
            check_range("betas", beta, 0 <= beta < 1, "must lie in [0, 1)")
        check_range("max_grad_norm", self.max_grad_norm, self.max_grad_norm > 0, "must be positive")
        for name in ("warmup_steps", "epochs", "minibatches", "micro_batch_size", "micro_batch_tokens", "max_nonfinite_steps", "kl_reference_every"):
            value = getattr(self, name)
            low = 0 if name in ("warmup_steps", "micro_batch_tokens", "kl_reference_every") else 1
            check_range(name, value, isinstance(value, int) and value >= low, f"must be an integer >= {low}")


class NonFiniteError(RuntimeError):
    """Training produced NaN or infinity where the run cannot go on."""


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``model`` that hold NaN or infinity. A sharded
    model's answer covers all ranks' shards and is the same on every rank (a collective)."""
    tensors = [(name, t) for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_floating_point()]
    group = shard_group(model)
    if group is None:
        return [name for name, t in tensors if not bool(torch.isfinite(t).all())]
    flags = torch.stack([(~torch.isfinite(local(t))).any() for _, t in tensors]).to(torch.int32)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=group)
    return [name for (name, _), bad in zip(tensors, flags.tolist()) if bad]


@dataclass
class Batch:
    """Left-padded prompt+response tokens, so that every response ends at the last column.

    The loss only needs the last ``width`` predictions: ``targets`` [batch, width] are the
    last ``width`` tokens; ``mask`` marks which of them are response tokens (prompt tokens
    carry no loss); ``advantages`` and ``sampler_logprobs`` are aligned with ``targets``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mask: torch.Tensor
    advantages: torch.Tensor
    sampler_logprobs: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    @property
    def targets(self) -> torch.Tensor:
        return self.input_ids[:, -self.width :]

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.input_ids, self.attention_mask, self.mask, self.advantages, self.sampler_logprobs)


def pack(samples: Sequence[Any], advantages: Sequence[float], pad_id: int) -> Batch:
    """Pack turn samples (with ``prompt_token_ids``, ``response_token_ids`` and optional
    ``logprobs``) into a left-padded :class:`Batch`."""
    lengths = [len(s.prompt_token_ids) + len(s.response_token_ids) for s in samples]
    length = max(lengths)
    width = max(len(s.response_token_ids) for s in samples)
    n = len(samples)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.long)
    mask = torch.zeros((n, width))
    adv = torch.zeros((n, width))
    sampler = torch.zeros((n, width))
    for i, (sample, advantage) in enumerate(zip(samples, advantages)):
        tokens = list(sample.prompt_token_ids) + list(sample.response_token_ids)
        input_ids[i, length - len(tokens) :] = torch.tensor(tokens)
        attention[i, length - len(tokens) :] = 1
        r = len(sample.response_token_ids)
        mask[i, width - r :] = 1
        adv[i, width - r :] = advantage
        if sample.logprobs is not None:
            sampler[i, width - r :] = torch.tensor(sample.logprobs, dtype=torch.float32)
    return Batch(input_ids, attention, mask, adv, sampler)


def token_logprobs(model: torch.nn.Module, batch: Batch, entropy: bool = False) -> torch.Tensor:
    """Log-probs of ``batch.targets`` under ``model``: [batch, width] (:func:`decoder_logprobs`;
    on a sharded model, as its root's FSDP forward); with ``entropy`` (one process only),
    [2, batch, width] with each position's next-token entropy."""
    sharded = getattr(model, SHARDED_FORWARD, None)
    if sharded is None:
        return decoder_logprobs(model, batch, entropy)
    if entropy:
        raise ValueError("entropy_coef: the entropy bonus is not available on sharded learners yet")
    return sharded(batch)


def decoder_logprobs(model: torch.nn.Module, batch: Batch, entropy: bool = False) -> torch.Tensor:
    """Log-probs of ``batch.targets`` under ``model``: [batch, width]; with ``entropy``,
    [2, batch, width]: the log-probs and the entropy of each position's whole next-token
    distribution.

    The decoder runs over the whole batch; the output layer only over the last ``width``
    positions, :data:`LOGPROB_CHUNK` at a time, each chunk under activation checkpointing when
    gradients are wanted (its logits are recomputed in the backward pass instead of kept), so
    the full-vocabulary logits, their float32 copy and the log-softmax never exist for the
    whole batch. Models whose logits are ``get_output_embeddings()`` of ``get_decoder()``'s
    last hidden state (Qwen, Llama, Mistral and most causal LMs; LoRA-wrapped too).
    """
    positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    hidden = model.get_decoder()(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=positions,
        use_cache=False,
    ).last_hidden_state[:, -batch.width - 1 : -1]
    head = model.get_output_embeddings()
    flat, targets = hidden.reshape(-1, hidden.shape[-1]), batch.targets.reshape(-1)
    grad = torch.is_grad_enabled()
    parts = [
        checkpoint(_chunk_logprobs, head, h, t, entropy, use_reentrant=False) if grad else _chunk_logprobs(head, h, t, entropy)
        for h, t in zip(flat.split(LOGPROB_CHUNK), targets.split(LOGPROB_CHUNK))
    ]
    joined = torch.cat(parts, dim=-1)
    return joined.view(2, *batch.targets.shape) if entropy else joined.view(batch.targets.shape)


def _chunk_logprobs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, entropy: bool = False) -> torch.Tensor:
    """[positions] log-probs of ``targets``; with ``entropy``, [2, positions]: and the entropy
    ``logsumexp(z) - sum(softmax(z) * z)`` of the logits ``z``."""
    logits = head(hidden).float()
    normaliser = logits.logsumexp(-1)
    chosen = logits.gather(-1, targets[:, None]).squeeze(-1) - normaliser
    if not entropy:
        return chosen
    return torch.stack([chosen, normaliser - (logits.softmax(-1) * logits).sum(-1)])


class Learner:
    """Owns the trained model, its optimizer and learning-rate schedule.

    ``reference``, when given, is the frozen policy of the KL penalty (see
    :class:`spiral_train.model.FrozenReference`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: LearnerConfig,
        pad_id: int,
        reference: FrozenReference | None = None,
        seed: int = 0,
    ) -> None:
        if config.entropy_coef and hasattr(model, SHARDED_FORWARD):
            raise ValueError("entropy_coef: the entropy bonus is not available on sharded learners yet")
        self.model = model
        self.config = config
        self.pad_id = pad_id
        self.reference = reference
        self.device = next(model.parameters()).device
        self.group = shard_group(model)
        """The ranks the model is sharded over (None: one rank); each trains a share of a batch."""
        self.rank, self.ranks = (dist.get_rank(self.group), dist.get_world_size(self.group)) if self.group else (0, 1)
        upcast_trained(model)  # float32 master weights
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=config.learning_rate, betas=config.betas, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.generator = torch.Generator().manual_seed(seed)
        self.nonfinite_streak = 0
        """Optimizer steps skipped in a row for a non-finite loss or gradient norm."""
        if config.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            # Non-reentrant: frozen inputs (LoRA's base) need no requires_grad hook, on
            # transformers 4.x (whose default is reentrant) as on 5.x.
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def _lr_factor(self, step: int) -> float:
        warmup = self.config.warmup_steps
        return min(1.0, (step + 1) / warmup) if warmup else 1.0

    def apply_config(self, config: LearnerConfig) -> None:
        """Use ``config``'s optimizer settings from now on, after restoring a checkpoint's
        optimizer and scheduler state (which carry the settings they were saved with): the
        learning rate follows ``config``'s schedule at the restored step."""
        self.config = config
        self.scheduler.base_lrs = [config.learning_rate] * len(self.optimizer.param_groups)
        factor = self._lr_factor(self.scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            group.update(
                lr=config.learning_rate * factor,
                initial_lr=config.learning_rate,
                betas=config.betas,
                weight_decay=config.weight_decay,
            )
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.bf16 and self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def micro_batches(self, indices: Sequence[int], lengths: Sequence[int]) -> list[list[int]]:
        """``indices`` longest first (``lengths[i]`` tokens each), cut into micro-batches of at
        most ``micro_batch_size`` sequences and ``micro_batch_tokens`` padded tokens."""
        size, budget = self.config.micro_batch_size, self.config.micro_batch_tokens
        order = sorted(indices, key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        while order:
            rows = min(size, max(1, budget // lengths[order[0]])) if budget else size
            batches.append(order[:rows])
            order = order[rows:]
        return batches

    def _pack(self, samples: Sequence[Any], advantages: Sequence[float], rows: list[int]) -> Batch:
        return pack([samples[i] for i in rows], [advantages[i] for i in rows], self.pad_id).to(self.device)

    def _plan(self, rows: Sequence[int], lengths: Sequence[int]) -> RankPlan:
        """This rank's passes over ``rows``: all of them cut into micro-batches on one rank."""
        return plan_passes(rows, lengths, self.micro_batches, self.rank, self.ranks)

    @torch.no_grad()
    def _logprobs_of(
        self, model: torch.nn.Module, samples: Sequence[Any], advantages: Sequence[float], lengths: list[int], width: int
    ) -> torch.Tensor:
        """Log-probs of every sample's response under ``model``: [samples, width] on the
        learner's device, each row right-aligned (its response ends at the last column). On N
        ranks each computes its share of the rows and every rank gets all of them."""
        out = torch.zeros((len(samples), width), device=self.device)
        for rows, own in self._plan(range(len(samples)), lengths):
            micro = self._pack(samples, advantages, rows)
            with self._autocast():
                logprobs = token_logprobs(model, micro)
            if own:
                out[torch.tensor(rows), -micro.width :] = logprobs
        return all_reduce_sum(out, self.group)

    def reuses_first_pass(self) -> bool:
        """With one optimizer step per epoch the first epoch's forward passes see the old
        weights, so their log-probs are the old log-probs and a separate pass is saved."""
        return self.config.minibatches == 1

    def update(self, samples: Sequence[Any], advantages: Sequence[float]) -> dict[str, float]:
        """PPO epochs over one batch of turn samples; returns the update's metrics."""
        start = time.perf_counter()
        cfg = self.config
        lengths = [len(s.prompt_token_ids) + len(s.response_token_ids) for s in samples]
        width = max(len(s.response_token_ids) for s in samples)
        reuse_first_pass = self.reuses_first_pass()
        if self.ranks > 1:
            check_same_batch(lengths, advantages, self.generator, self.group, self.device)
        self.model.eval()
        if reuse_first_pass:
            old = torch.zeros((len(samples), width), device=self.device)
        else:
            old = self._logprobs_of(self.model, samples, advantages, lengths, width)
        ref = None
        if self.reference is not None:
            with self.reference.on(self.device) as reference:
                ref = self._logprobs_of(reference, samples, advantages, lengths, width)
        self.model.train()
        totals = {"loss": 0.0, "clip_fraction": 0.0, "grad_norm": 0.0, "kl": 0.0, "entropy": 0.0}
        steps = skipped = 0
        padded = 0
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(samples), generator=self.generator)
            for chunk in order.chunk(max(1, min(cfg.minibatches, len(samples)))):
                self.optimizer.zero_grad(set_to_none=True)
                sums = torch.zeros(5, device=self.device)  # loss, tokens, clipped tokens, KL, entropy
                plan = self._plan(chunk.tolist(), lengths)
                padded += plan.padded_tokens
                for rows, own in plan:
                    micro = self._pack(samples, advantages, rows)
                    if not own:  # keeps the ranks' collectives in step: no loss, no gradient
                        micro.mask.zero_()
                    index = torch.tensor(rows)
                    entropy = None
                    with self._autocast():
                        logprobs = token_logprobs(self.model, micro, entropy=bool(cfg.entropy_coef))
                    if cfg.entropy_coef:
                        logprobs, entropy = logprobs
                    if reuse_first_pass and epoch == 0 and own:
                        old[index, -micro.width :] = logprobs.detach()
                    loss, stats = policy_loss(
                        logprobs,
                        old[index, -micro.width :],
                        micro.advantages,
                        micro.mask,
                        cfg,
                        sampler_logprobs=micro.sampler_logprobs,
                        ref_logprobs=None if ref is None else ref[index, -micro.width :],
                        sequences=len(chunk),
                        entropy=entropy,
                    )
                    loss.backward()
                    sums += torch.stack([loss.detach(), stats["tokens"], stats["clipped"], stats["kl_sum"], stats["entropy_sum"]])
                # Global numbers on N ranks (the gradient norm over all shards), so that every
                # rank skips or steps alike.
                grad_norm = clip_gradients(self.parameters, cfg.max_grad_norm)
                all_reduce_sum(sums, self.group)
                # the one host sync of this optimizer step
                loss_value, tokens, clipped, kl_sum, entropy_sum, norm = torch.cat([sums, grad_norm.reshape(1).float()]).tolist()
                steps += 1
                if not (math.isfinite(loss_value) and math.isfinite(norm)):
                    self._skip_step(loss_value, norm)
                    skipped += 1
                else:
                    self.nonfinite_streak = 0
                    self.optimizer.step()
                    self.scheduler.step()
                totals["loss"] += loss_value
                totals["clip_fraction"] += clipped / max(tokens, 1.0)
                totals["kl"] += kl_sum / max(tokens, 1.0)
                totals["entropy"] += entropy_sum / max(tokens, 1.0)
                totals["grad_norm"] += norm
            if reuse_first_pass and epoch == 0 and cfg.epochs > 1:  # each rank filled its rows
                all_reduce_sum(old, self.group)  # (a row may move to another rank next epoch)
        self.optimizer.zero_grad(set_to_none=True)  # no gradients kept between updates
        self.model.eval()
        seconds = time.perf_counter() - start
        trained_tokens = sum(lengths) * cfg.epochs
        metrics = {k: v / steps for k, v in totals.items() if k != "entropy" or cfg.entropy_coef}
        metrics.update(
            learning_rate=self.scheduler.get_last_lr()[0],
            learner_seconds=seconds,
            learner_tokens_per_second=trained_tokens / seconds,  # tokens x epochs trained
            learner_padding=1 - trained_tokens / padded,  # share of the passes' tokens that were padding
            optimizer_steps=steps - skipped,
            skipped_steps=skipped,
        )
        return metrics

    def _skip_step(self, loss: float, grad_norm: float) -> None:
        """Drop this mini-batch's gradients; stop after too many non-finite steps in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_streak += 1
        if self.nonfinite_streak >= self.config.max_nonfinite_steps:
            raise NonFiniteError(
                f"{self.nonfinite_streak} optimizer steps in a row had a non-finite loss or "
                f"gradient norm (last: loss={loss}, grad_norm={grad_norm}); each was skipped, "
                "the weights are unchanged since the last good step"
            )
