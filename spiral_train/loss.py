"""The policy loss: token-level PPO clip with Dr. GRPO normalisation.

For response token t of a turn with advantage A (the same A on every token of the turn)::

    ratio_t = exp(logp_t - old_logp_t)
    loss_t  = -min(ratio_t * A, clip(ratio_t, 1 - eps, 1 + eps) * A)

Token losses are summed over the batch and divided by a constant (the maximum generation
length), not by the number of tokens: "Dr. GRPO" normalisation, which does not favour short
or long responses. Options: a truncated importance weight toward the sampler's log-probs
(``min(exp(old_logp - sampler_logp), cap)``, for a generator that drifts from the learner),
and a KL penalty to a frozen reference (k3 estimator), off by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossConfig:
    clip: float = 0.2
    normaliser: float = 4096.0
    """Constant the summed token losses are divided by (SPIRAL: the max generation length)."""
    importance_cap: float | None = None
    """Cap of the truncated importance weight toward sampling log-probs; None disables."""
    kl_coef: float = 0.0

    def __post_init__(self) -> None:
        check_range("clip", self.clip, 0 < self.clip < 1, "must lie in (0, 1)")
        check_range("normaliser", self.normaliser, self.normaliser > 0, "must be positive")
        if self.importance_cap is not None:
            cap = self.importance_cap
            check_range("importance_cap", cap, cap > 0, "must be positive (or null to disable)")
        check_range("kl_coef", self.kl_coef, self.kl_coef >= 0, "must be >= 0")


def check_range(name: str, value: float, ok: bool, requirement: str) -> None:
    """Raise ValueError ``name <requirement>, got value`` unless ``value`` is finite and ``ok``."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and ok):
        raise ValueError(f"{name} {requirement}, got {value!r}")


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: LossConfig,
    sampler_logprobs: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip loss over response tokens; all tensors are [batch, tokens], ``mask`` 1 on
    response tokens. Returns the loss and its statistics (clip fraction, KL)."""
    mask = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - config.clip, 1 + config.clip) * advantages
    token_loss = -torch.minimum(unclipped, clipped)
    if config.importance_cap is not None and sampler_logprobs is not None:
        weight = torch.exp(old_logprobs - sampler_logprobs).clamp(max=config.importance_cap)
        token_loss = token_loss * weight.detach()
    stats: dict[str, float] = {}
    if config.kl_coef and ref_logprobs is not None:
        log_ratio = ref_logprobs - logprobs
        kl = torch.exp(log_ratio) - log_ratio - 1
        token_loss = token_loss + config.kl_coef * kl
        stats["kl"] = float((kl * mask).sum() / mask.sum().clamp(min=1))
    loss = (token_loss * mask).sum() / config.normaliser
    with torch.no_grad():
        was_clipped = ((ratio - 1).abs() > config.clip).to(mask.dtype)
        stats["clip_fraction"] = float((was_clipped * mask).sum() / mask.sum().clamp(min=1))
    return loss, stats
