"""Learner speed on the tiny Qwen3: seconds per update, equal or unequal sample lengths.

``--lengths equal`` (every sample ``--prompt`` + ``--response`` tokens) times the learner's
update (pack, old log-probs, PPO epochs with loss, clipping and optimizer steps) against the
same number of bare training passes over the same token batch (forward, a plain log-prob
loss, backward, optimizer step); the ratio of their tokens/s is the learner's efficiency.

``--lengths unequal`` is the recipe's shape scaled down for the CPU: prompts of a quarter to
all of ``--prompt`` tokens, responses mostly short with a long tail up to ``--response``
tokens (one sample has the full length, as a turn cut off at ``max_tokens`` does). It reports
seconds per update and the samples' own tokens (no padding) trained per second: what padding
every micro-batch to the batch's longest sample costs. Medians of ``--repeats`` runs (and the
best one, which shared machines disturb least). Usage:
``python benchmarks/learner_speed.py [--lengths unequal] [--samples 128] [--micro 16]``
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


def lengths(kind: str, samples: int, prompt: int, response: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """(prompt, response) token counts of each sample."""
    if kind == "equal":
        return [(prompt, response)] * samples
    prompts = torch.randint(prompt // 4, prompt + 1, (samples,), generator=generator)
    # log-uniform between 4 tokens and the limit: many short answers, a few long ones
    responses = torch.exp(torch.rand(samples, generator=generator) * torch.log(torch.tensor(response / 4.0))) * 4
    responses[0] = response
    return [(int(p), int(r)) for p, r in zip(prompts, responses.round().clamp(1, response))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", choices=["equal", "unequal"], default="equal")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=None, help="prompt tokens (unequal: the most); default 400 / 225")
    parser.add_argument("--response", type=int, default=None, help="response tokens (unequal: the most); default 12 / 1024")
    parser.add_argument("--micro", type=int, default=None, help="sequences per micro-batch; default 64 / 16")
    parser.add_argument("--micro-tokens", type=int, default=0, help="learner.micro_batch_tokens (0: not set)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    equal = args.lengths == "equal"
    prompt = args.prompt or (400 if equal else 225)
    response = args.response or (12 if equal else 1024)
    micro = args.micro or (64 if equal else 16)
    from transformers import AutoModelForCausalLM

    path = ensure_tiny_qwen3(os.path.join(tempfile.gettempdir(), "spiral-bench-tiny-qwen3"))
    # as the trainer loads it on the CPU
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attention.register())
    generator = torch.Generator().manual_seed(0)
    samples = [
        Sample(
            torch.randint(10, 2000, (p,), generator=generator).tolist(),
            torch.randint(10, 2000, (r,), generator=generator).tolist(),
        )
        for p, r in lengths(args.lengths, args.samples, prompt, response, generator)
    ]
    advantages = [1.0 if i % 2 else -1.0 for i in range(args.samples)]
    settings: dict = {"micro_batch_tokens": args.micro_tokens} if args.micro_tokens else {}
    config = LearnerConfig(
        learning_rate=1e-5,
        epochs=2,
        micro_batch_size=micro,
        normaliser=float(response),
        gradient_checkpointing=False,
        **settings,
    )
    learner = Learner(model, config, pad_id=0)
    tokens = sum(len(s.prompt_token_ids) + len(s.response_token_ids) for s in samples)
    seconds, ratios, bare_rates = [], [], []
    for _ in range(args.repeats):
        seconds.append(learner.update(samples, advantages)["learner_seconds"])
        if equal:  # both make `epochs` training passes over the same tokens, scoring the same positions
            model.train()
            bare = bare_passes(model, pack(samples, advantages, 0), micro, config.epochs, learner.optimizer)
            model.eval()
            bare_rates.append(tokens * config.epochs / bare)
            ratios.append(bare / seconds[-1])
    update = statistics.median(seconds)
    shape = (f"{prompt} prompt + {response} response" if equal else
             f"prompts {prompt // 4}-{prompt}, responses up to {response} (one at {response}), "
             f"{tokens / args.samples:.0f} tokens per sample on average")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; tiny Qwen3; {args.samples} samples x ({shape}) "
          f"tokens, {config.epochs} epochs, micro-batches of {micro}"
          f"{f' / {args.micro_tokens} tokens' if args.micro_tokens else ''}; median of {args.repeats}")
    print(f"learner: {update:.2f} s per update (best {min(seconds):.2f} s), {tokens * config.epochs / update:,.0f} "
          "trained tokens/s (padding not counted)")
    if equal:
        print(f"bare forward+backward: {statistics.median(bare_rates):,.0f} tokens/s")
        print(f"ratio learner / bare: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
