"""The output folder of a run: start fresh or resume, never silently overwrite results.

A fresh run needs a folder without a run in it (checkpoints, metrics or TensorBoard logs);
``overwrite`` clears those first. A resumed run continues from a loadable checkpoint (see
:func:`spiral_train.checkpoint.choose_checkpoint`) and may change settings, except those that
would make the checkpoint a different experiment (the model, the games' rules).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spiral_train.checkpoint import (
    choose_checkpoint,
    later_checkpoints,
    list_checkpoints,
    read_state,
    set_aside,
)
from spiral_train.config import ConfigError, TrainConfig

RUN_FILES = ("checkpoints", "metrics.jsonl", "tensorboard", "served-weights", "reasoning", "opponents", "learning_curve.png")
"""What a run writes into its output folder (``overwrite`` removes these and nothing else)."""
FIXED_ON_RESUME = ("model.path", "model.lora_rank", "model.lora_alpha", "model.lora_dropout")


class RunFolderError(RuntimeError):
    """The output folder does not allow the requested start (the message says what to do)."""


@dataclass(frozen=True)
class RunStart:
    """Where a run starts: ``checkpoint`` None for a fresh run."""

    checkpoint: Path | None
    message: str
    """``starting fresh ...`` or ``resumed from step N (path)``, with any note on the choice."""
    changes: list[str] = field(default_factory=list)
    """Settings that differ from the checkpoint's, as ``key: old -> new``."""


def check_writable(output_dir: str | Path) -> None:
    """Create ``output_dir`` and write a probe file there, or raise ConfigError naming it."""
    output = Path(output_dir)
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output, prefix=".write-check-"):
            pass
    except OSError as error:
        raise ConfigError(f"output_dir: cannot write to {output}: {error.strerror or error}") from None


def plan_start(
    config: TrainConfig, resume: bool = False, resume_from: str | None = None, overwrite: bool = False
) -> RunStart:
    """Decide where the run in ``config.output_dir`` starts; raise RunFolderError (or
    CheckpointError for a damaged checkpoint) rather than overwrite a step or a result."""
    output = Path(config.output_dir)
    check_writable(output)
    root = output / "checkpoints"
    found = list_checkpoints(root)
    if (resume or resume_from) and (found or resume_from):
        path, note = choose_checkpoint(root, resume_from)
        step = int(path.name.removeprefix("step-"))
        saved = read_state(path, hashes=False).trainer.config  # choose_checkpoint verified it
        changes = changed_settings(saved, config.to_dict())
        later = later_checkpoints(root, step)
        if later and not overwrite:
            raise RunFolderError(
                f"{', '.join(p.name for p in later)} in {root} come after {path.name} and the "
                "resumed run would write over them: move them away, or pass --overwrite to set "
                f"them aside in {root / 'superseded'}"
            )
        if later:
            note = f"{note + '; ' if note else ''}set aside {', '.join(p.name for p in later)} in {set_aside(root, later)}"
        return RunStart(path, f"resumed from step {step} ({path})" + (f"; {note}" if note else ""), changes)
    existing = [name for name in RUN_FILES if _holds_results(output / name)]
    if existing and resume and not resume_from:
        # a run killed before its first checkpoint: resuming it is starting it again
        overwrite = True
    if existing and not overwrite:
        raise RunFolderError(
            f"{output} already holds a run ({', '.join(existing)}): continue it with --resume, "
            "choose another output_dir, or pass --overwrite to replace it"
        )
    for name in existing:
        path = output / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    cleared = f" (replaced {', '.join(existing)})" if existing else ""
    if resume:
        cleared += "; --resume found no checkpoint"
    return RunStart(None, f"starting fresh in {output}{cleared}")


def _holds_results(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():
        return any(path.iterdir())
    return path.exists() and (not path.is_file() or os.path.getsize(path) > 0)


def flatten(settings: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "l": [x]}`` -> ``{"a.b": 1, "l.0": x}``."""
    if isinstance(settings, dict):
        items = settings.items()
    elif isinstance(settings, list):
        items = enumerate(settings)
    else:
        return {prefix: settings}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def changed_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting that differs from the checkpoint's; ConfigError
    for a change that cannot apply to the saved weights and baselines."""
    before, after = flatten(saved), flatten(current)
    refused = [key for key in FIXED_ON_RESUME if before.get(key) != after.get(key)]
    saved_games = {g["id"]: g.get("env_kwargs", {}) for g in saved.get("games", [])}
    for game in current.get("games", []):
        if game["id"] in saved_games and saved_games[game["id"]] != game.get("env_kwargs", {}):
            refused.append(f"games ({game['id']} env_kwargs)")
    if refused:
        lines = [f"{key}: differs from the checkpoint's and cannot change on resume" for key in refused]
        raise ConfigError("\n".join(lines) + "\n(start a new run in another output_dir)")

    def shown(flat: dict[str, Any], key: str) -> str:
        return repr(flat[key]) if key in flat else "unset"

    return [
        f"{key}: {shown(before, key)} -> {shown(after, key)}"
        for key in sorted(set(before) | set(after))
        if key not in before or key not in after or before[key] != after[key]
    ]
