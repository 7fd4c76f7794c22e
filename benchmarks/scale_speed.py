"""Step time of the CPU demo's training split into generation, learning, weight sync and waiting,
for the single process (no Ray), one learner + one generator on Ray, and two + two on Ray.

    python benchmarks/scale_speed.py [--steps 8] [--out scale.json]

Each layout trains the demo config (tiny Qwen3, single-hand Kuhn Poker, no evaluation) for
``--steps`` updates; the first ``--skip`` steps (start-up, first compilations) are left out and the
medians of the rest are reported. The distribution overhead is the median step time of 1+1 on Ray
over the single process's (target: at most 1.10). Ray runs on loopback with its own folder; each
Ray worker gets ``--cpus`` CPUs (its torch threads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

LAYOUTS = {"single process": (1, 1, None), "1 + 1 on Ray": (1, 1, "local"), "2 + 2 on Ray": (2, 2, "local")}
SPLIT = ("time_generation", "time_learning", "time_weight_sync", "time_waiting")


def measure(layout: str, steps: int, skip: int, cpus: float, folder: Path) -> dict[str, float]:
    from spiral_agents.llm.tiny import ensure_tiny_qwen3
    from spiral_train.config import load_config
    from spiral_train.trainer import Trainer

    learners, generators, address = LAYOUTS[layout]
    model = ensure_tiny_qwen3(folder / "tiny-qwen3")
    overrides = [
        f"model.path={model}",
        f"output_dir={folder / layout.replace(' ', '-')}",
        f"steps={steps}",
        "eval.every=0",
        "warm_start.steps=0",
        "tensorboard=false",
        f"cluster.learners={learners}",
        f"cluster.generators={generators}",
        f"cluster.address={'null' if address is None else address}",
        "cluster.gpus_per_learner=0",
        "cluster.gpus_per_generator=0",
        f"cluster.cpus_per_worker={cpus}",
    ]
    config = load_config("configs/cpu-demo.yaml", overrides)
    started = time.perf_counter()
    with Trainer(config) as trainer:
        ready = time.perf_counter() - started
        rows = []
        for _ in range(steps):
            begin = time.perf_counter()
            metrics = trainer.step()
            rows.append({"step": time.perf_counter() - begin, **{k: metrics[k] for k in (*SPLIT, "weight_sync_bytes")}})
    kept = rows[skip:]
    result = {key: statistics.median(row[key] for row in kept) for key in ("step", *SPLIT, "weight_sync_bytes")}
    result["start_seconds"] = ready
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--skip", type=int, default=2)
    parser.add_argument("--cpus", type=float, default=2.0, help="CPUs (torch threads) per Ray worker")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.steps <= args.skip:
        parser.error("--steps must exceed --skip")
    for name, value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(name, value)
    with tempfile.TemporaryDirectory(prefix="scale-") as scratch:
        results = {layout: measure(layout, args.steps, args.skip, args.cpus, Path(scratch)) for layout in LAYOUTS}
    single = results["single process"]["step"]
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "steps_measured": args.steps - args.skip,
        "layouts": results,
        "distribution_overhead": results["1 + 1 on Ray"]["step"] / single,
    }
    print("| layout | step s | generation s | learning s | weight sync s | waiting s | sync bytes | start s |")
    print("|---|---|---|---|---|---|---|---|")
    for layout, r in results.items():
        print(f"| {layout} | {r['step']:.2f} | {r['time_generation']:.2f} | {r['time_learning']:.2f} | {r['time_weight_sync']:.3f} | {r['time_waiting']:.3f} | {r['weight_sync_bytes']:,.0f} | {r['start_seconds']:.0f} |")
    print(f"distribution overhead (1 + 1 on Ray / single process): {report['distribution_overhead']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
