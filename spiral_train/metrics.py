"""Metrics every step to a JSONL file and TensorBoard (Weights & Biases optional)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Writes ``{"step": n, **metrics}`` lines to ``metrics.jsonl`` and scalars to TensorBoard."""

    def __init__(self, directory: str | Path, tensorboard: bool = True, wandb_project: str | None = None, config: dict | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.file = open(self.directory / "metrics.jsonl", "a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.directory / "tensorboard"))
        self.wandb = None
        if wandb_project:
            import wandb

            self.wandb = wandb.init(project=wandb_project, config=config, dir=str(self.directory))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self.file.write(json.dumps({"step": step, **clean}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in clean.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()
        if self.wandb is not None:
            self.wandb.log(clean, step=step)

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as source:
        return [json.loads(line) for line in source if line.strip()]
