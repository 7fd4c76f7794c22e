"""Step time of asynchronous self-play (max_staleness = 1) against synchronous (0), on the CPU:
one learner and one generator on a local Ray, each pinned to its own core.

    python benchmarks/async_speed.py [--steps 10] [--skip 2] [--out async.json] [key=value ...]

Both runs train the CPU demo config (tiny Qwen3, single-hand Kuhn Poker, no evaluation, no warm
start) for ``--steps`` updates, plus any ``key=value`` overrides; the first ``--skip`` steps
(start-up) are left out and medians of the rest reported (the idle times and the lag are
metrics of k = 1 only). From the synchronous run come the
generation time (waiting for a step's games) and the learning time (the update and the weight
sync); the target is a k = 1 step of at most 1.15 x max(generation, learning). The learner is
pinned to core 0 and the generator to core 1 (every thread of their processes, with
``sched_setaffinity``; Linux only); the controller is not pinned. Ray runs on loopback in a
folder of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's spiral packages (its Ray workers get the working folder's)

KEYS = ("time_generation", "time_learning", "time_weight_sync", "generator_idle_seconds", "learner_idle_seconds", "policy_lag_mean")
TARGET = 1.15


def pin(pid: int, core: int) -> None:
    """Every thread of process ``pid`` on ``core`` only."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {core})


def measure(k: int, steps: int, skip: int, overrides: list[str], folder: Path) -> dict[str, Any]:
    from spiral_agents.llm.tiny import ensure_tiny_qwen3
    from spiral_train.config import load_config
    from spiral_train.trainer import Trainer

    model = ensure_tiny_qwen3(folder / "tiny-qwen3")
    settings = [
        f"model.path={model}",
        f"output_dir={folder / f'k{k}'}",
        f"steps={steps}",
        "eval.every=0",
        "warm_start.steps=0",
        "tensorboard=false",
        "cluster.address=local",
        "cluster.gpus_per_learner=0",
        "cluster.gpus_per_generator=0",
        "cluster.cpus_per_worker=1",
        f"max_staleness={k}",
        *overrides,
    ]
    with Trainer(load_config("configs/cpu-demo.yaml", settings)) as trainer:
        for core, pid in enumerate([*trainer.learners.call("ping"), *trainer.generators.call("ping")]):
            pin(pid, core % (os.cpu_count() or 1))
        rows = []
        for _ in range(steps):
            begin = time.perf_counter()
            metrics = trainer.train_step()
            rows.append({"step": time.perf_counter() - begin, **{key: metrics[key] for key in KEYS if key in metrics}})
    kept = rows[skip:]
    return {key: statistics.median(row[key] for row in kept) for key in ("step", *KEYS) if key in kept[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value for both runs")
    args = parser.parse_args()
    if args.steps <= args.skip:
        parser.error("--steps must exceed --skip")
    if not hasattr(os, "sched_setaffinity"):
        parser.error("pinning to cores needs Linux (os.sched_setaffinity)")
    for name, value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(name, value)
    with tempfile.TemporaryDirectory(prefix="async-") as scratch:
        runs = {k: measure(k, args.steps, args.skip, args.overrides, Path(scratch)) for k in (0, 1)}
    synchronous = runs[0]
    generation = synchronous["time_generation"]
    learning = synchronous["time_learning"] + synchronous["time_weight_sync"]
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "load_average": os.getloadavg(),
        "overrides": args.overrides,
        "steps_measured": args.steps - args.skip,
        "k0": synchronous,
        "k1": runs[1],
        "generation_seconds": generation,
        "learning_seconds": learning,
        "k1_over_k0": runs[1]["step"] / synchronous["step"],
        "k1_over_max": runs[1]["step"] / max(generation, learning),
        "target_k1_over_max": TARGET,
    }
    print("| run | step s | generation s | learning s | weight sync s | generator idle s | learner idle s | lag mean |")
    print("|---|---|---|---|---|---|---|---|")
    for k, r in runs.items():
        idle = " | ".join(f"{r[key]:.2f}" if key in r else "-" for key in ("generator_idle_seconds", "learner_idle_seconds", "policy_lag_mean"))
        print(f"| k = {k} | {r['step']:.2f} | {r['time_generation']:.2f} | {r['time_learning']:.2f} | {r['time_weight_sync']:.3f} | {idle} |")
    print(f"k = 1 step / k = 0 step: {report['k1_over_k0']:.3f}; k = 1 step / max(generation {generation:.2f} s, learning {learning:.2f} s): {report['k1_over_max']:.3f} (target <= {TARGET})")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
