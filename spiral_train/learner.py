"""The learner: PPO updates of a causal LM on turn samples (prompt tokens carry no loss).

Old log-probs are recomputed by the learner before the first update of a batch; each epoch
walks the batch in shuffled mini-batches, each one optimizer step, accumulated over
micro-batches. The loss core is :func:`spiral_train.loss.policy_loss`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from spiral_train.loss import LossConfig, check_range, policy_loss


@dataclass(frozen=True)
class LearnerConfig(LossConfig):
    """The optimizer's and the loss's settings (the ``learner`` section of a training config)."""

    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    """Optimizer steps over which the learning rate rises linearly to its value."""
    epochs: int = 2
    minibatches: int = 1
    """Optimizer steps per epoch (the batch is split into this many mini-batches)."""
    micro_batch_size: int = 4
    """Sequences per forward/backward pass (gradient accumulation over the mini-batch)."""
    max_grad_norm: float = 1.0
    max_nonfinite_steps: int = 3
    """Optimizer steps in a row with a non-finite loss or gradient norm (each one skipped) that
    stop the run."""
    bf16: bool = True
    """bfloat16 autocast where the device supports it (CUDA); CPU runs float32."""
    gradient_checkpointing: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("learning_rate", self.learning_rate, self.learning_rate > 0, "must be positive")
        check_range("weight_decay", self.weight_decay, self.weight_decay >= 0, "must be >= 0")
        if len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers, got {self.betas!r}")
        for beta in self.betas:
            check_range("betas", beta, 0 <= beta < 1, "must lie in [0, 1)")
        check_range("max_grad_norm", self.max_grad_norm, self.max_grad_norm > 0, "must be positive")
        for name in ("warmup_steps", "epochs", "minibatches", "micro_batch_size", "max_nonfinite_steps"):
            value = getattr(self, name)
            low = 0 if name == "warmup_steps" else 1
            check_range(name, value, isinstance(value, int) and value >= low, f"must be an integer >= {low}")


class NonFiniteError(RuntimeError):
    """Training produced NaN or infinity where the run cannot go on."""


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``model`` that hold NaN or infinity."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]


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

    def select(self, index: Sequence[int] | torch.Tensor) -> Batch:
        return Batch(*(t[index] for t in self._tensors()))

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


def token_logprobs(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Log-probs of ``batch.targets`` under ``model``: [batch, width].

    Only the last ``width + 1`` positions go through the output layer (``logits_to_keep``),
    which for a large vocabulary is most of the memory a naive pass would take.
    """
    positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=positions,
        logits_to_keep=batch.width + 1,
    ).logits[:, :-1]
    return torch.gather(logits.float().log_softmax(-1), 2, batch.targets[:, :, None]).squeeze(-1)


class Learner:
    """Owns the trained model, its optimizer and learning-rate schedule."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: LearnerConfig,
        pad_id: int,
        reference: torch.nn.Module | None = None,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.config = config
        self.pad_id = pad_id
        self.reference = reference
        self.device = next(model.parameters()).device
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=config.learning_rate, betas=config.betas, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.generator = torch.Generator().manual_seed(seed)
        self.nonfinite_streak = 0
        """Optimizer steps skipped in a row for a non-finite loss or gradient norm."""
        if config.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable()

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

    def _micro_batches(self, batch: Batch) -> list[Batch]:
        size = self.config.micro_batch_size
        return [batch.select(list(range(i, min(i + size, len(batch))))) for i in range(0, len(batch), size)]

    @torch.no_grad()
    def _logprobs_of(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        parts = []
        for micro in self._micro_batches(batch):
            with self._autocast():
                parts.append(token_logprobs(model, micro.to(self.device)).cpu())
        return torch.cat(parts)

    def reuses_first_pass(self) -> bool:
        """With one optimizer step per epoch the first epoch's forward passes see the old
        weights, so their log-probs are the old log-probs and a separate pass is saved."""
        return self.config.minibatches == 1

    def update(self, samples: Sequence[Any], advantages: Sequence[float]) -> dict[str, float]:
        """PPO epochs over one batch of turn samples; returns the update's metrics."""
        start = time.perf_counter()
        batch = pack(samples, advantages, self.pad_id)
        cfg = self.config
        reuse_first_pass = self.reuses_first_pass()
        self.model.eval()
        old = torch.zeros(batch.mask.shape) if reuse_first_pass else self._logprobs_of(self.model, batch)
        ref = self._logprobs_of(self.reference, batch) if self.reference is not None else None
        self.model.train()
        totals = {"loss": 0.0, "clip_fraction": 0.0, "grad_norm": 0.0, "kl": 0.0}
        steps = skipped = 0
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(batch), generator=self.generator)
            for chunk in order.chunk(max(1, min(cfg.minibatches, len(batch)))):
                self.optimizer.zero_grad(set_to_none=True)
                minibatch_loss, clip_sum, kl_sum, tokens = 0.0, 0.0, 0.0, 0.0
                for micro_index in chunk.split(cfg.micro_batch_size):
                    micro = batch.select(micro_index).to(self.device)
                    with self._autocast():
                        logprobs = token_logprobs(self.model, micro)
                    if reuse_first_pass and epoch == 0:
                        old[micro_index] = logprobs.detach().cpu()
                    loss, stats = policy_loss(
                        logprobs,
                        old[micro_index].to(self.device),
                        micro.advantages,
                        micro.mask,
                        cfg,
                        sampler_logprobs=micro.sampler_logprobs,
                        ref_logprobs=None if ref is None else ref[micro_index].to(self.device),
                    )
                    loss.backward()
                    n_tokens = float(micro.mask.sum())
                    minibatch_loss += float(loss.detach())
                    clip_sum += stats["clip_fraction"] * n_tokens
                    kl_sum += stats.get("kl", 0.0) * n_tokens
                    tokens += n_tokens
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                steps += 1
                if not (math.isfinite(minibatch_loss) and bool(torch.isfinite(grad_norm))):
                    self._skip_step(minibatch_loss, float(grad_norm))
                    skipped += 1
                else:
                    self.nonfinite_streak = 0
                    self.optimizer.step()
                    self.scheduler.step()
                totals["loss"] += minibatch_loss
                totals["clip_fraction"] += clip_sum / max(tokens, 1.0)
                totals["kl"] += kl_sum / max(tokens, 1.0)
                totals["grad_norm"] += float(grad_norm)
        self.model.eval()
        seconds = time.perf_counter() - start
        trained_tokens = int(batch.attention_mask.sum()) * cfg.epochs
        metrics = {k: v / steps for k, v in totals.items()}
        metrics.update(
            learning_rate=self.scheduler.get_last_lr()[0],
            learner_seconds=seconds,
            learner_tokens_per_second=trained_tokens / seconds,  # tokens x epochs trained
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
