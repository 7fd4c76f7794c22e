"""The learner as SPIRAL trains: float32 master weights, the loss averaged over sequences, masks
that stop NaN, micro-batches padded to their own longest sample, chunked log-probs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from spiral_train import learner as learner_module
from spiral_train.learner import Learner, LearnerConfig, pack, token_logprobs
from spiral_train.loss import LossConfig, policy_loss
from tests.test_train_core import S


def tiny(path: Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


def unequal_samples(count: int = 6) -> list[S]:
    """Samples of very different prompt and response lengths."""
    return [S("g", i, i % 2, 1.0, list(range(5, 5 + 2 + 7 * i)), list(range(40, 41 + 3 * (count - i))), None) for i in range(count)]


def test_a_bfloat16_model_trains_float32_master_weights_that_all_move(tiny_qwen3: Path) -> None:
    model = tiny(tiny_qwen3, torch.bfloat16)  # as the real Qwen3-4B is stored, and loaded on a GPU
    start = {name: p.detach().float().clone() for name, p in model.named_parameters()}
    config = LearnerConfig(learning_rate=1e-6, epochs=1, normaliser=4.0, gradient_checkpointing=False)
    learner = Learner(model, config, pad_id=0)
    learner.update(unequal_samples(4), [1.0, -1.0, 0.5, -0.5])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    state = learner.optimizer.state[next(model.parameters())]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    changed = sum(int((p.detach() != start[name]).sum()) for name, p in model.named_parameters())
    total = sum(p.numel() for p in model.parameters())
    # bfloat16 weights stepped in place keep about 2 % of such an update (1e-6 is ~1 % of
    # the spacing of a weight of 0.02)
    assert changed / total > 0.99
    norms = [(p.detach() != start[name]).float().mean() for name, p in model.named_parameters() if "norm" in name]
    assert min(norms) > 0.99


def test_the_loss_is_the_mean_over_sequences_of_each_ones_sum_over_the_normaliser() -> None:
    logp = torch.zeros(2, 3, requires_grad=True)
    advantages = torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])  # 2 and 3 response tokens
    config = LossConfig(normaliser=4.0)
    loss, stats = policy_loss(logp, logp.detach(), advantages, mask, config)
    # ratio 1: each token's loss is -A; sequence sums -2 and -6, over 4, averaged
    assert float(loss.detach()) == pytest.approx(((-2 / 4) + (-6 / 4)) / 2)
    # micro-batches of one mini-batch pass its sequence count: their losses add up to its loss
    halves = [policy_loss(logp[i : i + 1], logp[i : i + 1].detach(), advantages[i : i + 1], mask[i : i + 1], config, sequences=2)[0] for i in range(2)]
    assert float(sum(halves).detach()) == pytest.approx(float(loss.detach()))
    assert float(stats["tokens"]) == 5.0


def test_an_update_reports_the_loss_of_the_mean_over_its_sequences(tiny_qwen3: Path) -> None:
    samples = unequal_samples(6)
    advantages = [1.0, -0.5, 0.25, 1.0, -1.0, 0.5]
    config = LearnerConfig(learning_rate=1e-6, epochs=1, micro_batch_size=4, normaliser=8.0, gradient_checkpointing=False)
    metrics = Learner(tiny(tiny_qwen3), config, pad_id=0).update(samples, advantages)
    # one epoch, one mini-batch: the old log-probs are the new ones (ratio 1, loss -A a token)
    expected = sum(-a * len(s.response_token_ids) / 8.0 for s, a in zip(samples, advantages)) / len(samples)
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)  # summed, it was 6 times this


def test_non_finite_values_outside_the_mask_reach_neither_loss_nor_gradient() -> None:
    nan, inf = float("nan"), float("inf")
    logp = torch.tensor([[nan, -0.5, -1.0], [-0.1, -0.2, -0.3]], requires_grad=True)
    old = torch.tensor([[-inf, -0.7, -1.0], [-0.1, -0.2, -0.3]])
    advantages = torch.tensor([[nan, 1.0, 1.0], [inf, -1.0, -1.0]])
    sampler = torch.tensor([[inf, -0.7, -1.0], [nan, -0.2, -0.3]])
    ref = torch.tensor([[nan, -0.6, -1.0], [-inf, -0.2, -0.3]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]])  # the first column is padding / prompt
    config = LossConfig(normaliser=2.0, importance_cap=2.0, kl_coef=0.1)
    loss, stats = policy_loss(logp, old, advantages, mask, config, sampler_logprobs=sampler, ref_logprobs=ref)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and math.isfinite(float(stats["kl_sum"]))
    assert torch.isfinite(logp.grad).all() and (logp.grad[:, 0] == 0).all()


def test_micro_batches_take_the_longest_first_within_both_limits(tiny_qwen3: Path) -> None:
    lengths = [10, 50, 20, 40, 30, 5]
    by_count = Learner(tiny(tiny_qwen3), LearnerConfig(micro_batch_size=2, gradient_checkpointing=False), pad_id=0)
    assert by_count.micro_batches(range(6), lengths) == [[1, 3], [4, 2], [0, 5]]
    by_tokens = Learner(tiny(tiny_qwen3), LearnerConfig(micro_batch_size=4, micro_batch_tokens=90, gradient_checkpointing=False), pad_id=0)
    # 50 alone (2 x 50 > 90), then 40 + 30 (2 x 40), then 20 + 10 + 5 (3 x 20)
    assert by_tokens.micro_batches([0, 1, 2, 3, 4, 5], lengths) == [[1], [3, 4], [2, 0, 5]]
    assert by_tokens.micro_batches([1], [0, 500]) == [[1]]  # longer than the budget: alone


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_how_a_batch_is_cut_into_micro_batches_does_not_change_the_gradient(tiny_qwen3: Path) -> None:
    samples, advantages = unequal_samples(6), [1.0, -0.5, 0.25, 1.0, -1.0, 0.5]
    gradients, metrics = [], []
    for settings in ({"micro_batch_size": 6}, {"micro_batch_size": 1}, {"micro_batch_size": 4, "micro_batch_tokens": 40}):
        config = LearnerConfig(epochs=1, normaliser=8.0, gradient_checkpointing=False, **settings)
        learner = Learner(tiny(tiny_qwen3), config, pad_id=0, seed=1)
        seen: list[list[torch.Tensor]] = []
        learner.optimizer.step = lambda learner=learner, seen=seen: seen.append([p.grad.clone() for p in learner.parameters])
        metrics.append(learner.update(samples, advantages))
        gradients.append(seen[0])
    for other, other_metrics in zip(gradients[1:], metrics[1:]):
        assert other_metrics["loss"] == pytest.approx(metrics[0]["loss"], rel=1e-6)
        for a, b in zip(gradients[0], other):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert metrics[1]["learner_padding"] == pytest.approx(0.0)  # one sample a pass: no padding
    assert metrics[0]["learner_padding"] > 0.2


def test_chunked_log_probs_and_their_gradients_equal_the_full_logits(tiny_qwen3: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    samples = unequal_samples(3)
    batch = pack(samples, [1.0, -1.0, 0.5], pad_id=0)
    results = []
    for chunk in (learner_module.LOGPROB_CHUNK, 5):
        monkeypatch.setattr(learner_module, "LOGPROB_CHUNK", chunk)
        model = tiny(tiny_qwen3).train()
        logprobs = token_logprobs(model, batch)
        (logprobs * batch.mask * batch.advantages).sum().backward()
        results.append((logprobs.detach(), {n: p.grad for n, p in model.named_parameters()}))
    model = tiny(tiny_qwen3)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=(batch.attention_mask.cumsum(-1) - 1).clamp(min=0)).logits
    full = logits[:, -batch.width - 1 : -1].log_softmax(-1).gather(2, batch.targets[:, :, None]).squeeze(-1)
    for logprobs, _ in results:
        assert torch.allclose(logprobs[batch.mask.bool()], full[batch.mask.bool()], atol=1e-5)
    for name, gradient in results[0][1].items():
        torch.testing.assert_close(gradient, results[1][1][name], rtol=1e-4, atol=1e-5)


def test_no_gradients_are_kept_between_updates(tiny_qwen3: Path) -> None:
    model = tiny(tiny_qwen3)
    Learner(model, LearnerConfig(epochs=1, normaliser=4.0, gradient_checkpointing=False), pad_id=0).update(unequal_samples(2), [1.0, -1.0])
    assert all(p.grad is None for p in model.parameters())


def test_lora_trains_its_adapters_under_non_reentrant_gradient_checkpointing(tiny_qwen3: Path) -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny(tiny_qwen3, torch.bfloat16), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = LearnerConfig(learning_rate=1e-3, epochs=1, normaliser=4.0, gradient_checkpointing=True)
    Learner(model, config, pad_id=0).update(unequal_samples(3), [1.0, -1.0, 0.5])
    layer = model.base_model.model.model.layers[0]
    assert layer.gradient_checkpointing and layer._gradient_checkpointing_func.keywords == {"use_reentrant": False}
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all("lora_B" in n for n in moved)  # B moves first (A's gradient is B = 0)
    assert all(p.dtype == torch.bfloat16 for n, p in model.named_parameters() if "lora_" not in n)  # frozen base


def test_adam_betas_are_spirals_and_set_by_the_config(tiny_qwen3: Path) -> None:
    from spiral_train.config import load_config

    assert LearnerConfig().betas == (0.9, 0.95)
    for path in ("configs/qwen3-4b-base.yaml", "configs/qwen3-4b-instruct-lora.yaml"):
        assert load_config(Path(__file__).parents[1] / path).learner.betas == (0.9, 0.95)
    learner = Learner(tiny(tiny_qwen3), LearnerConfig(betas=(0.8, 0.9), gradient_checkpointing=False), pad_id=0)
    assert learner.optimizer.param_groups[0]["betas"] == (0.8, 0.9)
