"""Rollout engine speed on the tiny Qwen3: batching gain and engine overhead.

* Batching: games per second with 64 concurrent self-play games against one game at a time
  (one prompt per generation call, as SPIRAL's public code plays Kuhn Poker), per game.
* Overhead: the time the backend spends generating over a full rollout's wall time (all three
  games mixed, 64 concurrent), timed inside the rollout and, as a check, by replaying exactly
  the same generation calls (same prompts, seeds and settings) alone; with the policy's prompt
  cache (as the trainer runs) and without it (every prompt tokenized).

The model is the tiny Qwen3 after a short warm start (``--warm-start-steps``, supervised
answers with random legal moves, as the CPU demo does; cached in the temp folder), so games
last several turns as they do in training; ``--warm-start-steps 0`` benchmarks the untrained
model, whose games mostly end at its first (invalid) answer. Medians of ``--repeats`` runs
after a warm-up run. Usage:
``python benchmarks/rollout_speed.py [--backend transformers|vllm] [--games 256]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from typing import Any

from spiral_agents.llm.backend import SamplingConfig
from spiral_agents.llm.prompts import BaseModelTemplate
from spiral_agents.llm.rollout import LLMPolicy, Matchup, RolloutEngine
from spiral_agents.llm.tiny import ensure_tiny_qwen3

GAMES = {"TicTacToe-v0": {}, "KuhnPoker-v1": {"rounds": 1}, "SimpleNegotiation-v1": {}}


class Recorder:
    """Passes generation calls through to a backend, keeps them for replay and times them."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.tokenizer, self.calls, self.seconds = backend, backend.tokenizer, [], 0.0

    def generate(self, prompts, sampling, seeds=None):
        self.calls.append((list(prompts), sampling, list(seeds or [])))
        start = time.perf_counter()
        outputs = self.backend.generate(prompts, sampling, seeds)
        self.seconds += time.perf_counter() - start
        return outputs


def make_backend(kind: str, model: str) -> Any:
    if kind == "vllm":
        from spiral_agents.llm.vllm_backend import VLLMBackend

        return VLLMBackend(model, max_model_len=2048)
    from spiral_agents.llm.hf_backend import TransformersBackend

    return TransformersBackend(model)


def games_per_second(backend: Any, game: str, concurrency: int, games: int, seed: int) -> float:
    policy = LLMPolicy(backend, BaseModelTemplate(), SamplingConfig(max_tokens=16), "tiny")
    engine = RolloutEngine([Matchup(game, (policy, policy), env_kwargs=GAMES[game])], concurrency=concurrency, seed=seed)
    start = time.perf_counter()
    engine.run(games=games)
    return games / (time.perf_counter() - start)


def cold_cache(backend: Any) -> None:
    """Empty vLLM's prefix cache, so the replay does not find the rollout's prompts cached."""
    reset = getattr(backend, "reset_prefix_cache", None)
    if callable(reset):
        reset()


def overhead_ratios(backend: Any, games: int, seed: int, cache_size: int = 4096) -> tuple[float, float, float]:
    """Generation time over a mixed rollout's wall time: timed inside the rollout, and by
    replaying the same calls alone afterwards (noisier: two separate runs); and the share of
    prompts whose token ids came from the policy's prompt cache."""
    recorder = Recorder(backend)
    policy = LLMPolicy(recorder, BaseModelTemplate(), SamplingConfig(max_tokens=16), "tiny", prompt_cache_size=cache_size)
    matchups = [Matchup(g, (policy, policy), env_kwargs=kw) for g, kw in GAMES.items()]
    cold_cache(backend)
    start = time.perf_counter()
    RolloutEngine(matchups, concurrency=64, seed=seed).run(games=games)
    rollout = time.perf_counter() - start
    cold_cache(backend)
    start = time.perf_counter()
    for prompts, sampling, seeds in recorder.calls:
        backend.generate(prompts, sampling, seeds)
    alone = time.perf_counter() - start
    encoder = policy._encoder
    return recorder.seconds / rollout, alone / rollout, encoder.hits / (encoder.hits + encoder.misses)


def benchmark_model(warm_start_steps: int) -> str:
    """The tiny Qwen3, warm-started on the three games' answer format, saved once."""
    base = ensure_tiny_qwen3(os.path.join(tempfile.gettempdir(), "spiral-bench-tiny-qwen3"))
    if not warm_start_steps:
        return str(base)
    path = os.path.join(tempfile.gettempdir(), f"spiral-bench-tiny-qwen3-warm{warm_start_steps}")
    if not os.path.exists(os.path.join(path, "config.json")):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from spiral_train.warm_start import warm_start

        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        warm_start(model, tokenizer, BaseModelTemplate(), list(GAMES), list(GAMES.values()), warm_start_steps, 32, 3e-3, 0)
        staging = path + ".writing"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, path)
    return path


def turn_stats(backend: Any, seed: int) -> str:
    """Turns per game and invalid-move share of the model in a short mixed rollout."""
    policy = LLMPolicy(backend, BaseModelTemplate(), SamplingConfig(max_tokens=16), "tiny")
    rows = []
    for game, kwargs in GAMES.items():
        rollout = RolloutEngine([Matchup(game, (policy, policy), env_kwargs=kwargs)], concurrency=64, seed=seed).run(games=128)
        invalid = statistics.fmean(s.invalid for s in rollout.samples)
        rows.append(f"{game} {len(rollout.samples) / 128:.1f} turns/game, {invalid:.0%} invalid")
    return "; ".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--games", type=int, default=256, help="games per measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", help="model directory (default: build the tiny Qwen3)")
    parser.add_argument("--warm-start-steps", type=int, default=150)
    args = parser.parse_args()
    model = args.model or benchmark_model(args.warm_start_steps)
    backend = make_backend(args.backend, model)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; backend {args.backend}; "
          f"tiny Qwen3 (warm start: {args.warm_start_steps} steps); up to 16 new tokens per turn; "
          f"median of {args.repeats} runs")
    print(f"model's play: {turn_stats(backend, seed=10**6 + 1)}\n")
    print("| game | games/s, 64 concurrent | games/s, one at a time | speed-up |\n|---|---:|---:|---:|")
    overhead_ratios(backend, args.games, seed=10**6)  # warm-up: first shapes, allocator, caches
    for game in GAMES:
        batched = statistics.median(games_per_second(backend, game, 64, args.games, r) for r in range(args.repeats))
        single = statistics.median(games_per_second(backend, game, 1, max(args.games // 4, 8), r) for r in range(args.repeats))
        print(f"| {game} | {batched:.1f} | {single:.1f} | {batched / single:.1f}x |")
    for label, cache_size in [("", 4096), (" without the prompt cache", 0)]:
        inline, replayed, hits = zip(*(overhead_ratios(backend, args.games, r, cache_size) for r in range(args.repeats)))
        print(f"\noverhead{label} (1.0 = none): generation time / full rollout wall time = "
              f"{statistics.median(inline):.3f} timed inside the rollout, "
              f"{statistics.median(replayed):.3f} replaying the same calls alone; "
              f"prompt-cache hits {statistics.median(hits):.1%}")


if __name__ == "__main__":
    main()
