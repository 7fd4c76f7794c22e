"""Checkpoints that survive a kill at any moment.

A checkpoint is a folder ``step-NNNNNN`` holding the weights (safetensors), the optimizer and
scheduler, the RAE baselines, every RNG state, the step and sample counters and the config.
It is written under a temporary name and renamed into place, and the ``latest`` pointer is
replaced atomically afterwards, so an interrupted write leaves the last good one in force.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model


@dataclass
class TrainerState:
    step: int
    samples: int
    games: int
    baselines: dict[str, Any]
    config: dict[str, Any]


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "learner": generator.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["learner"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: str | Path,
    state: TrainerState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically and point ``latest`` at it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:06d}"
    staging = root / f".writing-step-{state.step:06d}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    save_model(model, str(staging / "model.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(generator)},
        staging / "training.pt",
    )
    (staging / "state.json").write_text(json.dumps(state.__dict__, indent=1, default=str))
    _fsync_dir(staging)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    pointer = root / ".latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / "latest")
    _fsync_dir(root)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint ``latest`` points at, or None when there is none."""
    pointer = Path(root) / "latest"
    if not pointer.exists():
        return None
    path = Path(root) / pointer.read_text().strip()
    return path if (path / "state.json").exists() else None


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    generator: torch.Generator | None = None,
) -> TrainerState:
    """Restore weights (and, when given, optimizer, scheduler and RNGs) from ``path``."""
    path = Path(path)
    load_model(model, str(path / "model.safetensors"))
    training = torch.load(path / "training.pt", weights_only=False)
    if optimizer is not None:
        optimizer.load_state_dict(training["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(training["scheduler"])
    if generator is not None:
        set_rng_state(training["rng"], generator)
    return TrainerState(**json.loads((path / "state.json").read_text()))


def _fsync_dir(path: Path) -> None:
    for file in path.iterdir() if path.is_dir() else ():
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
