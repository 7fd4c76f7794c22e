"""Checkpoints that survive a kill at any moment, for one learner process or N sharded ones.

A checkpoint is a folder ``step-NNNNNN`` (six digits) under the checkpoints folder. In the
sharded format (manifest ``format`` 2), the same for any number of learner ranks, it holds

- ``state.json``: the controller's state: the :class:`TrainerState` (step, sample and game
  counters, RAE baselines, config), the number of learner ranks that wrote the checkpoint, the
  learning-rate scheduler's state, the learner's ``torch.Generator`` state and the controller's
  RNG states (Python, NumPy, torch CPU, each CUDA device);
- ``learner/``: the model's tensors and the optimizer's state tensors, one ``__R_0.distcp`` file
  per rank R and the ``.metadata`` index, written by ``torch.distributed.checkpoint`` (DCP),
  which reshards on load: a checkpoint of N ranks loads on M ranks or into an unsharded model;
  and ``optimizer.json``, the optimizer's param groups;
- ``manifest.json``: the format version, the step, and the size and sha256 of every other file.

Checkpoints of the single-process format that came before (manifest ``format`` 1:
``model.safetensors``, ``training.safetensors``, ``training.json``, ``state.json``) load through
the same reading calls, into a sharded model too.

Loading runs no code from a checkpoint: the JSON files are checked against schemas, DCP's
``.metadata`` pickle is read with an unpickler that admits only the classes of DCP's index (and
an index that names a file outside ``learner/`` or a value that is not a tensor is refused),
and DCP's tensor data goes through torch's weights-only loader. Loading checks the manifest,
every file's size (and its sha256, unless the caller has just done that), and every tensor's
name, shape and dtype against the live model, optimizer, scheduler and RNGs before it changes
any of them; any problem is one :class:`CheckpointError` naming the file, with the other
checkpoints that look complete.

Saving a sharded checkpoint is split between the controller, which owns the folder, and the
learner ranks: :func:`begin_checkpoint` makes the staging folder ``.writing-step-NNNNNN``,
every rank calls :func:`save_learner_state` into it (a collective), and
:func:`finish_checkpoint` writes ``state.json`` and the manifest, fsyncs, renames the folder
into place and then replaces the ``latest`` pointer (a plain file holding ``step-NNNNNN``)
atomically; :func:`discard_checkpoint` removes a staging folder whose learners failed. A failed
or interrupted save leaves the last good checkpoint and ``latest`` as they were. A step folder
is never overwritten. One controller writes a checkpoints folder at a time.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import errno
import hashlib
import io
import json
import os
import pickle
import random
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch.distributed.checkpoint import CheckpointException, FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.tensor import DTensor, distribute_tensor

from spiral_train.seeds import FIRST_TURNS_PER_GAME

FORMAT = 1
"""The single-process format's manifest version (read, no longer written)."""
SHARDED_FORMAT = 2
"""The sharded format's manifest version (:func:`begin_checkpoint` ... :func:`finish_checkpoint`)."""
MAX_STEP = 999_999
POINTER = "latest"
MANIFEST = "manifest.json"
FILES = ("model.safetensors", "training.safetensors", "training.json", "state.json")
"""The files of a single-process checkpoint besides its manifest."""
STATE = "state.json"
LEARNER = "learner"
"""The sharded format's folder of learner tensors, written by every rank."""
INDEX = f"{LEARNER}/.metadata"
PARAM_GROUPS = f"{LEARNER}/optimizer.json"
STEP_NAME = re.compile(r"step-([0-9]{6})")
_STAGING = re.compile(r"\.writing-(step-[0-9]{6})")
_LEFTOVER = re.compile(r"\.(writing|deleting)-step-[0-9]{6}")
_LEARNER_FILE = re.compile(rf"{LEARNER}/(\.metadata|optimizer\.json|__[0-9]{{1,6}}_[0-9]{{1,6}}\.distcp)")
_DATA_FILE = re.compile(r"__[0-9]{1,6}_[0-9]{1,6}\.distcp")
_MAX_INDEX_BYTES = 256 << 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be saved, found or loaded; the message says which and why."""


@dataclass
class TrainerState:
    """The controller's counters, RAE baselines and config."""

    step: int
    samples: int
    games: int
    baselines: dict[str, Any]
    config: dict[str, Any]
    turns_per_game: float = FIRST_TURNS_PER_GAME
    """LLM turns per game of the last step (it sizes the next step's first round of games); a
    checkpoint saved without it gives the first step's guess."""
    generator_failures: int = 0
    opponents: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The population, ratings and frozen opponents' snapshot hashes (:meth:`spiral_train.
    trainer.Trainer.save` writes them, its ``resume`` checks them)."""


@dataclass(frozen=True)
class RNGState:
    """One process's random number generators: Python's, NumPy's, torch's CPU one and each CUDA
    device's (as :func:`random.getstate`, :func:`numpy.random.get_state` and torch give them)."""

    python: tuple[int, tuple[int, ...], float | None]
    numpy: tuple[str, tuple[int, ...], int, int, float]
    torch: bytes
    cuda: tuple[bytes, ...] = ()

    @classmethod
    def capture(cls) -> RNGState:
        """This process's RNG states now."""
        version, internal, gauss_next = random.getstate()
        name, key, pos, has_gauss, cached_gaussian = np.random.get_state()
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return cls(
            (version, tuple(internal), gauss_next),
            (name, tuple(int(word) for word in key), int(pos), int(has_gauss), float(cached_gaussian)),
            _bytes(torch.get_rng_state()),
            tuple(_bytes(state) for state in cuda),
        )

    def restore(self) -> None:
        """Set this process's RNGs to these states; CUDA ones for the devices present (the first
        ones saved). :func:`read_state` has checked that every state is valid."""
        version, internal, gauss_next = self.python
        random.setstate((version, tuple(internal), gauss_next))
        name, key, pos, has_gauss, cached_gaussian = self.numpy
        np.random.set_state((name, np.array(key, dtype=np.uint32), pos, has_gauss, cached_gaussian))
        torch.set_rng_state(_uint8(self.torch))
        if torch.cuda.is_available():
            for device, state in enumerate(self.cuda[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(_uint8(state), device)


@dataclass
class CheckpointState:
    """A checkpoint apart from the learner's tensors: what the controller saves and reads."""

    trainer: TrainerState
    scheduler: dict[str, Any]
    """The learning-rate scheduler's ``state_dict()`` (the same on every learner rank)."""
    generator: bytes
    """The learner's ``torch.Generator`` state (the same on every rank)."""
    rng: RNGState
    """The controller process's RNGs."""
    learner_ranks: int = 1
    """The number of learner ranks that wrote the checkpoint."""


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
Base64 = Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]*={0,2}$", max_length=1 << 20)]


class _FileEntry(_Schema):
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: Count


class _Manifest(_Schema):
    format: Literal[1, 2]
    step: Annotated[int, Field(ge=0, le=MAX_STEP)]
    files: dict[str, _FileEntry]


class _State(_Schema):
    step: Annotated[int, Field(ge=0, le=MAX_STEP)]
    samples: Count
    games: Count
    baselines: dict[str, Any]
    config: dict[str, Any]
    turns_per_game: Annotated[float, Field(gt=0, allow_inf_nan=False)] = FIRST_TURNS_PER_GAME
    generator_failures: Count = 0
    opponents: dict[str, Any] = {}


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


class _SavedRNG(_Schema):
    python: _PythonRNG
    numpy: _NumpyRNG
    torch: Base64
    cuda: list[Base64]


class _SavedState(_State):
    """``state.json`` of the sharded format."""

    learner_ranks: Annotated[int, Field(ge=1)]
    scheduler: dict[str, Any]
    generator: Base64
    rng: _SavedRNG


class _ParamGroups(_Schema):
    param_groups: list[dict[str, Any]]


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


# --- saving: the sharded format -----------------------------------------------------------------


def begin_checkpoint(root: str | Path, step: int) -> Path:
    """Make the staging folder of checkpoint ``step`` under ``root`` and return it; the learner
    ranks save into it (:func:`save_learner_state`), then :func:`finish_checkpoint` completes it.

    Raises :class:`CheckpointError` (and writes nothing) when that step folder exists already.
    Removes what an interrupted save or prune left in ``root``.
    """
    root = Path(root)
    if not 0 <= step <= MAX_STEP:
        raise CheckpointError(f"cannot save step {step}: steps run from 0 to {MAX_STEP}")
    final = root / step_name(step)
    if os.path.lexists(final):
        raise CheckpointError(f"{final} exists already; a checkpoint is never overwritten (move it aside or delete it first)")
    staging = root / f".writing-{final.name}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root)
        (staging / LEARNER).mkdir(parents=True)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointError(f"could not save {final.name}: {_reason(error)} while creating {staging}; {_kept(root)}") from None
    return staging


def save_learner_state(checkpoint: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Write the model's and the optimizer's tensors into ``checkpoint/learner`` with DCP.

    A collective: every learner rank calls it with its shard of ``model`` (sharded by FSDP2, or
    a plain module in a single process, with or without a process group). Raises
    :class:`CheckpointError` on every rank, having written nothing, when a model or optimizer
    tensor holds NaN or infinity; raises it after a failed write (disk full, ...), for the
    controller to :func:`discard_checkpoint` the staging folder.
    """
    staging = Path(checkpoint)
    folder = staging / LEARNER
    name, root = _checkpoint_name(staging), staging.parent
    if optimizer.state:
        model_state, optimizer_state = get_state_dict(model, optimizer)
        tensors = _flat_tensors(model_state, optimizer_state["state"])
    else:  # never stepped: no state to save (and get_state_dict would give it a zero one)
        tensors = _flat_tensors(get_model_state_dict(model), {})
    bad = _nonfinite(tensors)
    if bad:
        shown = ", ".join(key.replace(".", " ", 1) for key in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(f"not saving {name}: NaN or inf values in {shown}; {_kept(root)}")
    groups = _json_bytes({"param_groups": _param_groups(model, optimizer)}, name)
    file = folder
    try:
        _dcp(dcp.save, tensors, storage_writer=_IndexWriter(folder, overwrite=False))
        if not _distributed() or dist.get_rank() == 0:
            file = staging / PARAM_GROUPS
            _write_bytes(file, groups)
    except (CheckpointException, OSError) as error:
        raise CheckpointError(f"could not save {name}: {_reason(_cause(error))} while writing {file}; {_kept(root)}") from None


def finish_checkpoint(checkpoint: str | Path, state: CheckpointState) -> Path:
    """Complete the staging folder ``checkpoint`` (the learners have saved into it): write
    ``state.json`` and the manifest, rename it to ``step-NNNNNN`` and point ``latest`` at it.

    Raises :class:`CheckpointError` after removing the staging folder when the learners' part
    is incomplete or a write fails (``latest`` unchanged); then the checkpoint is not saved.
    """
    staging = Path(checkpoint)
    match = _STAGING.fullmatch(staging.name)
    if match is None:
        raise CheckpointError(f"{staging} is not a checkpoint being saved (begin_checkpoint names it .writing-step-NNNNNN)")
    root, final = staging.parent, staging.parent / match.group(1)
    file = staging / STATE
    try:
        if state.trainer.step != int(final.name[5:]):
            raise CheckpointError(f"not saving {final.name}: the state is for step {state.trainer.step}")
        names = _learner_files(staging)
        if INDEX not in names or PARAM_GROUPS not in names:
            raise CheckpointError(f"not saving {final.name}: the learners' {INDEX} or {PARAM_GROUPS} is missing (their save did not finish)")
        _write_bytes(file, _json_bytes(_state_document(state), final.name))
        files = {name: {"sha256": _sha256(staging / name), "bytes": (staging / name).stat().st_size} for name in [STATE, *names]}
        file = staging / MANIFEST
        _write_bytes(file, json.dumps({"format": SHARDED_FORMAT, "step": state.trainer.step, "files": files}, indent=1).encode())
        _fsync_dir(staging / LEARNER)
        _fsync_dir(staging)
        if os.path.lexists(final):
            raise CheckpointError(f"{final} exists already; a checkpoint is never overwritten (move it aside or delete it first)")
        os.rename(staging, final)
    except CheckpointError:
        discard_checkpoint(staging)
        raise
    except OSError as error:
        discard_checkpoint(staging)
        raise CheckpointError(f"could not save {final.name}: {_reason(error)} while writing {file}; {_kept(root)}") from None
    try:
        _fsync_dir(root)
        _point_latest(root, final.name)
    except OSError as error:
        raise CheckpointError(f"{final} is saved, but {_reason(error)} while updating {root / POINTER}; resuming finds {final.name} as the newest checkpoint") from None
    return final


def discard_checkpoint(checkpoint: str | Path) -> None:
    """Remove the staging folder ``checkpoint`` of a save that failed (nothing else)."""
    staging = Path(checkpoint)
    if _STAGING.fullmatch(staging.name) is None:
        raise CheckpointError(f"{staging} is not a checkpoint being saved (begin_checkpoint names it .writing-step-NNNNNN)")
    shutil.rmtree(staging, ignore_errors=True)


class _IndexWriter(FileSystemWriter):
    """DCP's file writer, without the folder's path in the index (it is renamed afterwards)."""

    def storage_meta(self) -> dcp_metadata.StorageMeta:
        return dcp_metadata.StorageMeta(save_id=self.save_id)


def _param_groups(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The optimizer's param groups with each parameter's state-dict name."""
    names = _parameter_names(model)
    return [{**group, "params": [names[id(param)] for param in group["params"]]} for group in optimizer.param_groups]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _dcp(call: Callable[..., Any], tensors: dict[str, torch.Tensor], **kwargs: Any) -> Any:
    """``dcp.save`` or ``dcp.load`` over the default process group, or in this process alone."""
    with warnings.catch_warnings():  # DCP warns that no group means one process: as meant here
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        return call(tensors, no_dist=not _distributed(), **kwargs)


def _checkpoint_name(folder: Path) -> str:
    """``step-NNNNNN`` for a checkpoint or its staging folder."""
    match = _STAGING.fullmatch(folder.name)
    return match.group(1) if match else folder.name


def _flat_tensors(model_state: dict[str, Any], optimizer_state: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
    """``model.<name>`` and ``optimizer.<parameter>.<state>``: the tensors DCP saves. Anything
    else would be pickled, so it is refused."""
    tensors = {f"model.{name}": value for name, value in model_state.items()}
    tensors |= {f"optimizer.{param}.{key}": value for param, values in optimizer_state.items() for key, value in values.items()}
    others = [key for key, value in tensors.items() if not isinstance(value, torch.Tensor)]
    if others:
        raise CheckpointError(f"cannot checkpoint {_names(set(others))}: not tensors (a checkpoint holds tensors and JSON only)")
    return tensors


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _nonfinite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors holding NaN or infinity on any rank (the same
    answer on every rank: a collective when there is a process group)."""
    names = [name for name, tensor in tensors.items() if tensor.is_floating_point()]
    if not names:
        return []
    flags = torch.stack([(~torch.isfinite(_local(tensors[name]))).any() for name in names]).to(torch.int32)
    if _distributed():
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return [name for name, bad in zip(names, flags.tolist()) if bad]


def _cause(error: BaseException) -> BaseException:
    """The first rank's exception inside DCP's CheckpointException."""
    if isinstance(error, CheckpointException) and error.failures:
        found = next(iter(error.failures.values()))
        return found[0] if isinstance(found, tuple) else found
    return error


def _learner_files(staging: Path) -> list[str]:
    """The files the learners wrote, as ``learner/<name>``, sorted; anything else there is an
    error."""
    names = sorted(f"{LEARNER}/{entry.name}" for entry in (staging / LEARNER).iterdir())
    strangers = [name for name in names if not _LEARNER_FILE.fullmatch(name) or not (staging / name).is_file()]
    if strangers:
        raise CheckpointError(f"not saving {_checkpoint_name(staging)}: {_names(set(strangers))} in the learners' folder are not checkpoint files")
    return names


def _state_document(state: CheckpointState) -> dict[str, Any]:
    rng = state.rng
    version, internal, gauss_next = rng.python
    name, key, pos, has_gauss, cached_gaussian = rng.numpy
    return {
        **dataclasses.asdict(state.trainer),
        "learner_ranks": state.learner_ranks,
        "scheduler": state.scheduler,
        "generator": _base64(state.generator),
        "rng": {
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
            "numpy": {"bit_generator": name, "key": list(key), "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached_gaussian},
            "torch": _base64(rng.torch),
            "cuda": [_base64(device) for device in rng.cuda],
        },
    }


def _bytes(tensor: torch.Tensor) -> bytes:
    return tensor.cpu().contiguous().numpy().tobytes()


def _uint8(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy())


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- helpers of saving ------------------------------------------------------------------------


def _json_bytes(document: dict[str, Any], name: str, default: Any = None) -> bytes:
    try:
        return json.dumps(document, indent=1, default=default).encode()
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"not saving {name}: the training state is not JSON ({error})") from None


def _reason(error: BaseException) -> str:
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


def _verify(path: Path, hashes: bool) -> _Manifest:
    """The manifest of ``path``, after checking that every file it lists is there with its size
    (and ``hashes``: its sha256), and, in the sharded format, that there is no other file."""
    try:
        if path.is_symlink() or not path.is_dir():
            raise CheckpointError("it is not a folder")
        if not (path / MANIFEST).is_file():
            raise CheckpointError(f"{MANIFEST} is missing (an incomplete copy, or an older checkpoint format)")
        if (path / MANIFEST).stat().st_size > 1 << 24:
            raise CheckpointError(f"{MANIFEST} is too large")
        manifest = _read_json(path / MANIFEST, _Manifest)
        if STEP_NAME.fullmatch(path.name) and manifest.step != int(path.name[5:]):
            raise CheckpointError(f"{MANIFEST} is for step {manifest.step}")
        if manifest.format == FORMAT and sorted(manifest.files) != sorted(FILES):
            raise CheckpointError(f"{MANIFEST} lists {', '.join(sorted(manifest.files)) or 'no files'}, not {', '.join(FILES)}")
        if manifest.format == SHARDED_FORMAT:
            _check_sharded_listing(path, set(manifest.files))
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
    return manifest


def _check_sharded_listing(path: Path, listed: set[str]) -> None:
    """A sharded checkpoint's manifest lists state.json and the learners' files, and the folder
    holds nothing else."""
    bad = sorted(name for name in listed if name != STATE and not _LEARNER_FILE.fullmatch(name))
    required = {STATE, INDEX, PARAM_GROUPS}
    if bad or not required <= listed or not any(name.endswith(".distcp") for name in listed):
        found = ", ".join(bad[:3]) if bad else ", ".join(sorted(listed)[:5]) or "no files"
        raise CheckpointError(f"{MANIFEST} lists {found}, not {STATE} and {LEARNER}/ (.metadata, optimizer.json, __R_0.distcp)")
    present = {entry.name for entry in path.iterdir()} - {MANIFEST, LEARNER}
    learner = path / LEARNER
    if learner.is_dir() and not learner.is_symlink():
        present |= {f"{LEARNER}/{entry.name}" for entry in learner.iterdir()}
    unlisted = present - listed
    if unlisted:
        raise CheckpointError(f"{_names(unlisted)} {'is' if len(unlisted) == 1 else 'are'} not in {MANIFEST} (the checkpoint was not saved with it)")


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
    Only the chosen checkpoint (and newer ones that fail) are hashed, so the caller may read
    and load it with ``hashes=False`` right away.
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


# --- reading ------------------------------------------------------------------------------------


def read_state(path: str | Path, hashes: bool = True) -> CheckpointState:
    """The controller's part of the checkpoint at ``path`` (either format), every file verified
    first (its sha256 too, unless ``hashes`` is False because :func:`choose_checkpoint` has just
    done it) and every RNG state checked; otherwise a :class:`CheckpointError` names the file
    and the other complete checkpoints."""
    path = Path(path)
    try:
        return _read_saved(path, _verify(path, hashes).format)
    except CheckpointError as error:
        raise CheckpointError(f"{path} is not loadable: {error}{_others(path)}") from None


def load_learner_state(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    generator: torch.Generator | None = None,
    hashes: bool = True,
) -> None:
    """Load the checkpoint at ``path`` (either format, written by any number of ranks) into
    ``model`` as it is sharded now, and, when given, into ``optimizer``, ``scheduler`` and the
    learner's ``generator``.

    A collective: every learner rank calls it (a plain module in a single process, with or
    without a process group). Every file is verified (``hashes`` as in :func:`read_state`) and
    every tensor's name, shape and dtype, the param groups, the scheduler's and the generator's
    state checked before anything is changed; otherwise a :class:`CheckpointError` names the
    file (and the tensor) on every rank.
    """
    path = Path(path)
    try:
        manifest_format = _verify(path, hashes).format
        sharded = manifest_format == SHARDED_FORMAT
        apply = (_plan_sharded if sharded else _plan_single)(path, model, optimizer)
        saved = _read_saved(path, manifest_format)
        if scheduler is not None:
            scheduler_state = _conform(saved.scheduler, scheduler.state_dict(), "scheduler", STATE if sharded else "training.json")
        if generator is not None:
            where = (STATE, "generator") if sharded else ("training.safetensors", "rng.learner")
            _check_state(saved.generator, torch.Generator(device=generator.device), *where)
        apply()
    except CheckpointError as error:
        raise CheckpointError(f"{path} is not loadable: {error}{_others(path)}") from None
    if scheduler is not None:
        scheduler.load_state_dict(scheduler_state)
    if generator is not None:
        generator.set_state(_uint8(saved.generator))


def _read_saved(path: Path, manifest_format: int) -> CheckpointState:
    if manifest_format == SHARDED_FORMAT:
        saved = _read_json(path / STATE, _SavedState)
        _check_step(path, saved.step)
        rng = saved.rng
        cuda = tuple(_decode(device, f"rng.cuda.{i}") for i, device in enumerate(rng.cuda))
        state = _saved_rng(rng.python, rng.numpy, _decode(rng.torch, "rng.torch"), cuda)
        _check_rng(state, STATE, STATE)
        return CheckpointState(_trainer_state(saved), saved.scheduler, _decode(saved.generator, "generator"), state, saved.learner_ranks)
    saved = _read_json(path / STATE, _State)
    _check_step(path, saved.step)
    training = _read_json(path / "training.json", _Training)
    rng = training.rng
    names = [ref.tensor for ref in [rng.torch, rng.learner, *rng.cuda]]
    listed = set(names) | {v.tensor for values in training.optimizer.state.values() for v in values.values() if isinstance(v, _Tensor)}
    found, tensors = _read_some_tensors(path / "training.safetensors", names)
    if listed != found:
        raise CheckpointError(f"training.safetensors does not fit training.json: it lacks {_names(listed - found)}, and has {_names(found - listed)} besides")
    states = [_state_bytes(tensors[name], name) for name in names]
    state = _saved_rng(rng.python, rng.numpy, states[0], tuple(states[2:]))
    _check_rng(state, "training.json", "training.safetensors")
    return CheckpointState(_trainer_state(saved), training.scheduler, states[1], state)


def _trainer_state(saved: _State) -> TrainerState:
    return TrainerState(saved.step, saved.samples, saved.games, saved.baselines, saved.config, saved.turns_per_game, saved.generator_failures, saved.opponents)


def _saved_rng(python: _PythonRNG, numpy: _NumpyRNG, cpu: bytes, cuda: tuple[bytes, ...]) -> RNGState:
    numpy_state = (numpy.bit_generator, tuple(numpy.key), numpy.pos, numpy.has_gauss, numpy.cached_gaussian)
    return RNGState((python.version, tuple(python.internal), python.gauss_next), numpy_state, cpu, cuda)


def _check_step(path: Path, step: int) -> None:
    if STEP_NAME.fullmatch(path.name) and step != int(path.name[5:]):
        raise CheckpointError(f"state.json is for step {step}")


def _decode(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"{STATE}: {name} is not base64") from None


def _state_bytes(tensor: torch.Tensor, name: str) -> bytes:
    if tensor.dtype != torch.uint8 or tensor.dim() != 1:
        raise CheckpointError(f"training.safetensors: {name} is not a valid RNG state ({tensor.dtype} {list(tensor.shape)}, not a uint8 vector)")
    return _bytes(tensor)


def _check_rng(rng: RNGState, json_file: str, tensor_file: str) -> None:
    """Raise unless every RNG state would be accepted (tried on scratch generators)."""
    try:
        version, internal, gauss_next = rng.python
        random.Random().setstate((version, tuple(internal), gauss_next))
        name, key, pos, has_gauss, cached_gaussian = rng.numpy
        np.random.RandomState().set_state((name, np.array(key, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{json_file}: an invalid RNG state ({error})") from None
    _check_state(rng.torch, torch.Generator(), tensor_file, "rng.torch")
    if torch.cuda.is_available():
        for device, state in enumerate(rng.cuda[: torch.cuda.device_count()]):
            _check_state(state, torch.Generator(device=f"cuda:{device}"), tensor_file, f"rng.cuda.{device}")


def _check_state(state: bytes, scratch: torch.Generator, file: str, name: str) -> None:
    expected = scratch.get_state().numel()
    try:
        if len(state) != expected:
            raise RuntimeError(f"{len(state)} bytes, not {expected}")
        scratch.set_state(_uint8(state))
    except RuntimeError as error:
        raise CheckpointError(f"{file}: {name} is not a valid RNG state ({error})") from None


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


def _read_some_tensors(file: Path, names: list[str]) -> tuple[set[str], dict[str, torch.Tensor]]:
    """All the tensor names in a safetensors file, and the tensors ``names`` of them there."""
    try:
        with safe_open(file, framework="pt") as handle:
            found = set(handle.keys())
            return found, {name: handle.get_tensor(name) for name in names if name in found}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{file.name}: not a readable safetensors file ({str(error)[:80]})") from None


def _names(names: set[str]) -> str:
    return ", ".join(sorted(names)[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "") if names else "nothing"


# --- the learner's tensors: the single-process format -------------------------------------------


def _plan_single(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> Callable[[], None]:
    """Check a single-process checkpoint's tensors against ``model`` (and ``optimizer``); the
    returned call loads them, each rank taking its shard of the full tensors."""
    weights = _read_tensors(path / "model.safetensors")
    live = get_model_state_dict(model)
    first = _first_names(model, list(live))
    _check_weights(weights, {name: tensor for name, tensor in live.items() if first[name] == name})
    full = {f"model.{name}": weights[first[name]] for name in live}
    groups = None
    if optimizer is not None:
        training = _read_json(path / "training.json", _Training)
        state = _optimizer_to_load(training.optimizer, _read_tensors(path / "training.safetensors"), optimizer)
        names = _parameter_names(model)
        pairs = [pair for group, live_group in zip(state["param_groups"], optimizer.param_groups) for pair in zip(group["params"], live_group["params"])]
        fqn = {saved_id: names[id(param)] for saved_id, param in pairs}
        if state["state"] and len(state["state"]) != len(fqn):
            raise CheckpointError(f"training.json: optimizer state for {len(state['state'])} of the {len(fqn)} parameters (a checkpoint has all or none)")
        for param_id, values in state["state"].items():
            for key, value in values.items():
                if not isinstance(value, torch.Tensor):
                    raise CheckpointError(f"training.json: optimizer state {param_id}.{key} is {value!r:.40}, not a tensor")
                full[f"optimizer.{fqn[param_id]}.{key}"] = value
        groups = [{**group, "params": [fqn[param_id] for param_id in group["params"]]} for group in state["param_groups"]]

    def fill(tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for key, target in tensors.items():
                _copy_full(target, full[key])

    return _loader(model, optimizer, groups, {key for key in full if key.startswith("optimizer.")}, fill, "training.safetensors")


def _copy_full(target: torch.Tensor, full: torch.Tensor) -> None:
    """Copy the full tensor ``full`` into ``target``, a shard of it where ``target`` is one."""
    if isinstance(target, DTensor):
        shard = distribute_tensor(full.to(target.device), target.device_mesh, target.placements, src_data_rank=None)
        target.to_local().copy_(shard.to_local())
    else:
        target.copy_(full)


def _loader(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    groups: list[dict[str, Any]] | None,
    optimizer_keys: set[str],
    fill: Callable[[dict[str, torch.Tensor]], None],
    file: str,
) -> Callable[[], None]:
    """The call that loads a checked checkpoint: ``fill`` writes the saved tensors into the
    model's and optimizer's (as they are sharded now), then the state dicts are set with the
    saved param ``groups``."""

    def apply() -> None:
        if optimizer is None or not optimizer_keys:
            model_state = get_model_state_dict(model)
            fill(_flat_tensors(model_state, {}))
            set_model_state_dict(model, model_state)
            if optimizer is not None:  # saved before its first step: no state, the param groups
                ids = optimizer.state_dict()["param_groups"]
                optimizer.load_state_dict({"state": {}, "param_groups": [{**group, "params": live["params"]} for group, live in zip(groups, ids)]})
        else:
            model_state, optimizer_state = get_state_dict(model, optimizer)  # gives a new optimizer its state
            tensors = _flat_tensors(model_state, optimizer_state["state"])
            found = {key for key in tensors if key.startswith("optimizer.")}
            if found != optimizer_keys:
                raise CheckpointError(f"{file} does not fit this optimizer's state: it lacks {_names(found - optimizer_keys)}, and has {_names(optimizer_keys - found)} besides")
            fill(tensors)
            optimizer_state["param_groups"] = groups
            set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state)

    return apply


def _first_names(model: torch.nn.Module, names: list[str]) -> dict[str, str]:
    """For each state-dict name, the first name of the same tensor (tied weights are saved once,
    under the first)."""
    objects = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    first: dict[int, str] = {}
    return {name: first.setdefault(id(objects[name]), name) if name in objects else name for name in names}


def _parameter_names(model: torch.nn.Module) -> dict[int, str]:
    """The state-dict name of each parameter of ``model`` (its first, when tied), by ``id``."""
    names: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), name)
    return names


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


def _conform(saved: Any, live: Any, where: str, file: str = "training.json") -> Any:
    """``saved`` (parsed JSON) checked to have the structure of ``live``: the same keys, lengths
    and kinds of value; tuples where ``live`` has tuples."""
    if isinstance(live, dict):
        if not isinstance(saved, dict) or set(saved) != set(live):
            raise CheckpointError(f"{file}: {where} has the keys {_names(set(saved) if isinstance(saved, dict) else set())}, not {_names(set(live))}")
        return {key: _conform(saved[key], live[key], f"{where}.{key}", file) for key in live}
    if isinstance(live, (list, tuple)):
        if not isinstance(saved, list) or len(saved) != len(live):
            raise CheckpointError(f"{file}: {where} should be a list of {len(live)} values")
        items = [_conform(s, v, f"{where}[{i}]", file) for i, (s, v) in enumerate(zip(saved, live))]
        return tuple(items) if isinstance(live, tuple) else items
    if not (type(saved) is type(live) or (type(live) is float and type(saved) is int)):
        raise CheckpointError(f"{file}: {where} is {saved!r:.40}, expected a {type(live).__name__}")
    return saved


# --- the learner's tensors: the sharded format --------------------------------------------------


def _plan_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> Callable[[], None]:
    """Check a sharded checkpoint's index against ``model`` (and ``optimizer``); the returned
    call loads the tensors with DCP into the model's (and optimizer's) shards as they are now."""
    reader = _IndexReader(path / LEARNER)
    saved = reader.read_metadata().state_dict_metadata
    _check_model_index(saved, get_model_state_dict(model))
    groups = None
    optimizer_keys = {key for key in saved if key.startswith("optimizer.")}
    if optimizer is not None:
        names = _parameter_names(model)
        params = {names[id(param)]: param for group in optimizer.param_groups for param in group["params"]}
        _check_optimizer_index(saved, params)
        live_groups = _param_groups(model, optimizer)
        groups = _conform(_read_json(path / PARAM_GROUPS, _ParamGroups).param_groups, live_groups, "param_groups", PARAM_GROUPS)
        for index, (group, live_group) in enumerate(zip(groups, live_groups)):
            if group["params"] != live_group["params"]:
                raise CheckpointError(f"{PARAM_GROUPS}: param_groups[{index}].params are not this optimizer's parameters in its order")

    def fill(tensors: dict[str, torch.Tensor]) -> None:
        try:
            _dcp(dcp.load, tensors, storage_reader=reader)
        except CheckpointException as error:
            raise CheckpointError(f"{LEARNER}: {str(_cause(error))[:200]} (the model may be partly loaded)") from None

    return _loader(model, optimizer, groups, optimizer_keys, fill, INDEX)


def _check_model_index(saved: dict[str, Any], live: dict[str, torch.Tensor]) -> None:
    names = {key[len("model."):] for key in saved if key.startswith("model.")}
    if names != set(live):
        raise CheckpointError(f"{INDEX} does not fit this model: it lacks {_names(set(live) - names)}, and has {_names(names - set(live))} besides")
    for name, tensor in live.items():
        entry = saved[f"model.{name}"]
        if entry.size != tensor.shape or entry.properties.dtype != tensor.dtype:
            raise CheckpointError(f"{INDEX}: {name} is {entry.properties.dtype} {list(entry.size)}, the model's is {tensor.dtype} {list(tensor.shape)}")


def _check_optimizer_index(saved: dict[str, Any], params: dict[str, torch.Tensor]) -> None:
    with_state = set()
    for key, entry in saved.items():
        if not key.startswith("optimizer."):
            continue
        name, _, value = key[len("optimizer."):].rpartition(".")
        param = params.get(name)
        if param is None:
            raise CheckpointError(f"{INDEX}: optimizer state {name}.{value} for a parameter this optimizer does not train")
        if not entry.properties.dtype.is_floating_point or entry.size not in (torch.Size([]), param.shape):
            raise CheckpointError(f"{INDEX}: optimizer state {name}.{value} is {entry.properties.dtype} {list(entry.size)}, its parameter {list(param.shape)}")
        with_state.add(name)
    if with_state and with_state != set(params):
        raise CheckpointError(f"{INDEX}: optimizer state for {len(with_state)} of the {len(params)} parameters (a checkpoint has all or none)")


class _IndexReader(FileSystemReader):
    """DCP's file reader, with the index read by :func:`_read_index` (never plainly unpickled)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self._index: dcp_metadata.Metadata | None = None

    def read_metadata(self, *args: Any) -> dcp_metadata.Metadata:  # no **kwargs: DCP then never falls back to per-rank indexes
        if self._index is None:
            self._index = _read_index(Path(self.path))
            self._index.storage_meta = dcp_metadata.StorageMeta(load_id=self.load_id)
        return self._index


_INDEX_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in ("Metadata", "TensorStorageMetadata", "TensorProperties", "ChunkStorageMetadata", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"), ("torch.serialization", "_get_layout")}
"""What DCP's index of tensors is made of (besides dtypes, ``torch.<dtype>``, and builtin
containers): nothing that runs code when it is built."""


class _IndexUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _INDEX_CLASSES or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise CheckpointError(f"{INDEX} holds {module}.{name}, which a checkpoint's index never holds (not loaded: it could run code)")


def _read_index(folder: Path) -> dcp_metadata.Metadata:
    """DCP's ``.metadata`` in ``folder``, unpickled with :class:`_IndexUnpickler` and checked:
    tensor entries only, each chunk's data in a file of ``folder`` within its size."""
    file = folder / ".metadata"
    try:
        if file.stat().st_size > _MAX_INDEX_BYTES:
            raise CheckpointError(f"{INDEX} is too large")
        data = file.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{INDEX}: {error.strerror or error}") from None
    try:
        index = _IndexUnpickler(io.BytesIO(data)).load()
    except CheckpointError:  # a class refused (CheckpointError is a ValueError)
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, IndexError, KeyError, MemoryError, OverflowError, RecursionError, RuntimeError, TypeError, ValueError) as error:
        raise CheckpointError(f"{INDEX}: not a readable checkpoint index ({type(error).__name__}: {str(error)[:80]})") from None
    try:
        problem = _index_problem(index, folder)
    except (AttributeError, TypeError) as error:  # objects of the right classes, built with other fields
        problem = f"not a checkpoint index ({type(error).__name__}: {str(error)[:80]})"
    if problem:
        raise CheckpointError(f"{INDEX}: {problem}")
    return index


def _index_problem(index: Any, folder: Path) -> str | None:
    """Why ``index`` is not a DCP index of tensors in ``folder``'s data files, or None."""
    if not isinstance(index, dcp_metadata.Metadata) or not isinstance(index.state_dict_metadata, dict) or not isinstance(index.storage_data, dict):
        return "not a checkpoint index"
    sizes: dict[str, int] = {}
    for key, info in index.storage_data.items():
        if not isinstance(key, dcp_metadata.MetadataIndex) or not isinstance(info, _StorageInfo):
            return "not a checkpoint index (storage entries)"
        file = info.relative_path
        if not isinstance(file, str) or _DATA_FILE.fullmatch(file) is None:
            return f"names {str(file)[:60]!r} as a data file, not a __R_N.distcp file of {LEARNER}/"
        if file not in sizes:
            sizes[file] = (folder / file).stat().st_size if (folder / file).is_file() else -1
        if sizes[file] < 0:
            return f"names {LEARNER}/{file}, which is missing"
        if not (type(info.offset) is int and type(info.length) is int and 0 <= info.offset and 0 <= info.length and info.offset + info.length <= sizes[file]):
            return f"an entry of {key.fqn!r:.60} lies outside {LEARNER}/{file}"
        if info.transform_descriptors:
            return f"{key.fqn!r:.60} is stored transformed ({info.transform_descriptors!r:.60}), which this reader does not do"
    for key, entry in index.state_dict_metadata.items():
        if not isinstance(key, str) or not key.startswith(("model.", "optimizer.")):
            return f"holds {str(key)[:60]!r}, neither a model nor an optimizer tensor"
        if not (isinstance(entry, dcp_metadata.TensorStorageMetadata) and isinstance(entry.properties, dcp_metadata.TensorProperties)
                and isinstance(entry.properties.dtype, torch.dtype) and isinstance(entry.size, torch.Size) and isinstance(entry.chunks, list)):
            return f"{key[:60]!r} is not a tensor entry"
        for chunk in entry.chunks:
            if not (isinstance(chunk, dcp_metadata.ChunkStorageMetadata) and isinstance(chunk.offsets, torch.Size) and isinstance(chunk.sizes, torch.Size)
                    and len(chunk.offsets) == len(chunk.sizes) == len(entry.size)
                    and all(0 <= o and o + s <= n for o, s, n in zip(chunk.offsets, chunk.sizes, entry.size))):
                return f"{key[:60]!r} has a chunk outside its shape {list(entry.size)}"
            if dcp_metadata.MetadataIndex(key, chunk.offsets) not in index.storage_data:
                return f"{key[:60]!r} has a chunk stored nowhere"
    return None


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
