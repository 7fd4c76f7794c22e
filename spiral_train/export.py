"""A checkpoint of a run as a Hugging Face model folder (``spiral-train export``).

The folder holds ``config.json``, ``generation_config.json`` (when the base model has one), the
tokenizer's files and ``model.safetensors`` (in shards when large, as ``save_pretrained`` cuts
them), LoRA adapters merged into the weights as the generator got them during training: what
``AutoModelForCausalLM.from_pretrained`` and vLLM load. The base model's config and tokenizer
come from the run's ``model.path`` (as the checkpoint saved it); the weights are written in the
base model's dtype. Any checkpoint of the run exports, of either format, whatever number of
learner ranks wrote it.

The output folder must not exist or be empty (``overwrite`` replaces it); it is written in a
staging folder beside it and renamed into place, so it is never half written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from spiral_train.checkpoint import (
    CheckpointError,
    choose_checkpoint,
    list_checkpoints,
    load_learner_state,
    parse_step,
    read_state,
    step_name,
    verify_checkpoint,
)
from spiral_train.run_folder import RUN_FILES


class ExportError(RuntimeError):
    """A run or output folder that does not allow the export (the message says what to do)."""


def export_checkpoint(
    run_dir: str | Path,
    out_dir: str | Path,
    step: str | int | None = None,
    overwrite: bool = False,
    *,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write checkpoint ``step`` of the run in ``run_dir`` (default: the newest loadable one) as a
    Hugging Face model folder ``out_dir``, and return it; ``log`` gets which checkpoint.

    Raises :class:`ExportError` for a folder that is not a run's, an ``out_dir`` that holds
    something (unless ``overwrite``) or a base model that does not load, and
    :class:`~spiral_train.checkpoint.CheckpointError` for a missing or damaged checkpoint;
    ``out_dir`` is then as it was.
    """
    run, out = Path(run_dir), Path(out_dir)
    root = run / "checkpoints"
    if not run.is_dir():
        raise ExportError(f"{run} is not a folder: give the output_dir of a training run")
    if not root.is_dir():
        raise ExportError(f"{run} holds no checkpoints folder: not a training run's output_dir, or a run that saved no checkpoint yet")
    _check_out(out, run, overwrite)
    path = _checkpoint(root, step, log)
    model, tokenizer, base = trained_model(path)
    staging = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.exporting-", dir=out.parent))
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if not _has_generation_config(base):
            (staging / "generation_config.json").unlink(missing_ok=True)
        _check_out(out, run, overwrite)
        _put_in_place(staging, out)
    except OSError as error:
        raise ExportError(f"could not write {out}: {error.strerror or error}; it is as it was") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return out


def _check_out(out: Path, run: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that is not a folder, holds files (unless ``overwrite``), is or holds the
    run folder, or lies in what the run writes (its checkpoints, ...)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ExportError(f"{out} exists and is not a folder: choose another output folder")
    resolved, run_resolved = out.resolve(), run.resolve()
    if resolved == run_resolved or resolved in run_resolved.parents:
        raise ExportError(f"{out} is or holds the run folder {run}: choose another output folder")
    written = [name for name in RUN_FILES if resolved == run_resolved / name or run_resolved / name in resolved.parents]
    if written:
        raise ExportError(f"{out} lies in {run / written[0]}, which the run writes: choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} is not empty: choose another output folder, or pass --overwrite to replace it")


def _checkpoint(root: Path, step: str | int | None, log: Callable[[str], None] | None) -> Path:
    """The checkpoint to export, verified (sha256 included)."""
    if step is None:
        path, note = choose_checkpoint(root)
    else:
        path, note = root / step_name(parse_step(step)), None
        if not os.path.lexists(path):
            complete = [info.path.name for info in list_checkpoints(root) if info.loadable]
            raise CheckpointError(f"{root} has no {path.name}; its complete checkpoints: {', '.join(complete) or 'none'}")
        verify_checkpoint(path)
    if log is not None:
        log(f"exporting {path}" + (f" ({note})" if note else ""))
    return path


def trained_model(path: Path) -> tuple[torch.nn.Module, Any, str]:
    """The model of the checkpoint at ``path`` as a plain Hugging Face model in its base
    model's dtype (LoRA merged), the base model's tokenizer and its ``model.path``."""
    from transformers import AutoConfig

    from spiral_train.config import ConfigError, build_config
    from spiral_train.model import generator_weights, is_lora, load_model, upcast_trained

    state = read_state(path, hashes=False)  # verified just now
    settings = state.trainer.config.get("model")
    if not isinstance(settings, dict):
        raise ExportError(f"{path / 'state.json'}: the run's config has no model settings")
    try:
        config = build_config({"model": settings})
    except ConfigError as error:
        raise ExportError(f"{path / 'state.json'}: the run's model settings are not usable here: {error}") from None
    base = config.model.path
    try:
        model, tokenizer = load_model(config)
        dtype = AutoConfig.from_pretrained(base).dtype or torch.float32
    except (OSError, ValueError) as error:
        raise ExportError(f"cannot load the run's base model {base!r} (model.path in its checkpoint): {error}") from None
    upcast_trained(model)  # the trained weights as the learner keeps them: float32
    load_learner_state(path, model, hashes=False)
    if is_lora(model):
        merged = generator_weights(model)
        model = model.unload()
        model.load_state_dict(merged)
    return model.to(dtype), tokenizer, base


def _has_generation_config(base: str) -> bool:
    from transformers import GenerationConfig

    try:
        GenerationConfig.from_pretrained(base)
    except OSError:
        return False
    return True


def _put_in_place(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an ``out`` with files is moved aside first (and back if
    the rename fails) and deleted after."""
    if not (out.is_dir() and any(out.iterdir())):
        os.rename(staging, out)  # over an empty folder too
        return
    aside = staging.with_name(f".{out.name}.replaced-{staging.name.rpartition('-')[2]}")
    os.rename(out, aside)
    try:
        os.rename(staging, out)
    except OSError:
        os.rename(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)
