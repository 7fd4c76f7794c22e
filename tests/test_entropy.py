"""The entropy bonus (``learner.entropy_coef``): the entropy of each response token's whole
next-token distribution, subtracted from the loss; at 0 the loss is today's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spiral_train.learner import Learner, LearnerConfig, decoder_logprobs, pack
from spiral_train.loss import LossConfig, policy_loss
from tests.test_learner import tiny, unequal_samples


def _full_distributions(model: torch.nn.Module, batch) -> torch.Tensor:
    """Log-softmax of the logits that predict ``batch.targets``, from one plain forward pass."""
    positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=positions).logits
    return logits[:, -batch.width - 1 : -1].float().log_softmax(-1)


def test_the_learner_computes_each_positions_entropy_beside_its_log_prob(tiny_qwen3: Path) -> None:
    model = tiny(tiny_qwen3)
    batch = pack(unequal_samples(3), [1.0, -1.0, 0.5], pad_id=0)
    with torch.no_grad():
        logprobs, entropy = decoder_logprobs(model, batch, entropy=True)
        plain = decoder_logprobs(model, batch)
        full = _full_distributions(model, batch)
    assert torch.equal(logprobs, plain)
    torch.testing.assert_close(entropy, -(full.exp() * full).sum(-1), rtol=1e-5, atol=1e-5)
    assert float(entropy.min()) > 1.0  # a random model: near log(vocabulary)


def test_the_bonus_is_subtracted_from_the_loss_per_token_and_ignores_non_response_positions() -> None:
    logp = torch.zeros(2, 3, requires_grad=True)
    advantages = torch.ones(2, 3)
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    entropy = torch.tensor([[float("nan"), 2.0, 1.0], [0.5, 0.5, 0.5]])
    base, _ = policy_loss(logp, logp.detach(), advantages, mask, LossConfig(normaliser=4.0), entropy=entropy)
    loss, stats = policy_loss(logp, logp.detach(), advantages, mask, LossConfig(normaliser=4.0, entropy_coef=0.1), entropy=entropy)
    # the sequences' entropy sums 3.0 and 1.5, each over the normaliser, averaged over 2
    assert float((loss - base).detach()) == pytest.approx(-0.1 * (3.0 / 4 + 1.5 / 4) / 2)
    assert float(stats["entropy_sum"]) == pytest.approx(4.5)
    assert float(base.detach()) == pytest.approx(-(2 / 4 + 3 / 4) / 2)  # coefficient 0: the plain loss


@pytest.mark.parametrize("entropy_coef", [0.0, 0.5])
def test_an_update_with_zero_advantages_moves_the_policy_only_with_a_bonus_and_raises_its_entropy(tiny_qwen3: Path, entropy_coef: float) -> None:
    samples = unequal_samples(4)
    batch = pack(samples, [0.0] * 4, pad_id=0)
    model = tiny(tiny_qwen3)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        _, entropy_before = decoder_logprobs(model, batch, entropy=True)
    config = LearnerConfig(learning_rate=1e-3, epochs=2, normaliser=4.0, gradient_checkpointing=False, entropy_coef=entropy_coef)
    metrics = Learner(model, config, pad_id=0).update(samples, [0.0] * 4)
    with torch.no_grad():
        _, entropy_after = decoder_logprobs(model, batch, entropy=True)
    moved = any(not torch.equal(p.detach(), before[name]) for name, p in model.named_parameters())
    gained = float((entropy_after - entropy_before)[batch.mask.bool()].mean())
    if entropy_coef:
        assert moved and gained > 0
        assert metrics["entropy"] == pytest.approx(float(entropy_before[batch.mask.bool()].mean()), rel=0.05)
    else:
        assert not moved and gained == 0 and "entropy" not in metrics


def test_a_negative_coefficient_is_refused() -> None:
    with pytest.raises(ValueError, match="entropy_coef must be >= 0"):
        LossConfig(entropy_coef=-0.1)
