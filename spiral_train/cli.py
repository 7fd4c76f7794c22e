"""``spiral-train``: self-play training from a config file with command-line overrides.

    spiral-train --config configs/cpu-demo.yaml
    spiral-train --config configs/qwen3-4b-base.yaml learner.learning_rate=2e-6 steps=200
    spiral-train --config configs/cpu-demo.yaml --resume
"""

from __future__ import annotations

import argparse
import json
import sys

from spiral_train.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spiral-train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML or TOML config file (defaults: the paper recipe)")
    parser.add_argument("overrides", nargs="*", help="section.key=value settings")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--plot", action="store_true", help="write a learning-curve PNG and a summary at the end")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as error:
        print(f"spiral-train: bad config: {error}", file=sys.stderr)
        return 2
    from spiral_train.trainer import Trainer

    trainer = Trainer(config)
    history = trainer.train(resume=args.resume, progress=not args.quiet)
    if args.plot:
        from spiral_train.report import write_report

        summary = write_report(history, config.output_dir)
        print(summary)
    else:
        print(json.dumps(history[-1] if history else {}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
