"""``spiral-train``: self-play training from a config file with command-line overrides.

    spiral-train --config configs/cpu-demo.yaml
    spiral-train --config configs/qwen3-4b-base.yaml learner.learning_rate=2e-6 steps=200
    spiral-train --config configs/cpu-demo.yaml --resume
    spiral-train --config configs/cpu-demo.yaml --print-config games.0.env_kwargs.rounds=2
    spiral-train export runs/cpu-demo exported/cpu-demo [--step 20]
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from spiral_train.checkpoint import CheckpointError
from spiral_train.config import ConfigError, load_config
from spiral_train.run_folder import RunFolderError, plan_start

SHIPPED = "configs/cpu-demo.yaml (the CPU demo) or configs/qwen3-4b-base.yaml (SPIRAL's recipe)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spiral-train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help=f"YAML or TOML config file, e.g. {SHIPPED}")
    parser.add_argument("overrides", nargs="*", help="key.sub=value settings (games.0.id=Nim-v0)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest loadable checkpoint")
    parser.add_argument("--resume-from", metavar="STEP", help="continue from this checkpoint (step-N)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in output_dir")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--plot", action="store_true", help="write a learning-curve PNG and a summary at the end")
    return parser


def _status(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spiral-train export",
        description="Write a checkpoint of a run as a Hugging Face model folder (LoRA merged) that transformers and vLLM load.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run's output_dir")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the model folder to write; it must not exist or be empty")
    parser.add_argument("--step", metavar="N", help="export checkpoint step-N (default: the newest loadable one)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR when it holds files")
    return parser


def export(argv: list[str]) -> int:
    """``spiral-train export RUN_DIR OUT_DIR [--step N] [--overwrite]``; prints OUT_DIR."""
    args = _export_parser().parse_args(argv)
    from spiral_train.export import ExportError, export_checkpoint

    try:
        out = export_checkpoint(args.run_dir, args.out_dir, args.step, args.overwrite, log=_status)
    except (ExportError, CheckpointError) as error:
        print("\n".join(f"spiral-train export: {line}" for line in str(error).splitlines()), file=sys.stderr)
        return 1
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        return export(argv[1:])
    args = _parser().parse_intermixed_args(argv)

    def fail(message: str, status: int = 2) -> int:
        print("\n".join(f"spiral-train: {line}" for line in message.splitlines()), file=sys.stderr)
        return status

    if args.config is None and not args.print_config:
        return fail(f"bad config: --config: no config file given; pass --config {SHIPPED}")
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        return fail("\n".join(f"bad config: {line}" for line in str(error).splitlines()))
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    try:
        start = plan_start(config, args.resume, args.resume_from, args.overwrite)
    except ConfigError as error:
        return fail("\n".join(f"bad config: {line}" for line in str(error).splitlines()))
    except (RunFolderError, CheckpointError) as error:
        return fail(str(error), 1)
    from spiral_agents.llm.rollout import BackendFailure
    from spiral_agents.llm.vllm_server import WeightSyncError
    from spiral_train.cluster import WorkerFailure, preflight
    from spiral_train.learner import NonFiniteError
    from spiral_train.trainer import Trainer

    try:
        preflight(config)
        with Trainer(config) as trainer:
            history = trainer.train(start=start, progress=not args.quiet, log=_status)
    except ConfigError as error:
        return fail("\n".join(f"bad config: {line}" for line in str(error).splitlines()))
    except (CheckpointError, NonFiniteError, WeightSyncError, BackendFailure, WorkerFailure) as error:
        return fail(str(error), 1)
    if args.plot:
        from spiral_train.report import write_report

        print(write_report(history, config.output_dir))
    else:
        print(json.dumps(history[-1] if history else {}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
