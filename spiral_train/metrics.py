"""Metrics every step to a JSONL file and TensorBoard (Weights & Biases optional).

Numbers are logged as they are: NaN and infinity are written (as JSON's ``NaN`` and
``Infinity``), never dropped. A resumed run first cuts both logs back to the checkpoint's step,
so that a step the killed run logged after its last checkpoint appears once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Writes ``{"step": n, **metrics}`` lines to ``metrics.jsonl`` and scalars to TensorBoard."""

    def __init__(
        self,
        directory: str | Path,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        config: dict | None = None,
        resume_step: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "metrics.jsonl"
        if resume_step is not None:
            _truncate(path, resume_step)
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self.writer = SummaryWriter(str(self.directory / "tensorboard"), purge_step=purge)
        self.wandb = None
        if wandb_project:
            import wandb

            self.wandb = wandb.init(project=wandb_project, config=config, dir=str(self.directory))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}
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
    """The records of a metrics file; a line cut short by a kill (or otherwise unreadable) is
    skipped."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as source:
        for line in source:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
    return records


def _truncate(path: Path, step: int) -> None:
    """Keep the records of steps up to ``step`` (atomically: the old file stays until the new
    one is complete)."""
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r["step"] <= step]
    staging = path.with_name(path.name + ".tmp")
    with open(staging, "w", encoding="utf-8") as target:
        target.writelines(json.dumps(record) + "\n" for record in kept)
        target.flush()
        os.fsync(target.fileno())
    os.replace(staging, path)
