"""The policy loss: token-level PPO clip with Dr. GRPO normalisation, as SPIRAL (oat) computes it.

For response token t of a turn with advantage A (the same A on every token of the turn)::

    ratio_t = exp(logp_t - old_logp_t)
    loss_t  = -min(ratio_t * A, clip(ratio_t, 1 - eps, 1 + eps) * A)

Normalisation: each sequence's token losses are summed and divided by a constant (the maximum
generation length, ``normaliser``), not by its number of tokens ("Dr. GRPO", which favours
neither short nor long responses); the loss of a mini-batch is the mean of these over its
sequences::

    loss = (1 / N) * sum_sequences( sum_tokens(loss_t) / normaliser )

with N the number of sequences in the mini-batch (oat: ``masked_sum(...) / 4096`` then
``.mean()``). Micro-batches of one mini-batch pass the mini-batch's N, so their gradients add up
to the mini-batch's. Positions outside ``mask`` (prompt, padding) are set to 0 with ``where``
in every input before any arithmetic, so a NaN or infinity there reaches neither the loss nor
its gradient.

Options: a truncated importance weight toward the sampler's log-probs
(``min(exp(old_logp - sampler_logp), cap)``, for a generator that drifts from the learner),
a KL penalty to a frozen reference (k3 estimator), and an entropy bonus
(``loss_t -= entropy_coef * H_t``, with ``H_t`` the entropy of the policy's whole next-token
distribution at response token t), all off by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossConfig:
    clip: float = 0.2
    normaliser: float = 4096.0
    """Constant each sequence's summed token losses are divided by (SPIRAL: the max generation
    length) before the mean over sequences."""
    importance_cap: float | None = None
    """Cap of the truncated importance weight toward sampling log-probs; None disables."""
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    """Weight of the entropy bonus on each response token's full next-token distribution; 0 =
    no bonus. It rewards spreading mass over the whole vocabulary, junk tokens included (in the
    CPU demo 0.1 wrecked the answer format within 5 steps)."""

    def __post_init__(self) -> None:
        check_range("clip", self.clip, 0 < self.clip < 1, "must lie in (0, 1)")
        check_range("normaliser", self.normaliser, self.normaliser > 0, "must be positive")
        if self.importance_cap is not None:
            cap = self.importance_cap
            check_range("importance_cap", cap, cap > 0, "must be positive (or null to disable)")
        check_range("kl_coef", self.kl_coef, self.kl_coef >= 0, "must be >= 0")
        check_range("entropy_coef", self.entropy_coef, self.entropy_coef >= 0, "must be >= 0")


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
    sequences: int | None = None,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip loss over response tokens; all tensors are [batch, tokens], ``mask`` true on
    response tokens. ``sequences`` is the mini-batch's number of sequences (default: this
    batch's rows); ``entropy`` the policy's next-token entropy at each token (for
    ``entropy_coef``). Returns the loss and, as detached 0-dim tensors on the loss's device (no
    host sync), the number of response tokens, of clipped ones, the summed KL and the summed
    entropy."""
    mask = mask.bool()
    zero = logprobs.new_zeros(())

    def response(values: torch.Tensor) -> torch.Tensor:
        """``values`` with every position outside ``mask`` set to 0: a non-finite value there
        reaches neither the loss nor, through ``exp``, the gradient."""
        return torch.where(mask, values, zero)

    logprobs, old_logprobs, advantages = response(logprobs), response(old_logprobs), response(advantages)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - config.clip, 1 + config.clip) * advantages
    token_loss = -torch.minimum(unclipped, clipped)
    if config.importance_cap is not None and sampler_logprobs is not None:
        weight = torch.exp(old_logprobs - response(sampler_logprobs)).clamp(max=config.importance_cap)
        token_loss = token_loss * weight.detach()
    kl_sum = zero
    if config.kl_coef and ref_logprobs is not None:
        log_ratio = response(ref_logprobs) - logprobs
        kl = torch.exp(log_ratio) - log_ratio - 1
        token_loss = token_loss + config.kl_coef * kl
        kl_sum = response(kl).sum().detach()
    entropy_sum = zero
    if config.entropy_coef and entropy is not None:
        entropy = response(entropy)
        token_loss = token_loss - config.entropy_coef * entropy
        entropy_sum = entropy.sum().detach()
    per_sequence = response(token_loss).sum(dim=-1) / config.normaliser
    loss = per_sequence.sum() / (sequences or logprobs.shape[0])
    with torch.no_grad():
        was_clipped = ((ratio - 1).abs() > config.clip) & mask
        stats = {
            "tokens": mask.sum().to(zero.dtype),
            "clipped": was_clipped.sum().to(zero.dtype),
            "kl_sum": kl_sum,
            "entropy_sum": entropy_sum,
        }
    return loss, stats
