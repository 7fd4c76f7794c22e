"""Checkpoints that survive a kill at any moment and that load without running code.

A checkpoint is a folder ``step-NNNNNN`` (six digits) under the checkpoints folder, holding

- ``model.safetensors``: the model's tensors (tied weights once, under their first name);
- ``training.safetensors``: the optimizer's state tensors and the torch RNG states (CPU, the
  learner's generator, each CUDA device) as uint8 tensors;
- ``training.json``: the optimizer's param groups and non-tensor state, the scheduler's state,
  the Python and NumPy RNG states;
- ``state.json``: the :class:`TrainerState` (step, sample and game counters, RAE baselines,
  config);
- ``manifest.json``: the format version, the step, and the size and sha256 of each file above.

Nothing is unpickled. Loading checks the manifest, every file's size and sha256, the JSON
against schemas and every tensor's name, shape and dtype against the live model, optimizer
and RNGs before it changes any of them; any problem is one :class:`CheckpointError` naming the
file, with the other checkpoints that look complete.

A checkpoint is written under ``.writing-step-NNNNNN``, fsynced and renamed into place; the
``latest`` pointer (a plain file holding ``step-NNNNNN``) is replaced atomically afterwards.
A failed or interrupted save leaves the last good checkpoint and ``latest`` as they were.
A step folder is never overwritten. One process writes a checkpoints folder at a time.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = 1
MAX_STEP = 999_999
POINTER = "latest"
MANIFEST = "manifest.json"
FILES = ("model.safetensors", "training.safetensors", "training.json", "state.json")
STEP_NAME = re.compile(r"step-([0-9]{6})")
_LEFTOVER = re.compile(r"\.(writing|deleting)-step-[0-9]{6}")


class CheckpointError(ValueError):
    """A checkpoint that cannot be saved, found or loaded; the message says which and why."""


@dataclass
class TrainerState:
    step: int
    samples: int
    games: int
    baselines: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True)
class CheckpointInfo:
    """A ``step-NNNNNN`` entry of a checkpoints folder; ``problem`` is why it is not loadable."""

    path: Path
    step: int
    problem: str | None

    @property
    def loadable(self) -> bool:
        return self.problem is None


class ResumeChoice(NamedTuple):
    """The checkpoint to resume from; ``note`` says why it is not simply what ``latest`` names."""

    path: Path
    note: str | None

    @property
    def step(self) -> int:
        return int(self.path.name[5:])


# --- schemas of the JSON files ------------------------------------------------------------------


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Count = Annotated[int, Field(ge=0)]
Word = Annotated[int, Field(ge=0, lt=2**32)]


class _FileEntry(_Schema):
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: Count


class _Manifest(_Schema):
    format: Literal[1]
    step: Annotated[int, Field(ge=0, le=MAX_STEP)]
    files: dict[str, _FileEntry]


class _State(_Schema):
    step: Annotated[int, Field(ge=0, le=MAX_STEP)]
    samples: Count
    games: Count
    baselines: dict[str, Any]
    config: dict[str, Any]


class _Tensor(_Schema):
    tensor: str


class _Optimizer(_Schema):
    param_groups: list[dict[str, Any]]
    state: dict[Annotated[str, Field(pattern=r"^[0-9]+$")], dict[str, _Tensor | bool | int | float | None]]


class _PythonRNG(_Schema):
    version: Literal[3]
    internal: Annotated[list[Word], Field(min_length=625, max_length=625)]
    gauss_next: float | None


class _NumpyRNG(_Schema):
    bit_generator: Literal["MT19937"]
    key: Annotated[list[Word], Field(min_length=624, max_length=624)]
    pos: Annotated[int, Field(ge=0, le=624)]
    has_gauss: Literal[0, 1]
    cached_gaussian: float


class _RNG(_Schema):
    python: _PythonRNG
    numpy: _NumpyRNG
    torch: _Tensor
    learner: _Tensor
    cuda: list[_Tensor]


class _Training(_Schema):
    optimizer: _Optimizer
    scheduler: dict[str, Any]
    rng: _RNG


# --- names and the ``latest`` pointer ----------------------------------------------------------


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def parse_step(text: str | int) -> int:
    """The step of ``step-N``, ``step-00000N`` or ``N`` (as given to ``--resume-from``)."""
    match = re.fullmatch(r"(?:step-)?([0-9]{1,6})", str(text).strip())
    if match is None:
        raise CheckpointError(f"{str(text)[:40]!r} is not a checkpoint step (write step-N, step-00000N or N)")
    return int(match.group(1))


def latest_checkpoint(root: str | Path) -> Path | None:
    """The folder ``latest`` names, or None when there is no ``latest``.

    The pointer must be a plain file holding the name of a direct child ``step-NNNNNN`` that is
    a folder; anything else (a path, garbage, a missing folder) is a :class:`CheckpointError`.
    The folder's contents are not checked here.
    """
    pointer = Path(root) / POINTER
    if not os.path.lexists(pointer):
        return None
    if pointer.is_symlink() or not pointer.is_file():
        raise CheckpointError(f"{pointer} is not a plain file")
    with open(pointer, "rb") as handle:
        raw = handle.read(65)
    name = raw.decode("ascii", errors="replace").strip()
    if len(raw) > 64 or STEP_NAME.fullmatch(name) is None:
        raise CheckpointError(f"{pointer} holds {name[:40]!r}, not a checkpoint name step-NNNNNN")
    path = Path(root) / name
    if path.is_symlink() or not path.is_dir():
        raise CheckpointError(f"{pointer} names {name}, which is not a checkpoint folder there")
    return path


def _point_latest(root: Path, name: str) -> None:
    temporary = root / ".latest.tmp"
    temporary.unlink(missing_ok=True)
    _write_bytes(temporary, name.encode())
    os.replace(temporary, root / POINTER)
    _fsync_dir(root)


# --- saving -------------------------------------------------------------------------------------


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
    documents = {"training.json": _json_bytes(training, final), "state.json": _json_bytes(dataclasses.asdict(state), final, default=str)}

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


def _json_bytes(document: dict[str, Any], final: Path, default: Any = None) -> bytes:
    try:
        return json.dumps(document, indent=1, default=default).encode()
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"not saving {final.name}: the training state is not JSON ({error})") from None


def _reason(error: OSError | SafetensorError) -> str:
    code = error.errno if isinstance(error, OSError) else None
    if code is None:  # safetensors reports an I/O error as text: "... (os error 28)"
        found = re.search(r"os error (\d+)", str(error))
        code = int(found.group(1)) if found else None
    if code == errno.ENOSPC:
        return "no space left on device"
    return os.strerror(code) if code else str(error)


def _kept(root: Path) -> str:
    try:
        latest = latest_checkpoint(root)
    except CheckpointError:
        latest = None
    return f"the last good checkpoint {latest.name} is kept" if latest else "no earlier checkpoint is there"


def _remove_leftovers(root: Path) -> None:
    """Remove what an interrupted save or prune left behind."""
    for entry in root.iterdir():
        if _LEFTOVER.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)


def _write_bytes(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# --- pruning and setting aside ------------------------------------------------------------------


def _step_entries(root: Path) -> list[tuple[int, Path]]:
    """Every ``step-NNNNNN`` entry of ``root`` (folder or not), by step."""
    if not root.is_dir():
        return []
    return sorted((int(m.group(1)), path) for path in root.iterdir() if (m := STEP_NAME.fullmatch(path.name)))


def prune_checkpoints(root: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (0 keeps all); returns the deleted.

    The newest checkpoint and the one ``latest`` names are never deleted. Call after a save.
    """
    if keep_last < 0:
        raise ValueError(f"keep_last must be >= 0, got {keep_last}")
    entries = _step_entries(Path(root))
    if keep_last == 0 or not entries:
        return []
    keep = {path for _, path in entries[-keep_last:]}
    try:
        keep.add(latest_checkpoint(root))
    except CheckpointError:
        pass  # a broken pointer names nothing to keep
    deleted = [path for _, path in entries if path not in keep]
    for path in deleted:
        _delete(path)
    return deleted


def later_checkpoints(root: str | Path, step: int) -> list[Path]:
    """The ``step-NNNNNN`` entries of ``root`` after ``step``, oldest first."""
    return [path for later, path in _step_entries(Path(root)) if later > step]


def set_aside(root: str | Path, paths: list[Path]) -> Path:
    """Move the checkpoints ``paths`` (entries of ``root``) into a new folder under
    ``root/superseded``, which is returned; ``latest`` moves to the newest one left."""
    root = Path(root)
    entries = _own_entries(root, paths)
    (root / "superseded").mkdir(exist_ok=True)
    aside = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=root / "superseded"))
    for path in entries:
        os.rename(path, aside / path.name)
    _repoint_latest(root)
    return aside


def delete_checkpoints(root: str | Path, paths: list[Path]) -> None:
    """Delete the checkpoints ``paths`` (entries of ``root``); ``latest`` moves to the newest one left."""
    root = Path(root)
    for path in _own_entries(root, paths):
        _delete(path)
    _repoint_latest(root)


def _own_entries(root: Path, paths: list[Path]) -> list[Path]:
    """``paths`` as ``step-NNNNNN`` entries of ``root``, or a CheckpointError naming the others."""
    entries = {path.name: path for _, path in _step_entries(root)}
    strangers = [str(p) for p in paths if Path(p).name not in entries or Path(p).parent.resolve() != root.resolve()]
    if strangers:
        raise CheckpointError(f"not checkpoints of {root}: {', '.join(strangers)}")
    return [entries[Path(p).name] for p in paths]


def _repoint_latest(root: Path) -> None:
    """Point ``latest`` at the newest complete checkpoint if what it names is gone."""
    try:
        if latest_checkpoint(root) is not None:
            return
    except CheckpointError:
        pass
    complete = [info for info in list_checkpoints(root) if info.loadable]
    if complete:
        _point_latest(root, complete[-1].path.name)
    else:
        (root / POINTER).unlink(missing_ok=True)
        _fsync_dir(root)


def _delete(path: Path) -> None:
    """Rename first, so that an interrupted delete leaves no half folder named like a checkpoint."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    doomed = path.with_name(f".deleting-{path.name}")
    os.rename(path, doomed)
    shutil.rmtree(doomed)


# --- verifying and choosing ---------------------------------------------------------------------


def verify_checkpoint(path: str | Path, hashes: bool = True) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete checkpoint: its manifest
    valid, every file there with its size and (``hashes``) its sha256."""
    path = Path(path)
    try:
        _verify(path, hashes)
    except CheckpointError as error:
        raise CheckpointError(f"{path} is not loadable: {error}{_others(path)}") from None


def _verify(path: Path, hashes: bool) -> None:
    try:
        if path.is_symlink() or not path.is_dir():
            raise CheckpointError("it is not a folder")
        if not (path / MANIFEST).is_file():
            raise CheckpointError(f"{MANIFEST} is missing (an incomplete copy, or an older checkpoint format)")
        if (path / MANIFEST).stat().st_size > 1 << 20:
            raise CheckpointError(f"{MANIFEST} is too large")
        manifest = _read_json(path / MANIFEST, _Manifest)
        if STEP_NAME.fullmatch(path.name) and manifest.step != int(path.name[5:]):
            raise CheckpointError(f"{MANIFEST} is for step {manifest.step}")
        if sorted(manifest.files) != sorted(FILES):
            raise CheckpointError(f"{MANIFEST} lists {', '.join(sorted(manifest.files)) or 'no files'}, not {', '.join(FILES)}")
        for name, entry in manifest.files.items():
            file = path / name
            if file.is_symlink() or not file.is_file():
                raise CheckpointError(f"{name} is missing")
            if file.stat().st_size != entry.bytes:
                raise CheckpointError(f"{name} has {file.stat().st_size} bytes, the manifest says {entry.bytes} (truncated?)")
        for name, entry in manifest.files.items() if hashes else ():
            if _sha256(path / name) != entry.sha256:
                raise CheckpointError(f"{name} does not match its sha256 in {MANIFEST} (the file is damaged)")
    except OSError as error:
        raise CheckpointError(f"{error.filename or path}: {error.strerror}") from None


def list_checkpoints(root: str | Path, hashes: bool = False) -> list[CheckpointInfo]:
    """Every ``step-NNNNNN`` entry of ``root``, oldest first, with why it is not loadable.

    By default only the structure is checked (manifest, files, sizes: cheap); ``hashes``
    also checks every file's sha256, which reads all of every checkpoint.
    """
    infos = []
    for step, path in _step_entries(Path(root)):
        try:
            _verify(path, hashes)
            infos.append(CheckpointInfo(path, step, None))
        except CheckpointError as error:
            infos.append(CheckpointInfo(path, step, str(error)))
    return infos


def choose_checkpoint(root: str | Path, resume_from: str | int | None = None) -> ResumeChoice:
    """The checkpoint ``--resume`` (or ``--resume-from resume_from``) continues from.

    ``resume_from``: that checkpoint, fully verified, or a :class:`CheckpointError` listing the
    loadable ones. Otherwise: the newest complete checkpoint that passes its sha256 checks;
    that is what ``latest`` names, unless ``latest`` is broken or names a damaged checkpoint,
    or a save was killed between its rename and the pointer update (the note says which).
    A :class:`CheckpointError` listing every entry and its problem when none is loadable.
    Only the chosen checkpoint (and newer ones that fail) are hashed, so the caller may load
    it with ``load_checkpoint(..., hashes=False)`` right away.
    """
    root = Path(root)
    infos = list_checkpoints(root)
    if resume_from is not None:
        step = parse_step(resume_from)
        path = root / step_name(step)
        try:
            _verify(path, hashes=True)
        except CheckpointError as error:
            problem = "it does not exist" if not os.path.lexists(path) else str(error)
            raise CheckpointError(f"cannot resume from {path}: {problem}{_others(path, infos)}") from None
        return ResumeChoice(path, None)
    try:
        latest, latest_problem = latest_checkpoint(root), None
    except CheckpointError as error:
        latest, latest_problem = None, str(error)
    skipped = [(info.step, f"{info.path.name}: {info.problem}") for info in infos if not info.loadable]
    for info in reversed([info for info in infos if info.loadable]):
        try:
            _verify(info.path, hashes=True)
        except CheckpointError as error:
            skipped.append((info.step, f"{info.path.name}: {error}"))
            continue
        if info.path == latest:
            notes = []
        elif latest is None:
            notes = [latest_problem or f"{root / POINTER} is missing"]
        elif int(latest.name[5:]) < info.step:
            notes = [f"latest names {latest.name}, but {info.path.name} is newer and complete (its save was interrupted before latest was updated)"]
        else:
            notes = [f"latest names {latest.name}"]
        notes += [text for step, text in sorted(skipped) if step > info.step]
        note = "; ".join(notes) + f"; using {info.path.name}" if notes else None
        return ResumeChoice(info.path, note)
    problems = ([latest_problem] if latest_problem else []) + [text for _, text in sorted(skipped)]
    raise CheckpointError(f"no loadable checkpoint in {root}: " + ("; ".join(problems) or "there is none"))


def _others(path: Path, infos: list[CheckpointInfo] | None = None) -> str:
    """A sentence listing the other checkpoints next to ``path`` that look complete."""
    if infos is None:
        infos = list_checkpoints(path.parent) if STEP_NAME.fullmatch(path.name) else []
    names = [info.path.name for info in infos if info.loadable and info.path != path]
    if not names:
        return f". No other complete checkpoint is in {path.parent}"
    return f". Complete checkpoints in {path.parent} (sizes checked, hashes when chosen): {', '.join(names)}"


# --- loading ------------------------------------------------------------------------------------


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    generator: torch.Generator | None = None,
    hashes: bool = True,
) -> TrainerState:
    """Restore weights (and, when given, optimizer, scheduler and every RNG) from ``path``.

    Every file is verified (its sha256 too, unless ``hashes`` is False because
    :func:`choose_checkpoint` has just done it) and every value checked before anything is
    changed; otherwise a :class:`CheckpointError` names the file and the other complete
    checkpoints.
    """
    verify_checkpoint(path, hashes)
    return _load(Path(path), model, optimizer, scheduler, generator)


def _load(path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, generator: torch.Generator | None) -> TrainerState:
    try:
        state = _read_json(path / "state.json", _State)
        if STEP_NAME.fullmatch(path.name) and state.step != int(path.name[5:]):
            raise CheckpointError(f"state.json is for step {state.step}")
        training = _read_json(path / "training.json", _Training)
        weights = _read_tensors(path / "model.safetensors")
        tensors = _read_tensors(path / "training.safetensors")
        _check_weights(weights, _weights(model))
        rng = training.rng
        listed = {ref.tensor for ref in [rng.torch, rng.learner, *rng.cuda]}
        listed |= {v.tensor for values in training.optimizer.state.values() for v in values.values() if isinstance(v, _Tensor)}
        if listed != set(tensors):
            raise CheckpointError(f"training.safetensors does not fit training.json: it lacks {_names(listed - set(tensors))}, and has {_names(set(tensors) - listed)} besides")
        optimizer_state = _optimizer_to_load(training.optimizer, tensors, optimizer) if optimizer is not None else None
        scheduler_state = _conform(training.scheduler, scheduler.state_dict(), "scheduler") if scheduler is not None else None
        if generator is not None:
            _check_rng(rng, tensors, generator)
    except CheckpointError as error:
        raise CheckpointError(f"{path} is not loadable: {error}{_others(path)}") from None
    model.load_state_dict(weights, strict=False)  # the names left out are tied to loaded ones
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    if scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    if generator is not None:
        _set_rng(rng, tensors, generator)
    return TrainerState(state.step, state.samples, state.games, state.baselines, state.config)


def _read_json(file: Path, schema: type[_Schema]) -> Any:
    try:
        return schema.model_validate(json.loads(file.read_bytes()))
    except (OSError, ValueError, RecursionError) as error:  # ValidationError is a ValueError
        if isinstance(error, ValidationError):
            found = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in error.errors()[:3])
        elif isinstance(error, OSError):
            found = error.strerror or str(error)
        else:
            found = f"not valid JSON ({str(error)[:80]})"
        raise CheckpointError(f"{file.name}: {found}") from None


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{file.name}: not a readable safetensors file ({str(error)[:80]})") from None


def _names(names: set[str]) -> str:
    return ", ".join(sorted(names)[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "") if names else "nothing"


def _check_weights(saved: dict[str, torch.Tensor], live: dict[str, torch.Tensor]) -> None:
    if set(saved) != set(live):
        raise CheckpointError(f"model.safetensors does not fit this model: it lacks {_names(set(live) - set(saved))}, and has {_names(set(saved) - set(live))} besides")
    for name, tensor in saved.items():
        if tensor.shape != live[name].shape or tensor.dtype != live[name].dtype:
            raise CheckpointError(f"model.safetensors: {name} is {tensor.dtype} {list(tensor.shape)}, the model's is {live[name].dtype} {list(live[name].shape)}")


def _optimizer_to_load(saved: _Optimizer, tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state dict to load, after checking it against the live optimizer."""
    groups = _conform(saved.param_groups, optimizer.state_dict()["param_groups"], "optimizer.param_groups")
    params = {}
    for group, live_group in zip(groups, optimizer.param_groups):
        params.update(zip(group["params"], live_group["params"]))
    if len(params) != sum(len(group["params"]) for group in groups):
        raise CheckpointError("training.json: optimizer.param_groups list a parameter twice")
    state: dict[int, dict[str, Any]] = {}
    for param_id, values in saved.state.items():
        param = params.get(int(param_id))
        if param is None:
            raise CheckpointError(f"training.json: optimizer state for parameter {param_id}, which no param group has")
        state[int(param_id)] = {}
        for key, value in values.items():
            if isinstance(value, _Tensor):
                value = tensors[value.tensor]
                if not value.is_floating_point() or value.shape not in (torch.Size([]), param.shape):
                    raise CheckpointError(f"training.safetensors: optimizer state {param_id}.{key} is {value.dtype} {list(value.shape)}, its parameter {list(param.shape)}")
            state[int(param_id)][key] = value
    return {"state": state, "param_groups": groups}


def _conform(saved: Any, live: Any, where: str) -> Any:
    """``saved`` (parsed JSON) checked to have the structure of ``live``: the same keys, lengths
    and kinds of value; tuples where ``live`` has tuples."""
    if isinstance(live, dict):
        if not isinstance(saved, dict) or set(saved) != set(live):
            raise CheckpointError(f"training.json: {where} has the keys {_names(set(saved) if isinstance(saved, dict) else set())}, not {_names(set(live))}")
        return {key: _conform(saved[key], live[key], f"{where}.{key}") for key in live}
    if isinstance(live, (list, tuple)):
        if not isinstance(saved, list) or len(saved) != len(live):
            raise CheckpointError(f"training.json: {where} should be a list of {len(live)} values")
        items = [_conform(s, v, f"{where}[{i}]") for i, (s, v) in enumerate(zip(saved, live))]
        return tuple(items) if isinstance(live, tuple) else items
    if not (type(saved) is type(live) or (type(live) is float and type(saved) is int)):
        raise CheckpointError(f"training.json: {where} is {saved!r:.40}, expected a {type(live).__name__}")
    return saved


def _check_rng(rng: _RNG, tensors: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    """Raise unless every saved RNG state would be accepted (tried on scratch generators)."""
    cpu = [(rng.torch, torch.Generator()), (rng.learner, torch.Generator(device=generator.device))]
    if torch.cuda.is_available():
        cpu += [(ref, torch.Generator(device=f"cuda:{i}")) for i, ref in enumerate(rng.cuda[: torch.cuda.device_count()])]
    try:
        random.Random().setstate((rng.python.version, tuple(rng.python.internal), rng.python.gauss_next))
        n = rng.numpy
        np.random.RandomState().set_state((n.bit_generator, np.array(n.key, dtype=np.uint32), n.pos, n.has_gauss, n.cached_gaussian))
    except ValueError as error:
        raise CheckpointError(f"training.json: an invalid RNG state ({error})") from None
    for ref, scratch in cpu:
        tensor = tensors[ref.tensor]
        try:
            if tensor.dtype != torch.uint8 or tensor.shape != scratch.get_state().shape:
                raise RuntimeError(f"{tensor.dtype} {list(tensor.shape)}, not uint8 {list(scratch.get_state().shape)}")
            scratch.set_state(tensor)
        except RuntimeError as error:
            raise CheckpointError(f"training.safetensors: {ref.tensor} is not a valid RNG state ({error})") from None


def _set_rng(rng: _RNG, tensors: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    """Restore every RNG; CUDA states for the devices present (the first ones saved)."""
    random.setstate((rng.python.version, tuple(rng.python.internal), rng.python.gauss_next))
    n = rng.numpy
    np.random.set_state((n.bit_generator, np.array(n.key, dtype=np.uint32), n.pos, n.has_gauss, n.cached_gaussian))
    torch.set_rng_state(tensors[rng.torch.tensor])
    generator.set_state(tensors[rng.learner.tensor])
    if torch.cuda.is_available():
        for device, ref in enumerate(rng.cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(tensors[ref.tensor], device)


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
