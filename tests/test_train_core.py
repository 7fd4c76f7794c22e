"""RAE arithmetic, the PPO loss and its gradient against hand computation, sample packing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from spiral_train.learner import pack
from spiral_train.loss import LossConfig, policy_loss
from spiral_train.rae import RoleBaselines


@dataclass
class S:
    game: str
    episode: int
    role: int
    reward: float | None
    prompt_token_ids: list[int] | None = None
    response_token_ids: list[int] | None = None
    logprobs: list[float] | None = None


def test_ema_sequence_read_before_update() -> None:
    rae = RoleBaselines(alpha=0.95)
    returns = [1.0, -1.0, 1.0, 1.0]
    b, expected = 0.0, []
    for r in returns:
        expected.append(r - b)
        b = 0.95 * b + 0.05 * r
    got = [rae.observe("TicTacToe-v0", 0, r) for r in returns]
    assert got == pytest.approx(expected)
    assert rae.baseline("TicTacToe-v0", 0) == pytest.approx(b)
    assert got[:2] == pytest.approx([1.0, -1.05])


def test_update_first_order_uses_the_new_baseline() -> None:
    rae = RoleBaselines(alpha=0.95, update_first=True)
    assert rae.observe("g", 1, 1.0) == pytest.approx(1.0 - 0.05)
    assert rae.observe("g", 1, -1.0) == pytest.approx(-1.0 - (0.95 * 0.05 - 0.05))


def test_baselines_are_per_game_and_role_in_self_play() -> None:
    rae = RoleBaselines()
    samples = [
        S("TicTacToe-v0", 0, 0, 1.0), S("TicTacToe-v0", 0, 1, -1.0), S("TicTacToe-v0", 0, 0, 1.0),
        S("KuhnPoker-v1", 1, 0, -1.0), S("KuhnPoker-v1", 1, 1, 1.0),
        S("TicTacToe-v0", 2, 0, 1.0), S("TicTacToe-v0", 2, 1, -1.0),
    ]  # fmt: skip
    advantages = rae.advantages(samples)
    # every turn of a role in one game shares the advantage; baselines start at 0 per key
    assert advantages[:5] == pytest.approx([1.0, -1.0, 1.0, -1.0, 1.0])
    assert advantages[5:] == pytest.approx([1.0 - 0.05, -1.0 + 0.05])
    assert rae.baseline("KuhnPoker-v1", 0) == pytest.approx(-0.05)
    assert set(rae.values) == {(game, role, "self") for game in ("TicTacToe-v0", "KuhnPoker-v1") for role in (0, 1)}


def test_state_round_trip_and_bad_values() -> None:
    rae = RoleBaselines(alpha=0.9)
    rae.observe("g", 0, 1.0)
    other = RoleBaselines()
    other.load_state_dict(rae.state_dict())
    assert other.values == rae.values and other.alpha == 0.9
    with pytest.raises(ValueError):
        RoleBaselines(alpha=1.0)
    with pytest.raises(ValueError, match="no final reward"):
        RoleBaselines().advantages([S("g", 0, 0, None)])


def test_loss_and_gradient_match_a_hand_computation() -> None:
    logp = torch.tensor([[-1.0, -0.5, -2.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -0.9, -3.0]])
    adv = torch.tensor([[2.0, 2.0, -1.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])  # the first position is a prompt token
    config = LossConfig(clip=0.2, normaliser=10.0)
    loss, stats = policy_loss(logp, old, adv, mask, config)
    r1, r2 = math.exp(0.4), math.exp(1.0)  # ratios of the two response tokens
    # token 1: A > 0, ratio 1.49 > 1.2: the clipped term is smaller -> no gradient
    # token 2: A < 0, ratio 2.72 > 1.2: the unclipped term -2.72 is smaller -> gradient
    t1 = -min(r1 * 2.0, 1.2 * 2.0)
    t2 = -min(r2 * -1.0, 1.2 * -1.0)
    assert float(loss.detach()) == pytest.approx((t1 + t2) / 10.0)
    loss.backward()
    # d/dlogp of -(r * A) / 10 with r = exp(logp - old) is -A * r / 10
    assert logp.grad.tolist()[0] == pytest.approx([0.0, 0.0, 1.0 * r2 / 10.0])
    assert float(stats["clipped"]) == float(stats["tokens"]) == 2.0  # both response tokens clipped


def test_unclipped_ratio_gives_the_policy_gradient() -> None:
    logp = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    loss, stats = policy_loss(logp, logp.detach(), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), LossConfig(normaliser=4.0))
    loss.backward()
    assert float(loss.detach()) == pytest.approx(-1.0 / 4.0)
    assert logp.grad.tolist()[0] == pytest.approx([-0.125, -0.125])
    assert float(stats["clipped"]) == 0.0 and float(stats["tokens"]) == 2.0


def test_truncated_importance_weight_and_kl() -> None:
    logp = torch.zeros(1, 1, requires_grad=True)
    old = torch.zeros(1, 1)
    sampler = torch.tensor([[-2.0]])  # old/sampler ratio e^2 is capped at 3
    loss, _ = policy_loss(logp, old, torch.ones(1, 1), torch.ones(1, 1), LossConfig(normaliser=1.0, importance_cap=3.0), sampler_logprobs=sampler)
    assert float(loss) == pytest.approx(-3.0)
    ref = torch.tensor([[math.log(0.5)]])
    loss, stats = policy_loss(logp, old, torch.zeros(1, 1), torch.ones(1, 1), LossConfig(normaliser=1.0, kl_coef=0.1), ref_logprobs=ref)
    assert float(stats["kl_sum"]) == pytest.approx(0.5 - math.log(0.5) - 1)
    assert float(loss) == pytest.approx(0.1 * (0.5 - math.log(0.5) - 1))


def test_pack_masks_prompt_tokens_and_broadcasts_advantages() -> None:
    samples = [
        S("g", 0, 0, 1.0, [5, 6, 7], [8, 9], [-0.1, -0.2]),
        S("g", 0, 1, -1.0, [5], [4, 3, 2], [-0.3, -0.4, -0.5]),
    ]
    batch = pack(samples, [0.7, -0.3], pad_id=0)
    # left padding: every response ends in the last column
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9], [0, 5, 4, 3, 2]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert batch.targets.tolist() == [[7, 8, 9], [4, 3, 2]]
    assert batch.mask.tolist() == [[0, 1, 1], [1, 1, 1]]  # the prompt token 7 carries no loss
    assert torch.allclose(batch.advantages, torch.tensor([[0, 0.7, 0.7], [-0.3, -0.3, -0.3]]))
    expected = torch.tensor([[0, -0.1, -0.2], [-0.3, -0.4, -0.5]])
    assert torch.allclose(batch.sampler_logprobs, expected)


def test_learner_logprobs_match_an_unpadded_forward_pass(tiny_qwen3) -> None:
    from transformers import AutoModelForCausalLM

    from spiral_train.learner import token_logprobs

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3).eval()
    samples = [S("g", 0, 0, 1.0, [5, 6, 7, 8, 9, 10], [11, 12], None), S("g", 0, 1, 1.0, [5, 6], [13, 14, 15], None)]
    batch = pack(samples, [1.0, 1.0], pad_id=0)
    with torch.no_grad():
        packed = token_logprobs(model, batch)
        for i, sample in enumerate(samples):
            ids = torch.tensor([sample.prompt_token_ids + sample.response_token_ids])
            full = model(ids).logits[0, :-1].log_softmax(-1)
            n = len(sample.response_token_ids)
            alone = full[-n:].gather(1, ids[0, -n:, None]).squeeze(-1)
            assert torch.allclose(packed[i, -n:], alone, atol=1e-5)


def test_prompt_tokens_get_no_gradient(tiny_qwen3) -> None:
    from transformers import AutoModelForCausalLM

    from spiral_train.learner import token_logprobs

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3)
    batch = pack([S("g", 0, 0, 1.0, [5, 6, 7, 8], [9], None)], [1.0], pad_id=0)
    logprobs = token_logprobs(model, batch)
    logprobs.retain_grad()
    loss, _ = policy_loss(logprobs, logprobs.detach(), batch.advantages, batch.mask, LossConfig(normaliser=1.0))
    loss.backward()
    assert batch.mask.tolist() == [[1.0]] or batch.mask[0, :-1].sum() == 0
    assert logprobs.grad[0, -1] != 0


def test_reused_first_pass_gives_the_same_update_as_a_separate_old_logprob_pass(tiny_qwen3) -> None:
    from transformers import AutoModelForCausalLM

    from spiral_train.learner import Learner, LearnerConfig

    class SeparatePass(Learner):
        def reuses_first_pass(self) -> bool:
            return False

    samples = [S("g", i, i % 2, 1.0, [5 + i, 6, 7, 8], [9, 10 + i], None) for i in range(6)]
    advantages = [0.5, -1.0, 1.0, -0.5, 0.25, -0.25]
    # Adam turns float noise in near-zero gradients into +-lr steps: keep lr small to compare
    config = LearnerConfig(learning_rate=1e-6, epochs=2, micro_batch_size=4, normaliser=2.0, gradient_checkpointing=False)
    weights, losses = [], []
    for kind in (Learner, SeparatePass):
        model = AutoModelForCausalLM.from_pretrained(tiny_qwen3)
        metrics = kind(model, config, pad_id=0).update(samples, advantages)
        assert metrics["optimizer_steps"] == 2
        weights.append(model.state_dict())
        losses.append((metrics["loss"], metrics["clip_fraction"]))
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-5) for k in weights[0])
