"""The single-process checkpoint format (manifest ``format`` 1) as the trainer wrote it before
checkpoints were sharded, kept to test that such checkpoints still load; and
:func:`load_checkpoint`, a single process restoring itself from either format."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from spiral_train.checkpoint import (
    FILES,
    FORMAT,
    MANIFEST,
    MAX_STEP,
    POINTER,
    CheckpointError,
    TrainerState,
    _fsync_dir,
    _json_bytes,
    _kept,
    _point_latest,
    _reason,
    _remove_leftovers,
    _sha256,
    _write_bytes,
    load_learner_state,
    read_state,
    step_name,
)


def save_checkpoint(
    root: str | Path,
    state: TrainerState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
) -> Path:
    """Write checkpoint ``state.step`` under ``root`` and point ``latest`` at it.

    Raises :class:`CheckpointError` (and writes nothing) when that step folder exists already
    or a model or optimizer tensor is not finite; raises it after removing the partial
    folder when a write fails (disk full, ...), ``latest`` unchanged.
    """
    root = Path(root)
    if not 0 <= state.step <= MAX_STEP:
        raise CheckpointError(f"cannot save step {state.step}: steps run from 0 to {MAX_STEP}")
    final = root / step_name(state.step)
    if os.path.lexists(final):
        raise CheckpointError(f"{final} exists already; a checkpoint is never overwritten (move it aside or delete it first)")
    weights = _weights(model)
    tensors: dict[str, torch.Tensor] = {}
    training = {"optimizer": _optimizer_state(optimizer, tensors), "scheduler": scheduler.state_dict(), "rng": _rng_state(generator, tensors)}
    _refuse_non_finite(final, weights, tensors)
    documents = {"training.json": _json_bytes(training, final.name), "state.json": _json_bytes(dataclasses.asdict(state), final.name, default=str)}

    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    staging = root / f".writing-{final.name}"
    file = staging
    try:
        staging.mkdir()
        for name, content in (("model.safetensors", weights), ("training.safetensors", tensors)):
            file = staging / name
            save_file(content, file)
            _fsync(file)
        for name, data in documents.items():
            file = staging / name
            _write_bytes(file, data)
        files = {name: {"sha256": _sha256(staging / name), "bytes": (staging / name).stat().st_size} for name in FILES}
        file = staging / MANIFEST
        _write_bytes(file, json.dumps({"format": FORMAT, "step": state.step, "files": files}, indent=1).encode())
        _fsync_dir(staging)
        os.rename(staging, final)
    except (OSError, SafetensorError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointError(f"could not save {final.name}: {_reason(error)} while writing {file}; {_kept(root)}") from None
    try:
        _fsync_dir(root)
        _point_latest(root, final.name)
    except OSError as error:
        raise CheckpointError(f"{final} is saved, but {_reason(error)} while updating {root / POINTER}; resuming finds {final.name} as the newest checkpoint") from None
    return final


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors by name, each storage once (tied weights under their first name)."""
    weights: dict[str, torch.Tensor] = {}
    seen: set[tuple] = set()
    for name, tensor in model.state_dict().items():
        identity = (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if tensor.numel() and identity in seen:
            continue
        seen.add(identity)
        weights[name] = tensor.detach().contiguous()
    return weights


def _optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    saved = optimizer.state_dict()
    state: dict[str, dict[str, Any]] = {}
    for param_id, values in saved["state"].items():
        state[str(param_id)] = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{key}"] = value.detach().contiguous()
                value = {"tensor": f"optimizer.{param_id}.{key}"}
            state[str(param_id)][key] = value
    return {"param_groups": saved["param_groups"], "state": state}


def _rng_state(generator: torch.Generator, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    version, internal, gauss_next = random.getstate()
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.learner"] = generator.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    for device, cuda_state in enumerate(cuda):
        tensors[f"rng.cuda.{device}"] = cuda_state
    return {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {"bit_generator": name, "key": key.tolist(), "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached_gaussian},
        "torch": {"tensor": "rng.torch"},
        "learner": {"tensor": "rng.learner"},
        "cuda": [{"tensor": f"rng.cuda.{device}"} for device in range(len(cuda))],
    }


def _refuse_non_finite(final: Path, weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> None:
    named = [*(("model", n, t) for n, t in weights.items()), *(("optimizer", n, t) for n, t in tensors.items())]
    bad = [f"{kind} {name}" for kind, name, tensor in named if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(f"not saving {final.name}: NaN or inf values in {', '.join(bad[:3])}{more}; {_kept(final.parent)}")


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    generator: torch.Generator | None = None,
    hashes: bool = True,
) -> TrainerState:
    """Restore weights (and, when given, optimizer, scheduler and every RNG of this process) from
    ``path`` (either format) in a single process: ``load_learner_state`` (which checks all that
    ``read_state`` checks), then the controller's part."""
    load_learner_state(path, model, optimizer, scheduler, generator, hashes)
    state = read_state(path, hashes=False)
    if generator is not None:
        state.rng.restore()
    return state.trainer
