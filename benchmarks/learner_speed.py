"""Learner throughput against a bare forward+backward of the same batch, on the tiny Qwen3.

The learner's update (pack the samples, recompute old log-probs, PPO epochs with the loss,
clipping and optimizer steps) is timed against the same number of bare training passes over
the same token batch (forward, a plain log-prob loss, backward, optimizer step); the ratio
of their tokens/s is the learner's efficiency. Medians of ``--repeats`` runs. Usage:
``python benchmarks/learner_speed.py [--samples 128] [--prompt 400] [--response 12]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch

from spiral_agents.llm import attention
from spiral_agents.llm.tiny import ensure_tiny_qwen3
from spiral_train.learner import Learner, LearnerConfig, pack


@dataclass
class Sample:
    prompt_token_ids: list[int]
    response_token_ids: list[int]
    logprobs: list[float] | None = None


def bare_passes(model: torch.nn.Module, batch, micro: int, passes: int, optimizer: torch.optim.Optimizer) -> float:
    """Seconds for ``passes`` plain forward+backward sweeps over ``batch``."""
    start = time.perf_counter()
    for _ in range(passes):
        optimizer.zero_grad()
        for i in range(0, len(batch), micro):
            ids = batch.input_ids[i : i + micro]
            out = model(input_ids=ids, attention_mask=batch.attention_mask[i : i + micro], logits_to_keep=batch.width + 1)
            out.logits[:, :-1].float().log_softmax(-1).mean().backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=400)
    parser.add_argument("--response", type=int, default=12)
    parser.add_argument("--micro", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    path = ensure_tiny_qwen3(os.path.join(tempfile.gettempdir(), "spiral-bench-tiny-qwen3"))
    # as the trainer loads it on the CPU
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attention.register())
    generator = torch.Generator().manual_seed(0)
    samples = [
        Sample(
            torch.randint(10, 2000, (args.prompt,), generator=generator).tolist(),
            torch.randint(10, 2000, (args.response,), generator=generator).tolist(),
        )
        for _ in range(args.samples)
    ]
    advantages = [1.0 if i % 2 else -1.0 for i in range(args.samples)]
    config = LearnerConfig(
        learning_rate=1e-5,
        epochs=2,
        micro_batch_size=args.micro,
        normaliser=float(args.response),
        gradient_checkpointing=False,
    )
    learner = Learner(model, config, pad_id=0)
    tokens = args.samples * (args.prompt + args.response)
    ratios, learner_rates, bare_rates = [], [], []
    for _ in range(args.repeats):
        metrics = learner.update(samples, advantages)
        learner_seconds = metrics["learner_seconds"]
        # both make `epochs` training passes over the same tokens, scoring the same positions
        model.train()
        bare = bare_passes(model, pack(samples, advantages, 0), args.micro, config.epochs, learner.optimizer)
        model.eval()
        learner_rates.append(tokens * config.epochs / learner_seconds)
        bare_rates.append(tokens * config.epochs / bare)
        ratios.append(bare / learner_seconds)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; tiny Qwen3; {args.samples} samples x "
          f"({args.prompt} prompt + {args.response} response) tokens, {config.epochs} epochs; median of {args.repeats}")
    print(f"learner: {statistics.median(learner_rates):,.0f} trained tokens/s")
    print(f"bare forward+backward: {statistics.median(bare_rates):,.0f} tokens/s")
    print(f"ratio learner / bare: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
