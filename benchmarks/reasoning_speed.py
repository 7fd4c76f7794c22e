"""Reasoning evaluation speed: grader answers per second, and a MATH500 run on the tiny Qwen3.

* Grader: answers graded per second in this process (main thread, math-verify under the time
  limit), for three kinds of response over MATH500's gold answers: the gold itself (the text
  comparison decides), another problem's answer (the full symbolic check, graded wrong), and
  no box but a closing ``The final answer is ...`` (math-verify's anchored extraction).
* MATH500: ``evaluate_reasoning`` with the transformers backend on the tiny Qwen3 (random
  weights) on the CPU: its wall time, and the share of it spent outside the backend's
  generate calls (prompts, grading, records, results).

MATH500 is read from a local JSONL file (``--math500``, the math-evaluation-harness layout:
problem, answer) or, without one, from the Hugging Face Hub. Usage:
``python benchmarks/reasoning_speed.py --math500 PATH [--limit N] [--preset greedy] [--max-tokens 512]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

from spiral_agents.llm.prompts import BaseModelTemplate
from spiral_agents.llm.tiny import ensure_tiny_qwen3
from spiral_train.reasoning.data import load_benchmark
from spiral_train.reasoning.evaluate import evaluate_reasoning
from spiral_train.reasoning.grading import clear_parse_caches, grade_math
from spiral_train.reasoning.protocol import PRESETS


def grader_rates(golds: list[str], repeats: int) -> dict[str, float]:
    """Answers graded per second for each kind of response (median of ``repeats`` passes)."""
    others = golds[1:] + golds[:1]
    kinds = {
        "gold answer (text match)": [(f"So the answer is \\boxed{{{g}}}.", g) for g in golds],
        "another problem's answer (symbolic check)": [(f"So the answer is \\boxed{{{o}}}.", g) for g, o in zip(golds, others)],
        "no box, 'The final answer is ...'": [(f"Thus. The final answer is ${o}$.", g) for g, o in zip(golds, others)],
    }  # fmt: skip
    grade_math("warm up \\boxed{1}", "1")
    rates = {}
    for kind, pairs in kinds.items():
        times = []
        for _ in range(repeats):
            clear_parse_caches()  # every pass parses every answer, as a run's first sight of it
            start = time.perf_counter()
            for response, gold in pairs:
                grade_math(response, gold)
            times.append(time.perf_counter() - start)
        rates[kind] = len(pairs) / statistics.median(times)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--math500", help="local MATH500 JSONL (default: the Hugging Face Hub)")
    parser.add_argument("--limit", type=int, help="only the first N problems in the MATH500 run")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="greedy")
    parser.add_argument("--max-tokens", type=int, default=512, help="new tokens per response in the MATH500 run")
    parser.add_argument("--repeats", type=int, default=3, help="grader passes (median)")
    parser.add_argument("--skip-run", action="store_true", help="grader only")
    args = parser.parse_args()
    benchmark = load_benchmark("math500", args.math500)
    golds = [p.answer for p in benchmark.problems]

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("\n| grader: response kind | answers/s |\n|---|---:|")
    for kind, rate in grader_rates(golds, args.repeats).items():
        print(f"| {kind} | {rate:,.0f} |")
    if args.skip_run:
        return

    from spiral_agents.llm.hf_backend import TransformersBackend

    model = ensure_tiny_qwen3(os.path.join(tempfile.gettempdir(), "spiral-bench-tiny-qwen3"))
    loaded = time.perf_counter()
    backend = TransformersBackend(str(model))
    load_s = time.perf_counter() - loaded
    problems = benchmark.problems[: args.limit] if args.limit else benchmark.problems
    protocol = PRESETS[args.preset].with_overrides(max_tokens=args.max_tokens)
    results = evaluate_reasoning(backend, BaseModelTemplate(), problems, protocol)
    timing, math = results.timing, results.benchmarks["math500"]
    outside = 1 - timing["generation_s"] / timing["wall_s"]
    tokens = (math.mean_response_tokens or 0) * len(problems) * protocol.samples
    print(f"\nMATH500 on the tiny Qwen3 (transformers, CPU): {len(problems)} problems, preset {protocol.name} "
          f"({protocol.samples} sample(s), up to {protocol.max_tokens} new tokens), model load {load_s:.1f} s")
    print("| wall time | generation | grading | outside generation | tokens/s | mean tokens | cut off |\n"
          "|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {timing['wall_s']:.1f} s | {timing['generation_s']:.1f} s | {timing['grading_s']:.2f} s | "
          f"{outside:.1%} | {tokens / timing['generation_s']:,.0f} | {math.mean_response_tokens:.0f} | "
          f"{math.cut_off_share:.0%} |")


if __name__ == "__main__":
    main()
