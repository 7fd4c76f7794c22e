"""Sharded checkpoints (torch.distributed.checkpoint): one format for any number of learner
ranks, resharded on load (2 ranks -> 1 process, 1 process -> 2 ranks, the single-process format
-> 2 ranks); every file in the manifest; the index read without running code; damage is one
clear error before anything changes; failed and killed saves keep the last good checkpoint."""

from __future__ import annotations

import datetime
import errno
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint import metadata as dcp_metadata

from spiral_train import checkpoint
from spiral_train.checkpoint import (
    CheckpointError,
    CheckpointState,
    RNGState,
    TrainerState,
    begin_checkpoint,
    finish_checkpoint,
    load_learner_state,
    read_state,
    save_learner_state,
)
from tests.helpers import free_port
from tests.single_process_checkpoint import load_checkpoint, save_checkpoint
from tests.test_checkpoint import Run, _flip_byte, _json_values, _places, edit_json, rehash, same

ROOT = Path(__file__).resolve().parents[1]
RANKS = 2


def controller_state(step: int, scheduler: dict[str, Any], generator: torch.Generator, ranks: int = 1) -> CheckpointState:
    trainer = TrainerState(step, 10 * step, step, {"values": [["Nim-v0", 0, 0.5]]}, {"steps": 9})
    return CheckpointState(trainer, scheduler, generator.get_state().numpy().tobytes(), RNGState.capture(), ranks)


def save_sharded(run: Run, root: Path, step: int) -> Path:
    """What a controller and its one learner do: begin, the learner saves, finish."""
    staging = begin_checkpoint(root, step)
    save_learner_state(staging, run.model, run.optimizer)
    return finish_checkpoint(staging, controller_state(step, run.scheduler.state_dict(), run.generator))


def load_sharded(run: Run, path: Path, **kwargs: Any) -> CheckpointState:
    """What a resuming controller and its learner do: read the state, the learner loads."""
    state = read_state(path, **kwargs)
    load_learner_state(path, run.model, run.optimizer, run.scheduler, run.generator, hashes=False)
    state.rng.restore()
    return state


def sharded_steps(root: Path, steps: list[int]) -> Run:
    run = Run()
    for step in steps:
        run.train(1)
        save_sharded(run, root, step)
    return run


def edit_index(path: Path, change: Callable[[dcp_metadata.Metadata], None]) -> None:
    """Rewrite ``learner/.metadata`` changed (and the manifest to match: a consistent writer)."""
    file = path / "learner" / ".metadata"
    index = pickle.loads(file.read_bytes())
    change(index)
    file.write_bytes(pickle.dumps(index))
    rehash(path)


def _list_in_manifest(path: Path, name: str) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][name] = manifest["files"]["state.json"]
    (path / "manifest.json").write_text(json.dumps(manifest))


def _state_for_another_parameter(index: dcp_metadata.Metadata) -> None:
    index.state_dict_metadata["optimizer.other.step"] = index.state_dict_metadata["optimizer.hidden.weight.step"]
    stored = dcp_metadata.MetadataIndex("optimizer.hidden.weight.step", torch.Size([]))
    index.storage_data[dcp_metadata.MetadataIndex("optimizer.other.step", torch.Size([]))] = index.storage_data[stored]


class Runs:
    """Unpickling this runs a shell command: what code in an index could do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


# --- saving and loading in one process ----------------------------------------------------------


def test_a_run_resumed_from_a_sharded_checkpoint_continues_bitwise(tmp_path: Path) -> None:
    run = Run()
    run.train(4)
    path = save_sharded(run, tmp_path, 4)
    saved = controller_state(4, run.scheduler.state_dict(), run.generator)
    expected = run.train(3), run.snapshot()

    resumed = Run(seed=7)
    resumed.train(1)
    state = load_sharded(resumed, path)
    assert state.trainer == saved.trainer and state.scheduler == saved.scheduler and state.generator == saved.generator
    assert state.learner_ranks == 1 and state.rng.python == saved.rng.python
    assert (resumed.train(3), resumed.snapshot())[0] == expected[0]
    assert same(resumed.snapshot(), expected[1])
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert files == ["learner/.metadata", "learner/__0_0.distcp", "learner/optimizer.json", "manifest.json", "state.json"]
    assert json.loads((path / "state.json").read_text())["config"] == {"steps": 9}  # where run_folder reads it
    assert checkpoint.latest_checkpoint(tmp_path) == path and load_checkpoint(path, Run().model).step == 4


def test_a_single_process_checkpoint_loads_through_the_new_reading_api(tmp_path: Path) -> None:
    run = Run()
    run.train(2)
    path = run.save(tmp_path, 2)  # the single-process format
    assert json.loads((path / "manifest.json").read_text())["format"] == 1
    expected = run.train(2), run.snapshot()
    resumed = Run(seed=3)
    state = load_sharded(resumed, path)
    assert state.trainer == TrainerState(2, 20, 2, {"values": [["Nim-v0", 0, 0.5]]}, {"steps": 9})
    assert state.learner_ranks == 1 and state.scheduler["last_epoch"] == 2
    assert resumed.train(2) == expected[0] and same(resumed.snapshot(), expected[1])


def test_both_formats_are_listed_chosen_and_pruned_alike(tmp_path: Path) -> None:
    run = Run()
    run.train(1)
    run.save(tmp_path, 1)
    run.train(1)
    save_sharded(run, tmp_path, 2)
    assert [(i.step, i.loadable) for i in checkpoint.list_checkpoints(tmp_path, hashes=True)] == [(1, True), (2, True)]
    assert checkpoint.choose_checkpoint(tmp_path) == (tmp_path / "step-000002", None)
    assert checkpoint.choose_checkpoint(tmp_path, 1) == (tmp_path / "step-000001", None)
    assert checkpoint.prune_checkpoints(tmp_path, keep_last=1) == [tmp_path / "step-000001"]
    (tmp_path / "latest").write_text("step-000009")
    assert checkpoint.choose_checkpoint(tmp_path).path == tmp_path / "step-000002"


def test_a_model_of_another_shape_or_dtype_is_refused_naming_the_tensor(tmp_path: Path) -> None:
    path = save_sharded(sharded_steps(tmp_path, [1]), tmp_path, 2)
    wider = Run(seed=4)
    wider.model.hidden = torch.nn.Linear(6, 7)
    doubled = Run(seed=4)
    doubled.model.double()
    for model, message in [
        (wider.model, r"learner/\.metadata: hidden\.weight is torch\.float32 \[6, 6\], the model's is torch\.float32 \[7, 6\]"),
        (doubled.model, r"learner/\.metadata: embed\.weight is torch\.float32 \[11, 6\], the model's is torch\.float64 \[11, 6\]"),
    ]:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(CheckpointError, match=message):
            load_learner_state(path, model)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- the index: a pickle, read without running code ---------------------------------------------


@pytest.mark.parametrize(
    "payload, refused",
    [
        (lambda marker: Runs(f"touch {marker}"), r"holds posix\.system, which a checkpoint's index never holds"),
        (lambda marker: {"index": [Runs(f"touch {marker}")]}, r"holds posix\.system"),
        (lambda marker: pickle.loads(pickle.dumps(marker)), r"holds pathlib\.PosixPath"),
    ],
)
def test_the_index_unpickler_admits_only_the_classes_of_an_index(tmp_path: Path, payload: Callable[[Path], Any], refused: str) -> None:
    path = save_sharded(sharded_steps(tmp_path / "ckpt", [1]), tmp_path / "ckpt", 2)
    marker = tmp_path / "code-ran"
    (path / "learner" / ".metadata").write_bytes(pickle.dumps(payload(marker)))
    rehash(path)
    run = Run(seed=5)
    before = run.snapshot()
    with pytest.raises(CheckpointError, match=rf"{path} is not loadable: learner/\.metadata {refused}"):
        load_learner_state(path, run.model, run.optimizer)
    assert not marker.exists() and same(run.snapshot(), before)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.state_dict_metadata.update({"model.hidden.bias": dcp_metadata.BytesStorageMetadata()}), r"holds torch\.distributed\.checkpoint\.metadata\.BytesStorageMetadata"),
        (lambda m: next(iter(m.storage_data.values())).__setattr__("relative_path", "../../../etc/passwd"), r"names '\.\./\.\./\.\./etc/passwd' as a data file"),
        (lambda m: next(iter(m.storage_data.values())).__setattr__("length", 1 << 40), r"an entry of 'model\.embed\.weight' lies outside learner/__0_0\.distcp"),
        (lambda m: m.storage_data.clear(), r"'model\.embed\.weight' has a chunk stored nowhere"),
        (lambda m: m.state_dict_metadata.update({"extra": m.state_dict_metadata["model.hidden.bias"]}), r"holds 'extra', neither a model nor an optimizer tensor"),
        (lambda m: m.state_dict_metadata.pop("model.hidden.bias"), r"learner/\.metadata does not fit this model: it lacks hidden\.bias, and has nothing besides"),
        (lambda m: m.state_dict_metadata["model.hidden.weight"].__setattr__("size", torch.Size([6, 7])), r"hidden\.weight is torch\.float32 \[6, 7\], the model's is torch\.float32 \[6, 6\]"),
        (lambda m: m.state_dict_metadata["optimizer.hidden.weight.exp_avg"].properties.__setattr__("dtype", torch.int64), r"optimizer state hidden\.weight\.exp_avg is torch\.int64 \[6, 6\], its parameter \[6, 6\]"),
        (_state_for_another_parameter, r"optimizer state other\.step for a parameter this optimizer does not train"),
    ],
)
def test_an_index_that_does_not_fit_is_one_clear_error_before_anything_changes(tmp_path: Path, change: Callable, message: str) -> None:
    sharded_steps(tmp_path, [1, 2])
    path = tmp_path / "step-000002"
    edit_index(path, change)
    run = Run(seed=5)
    run.train(1)
    before = run.snapshot()
    with pytest.raises(CheckpointError, match=message) as error:
        load_sharded(run, path)
    assert str(error.value).startswith(f"{path} is not loadable: ")
    assert str(error.value).endswith(f"Complete checkpoints in {tmp_path} (sizes checked, hashes when chosen): step-000001")
    assert same(run.snapshot(), before)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_any_damage_to_the_index_loads_or_is_a_checkpoint_error(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = save_sharded(sharded_steps(Path(folder), [1]), Path(folder), 2)
        file = path / "learner" / ".metadata"
        index = bytearray(file.read_bytes())
        if data.draw(st.booleans(), label="truncate"):
            index = index[: data.draw(st.integers(0, len(index) - 1), label="length")]
        else:
            for _ in range(data.draw(st.integers(1, 4), label="flips")):
                index[data.draw(st.integers(0, len(index) - 1))] ^= data.draw(st.integers(1, 255))
        file.write_bytes(bytes(index))
        rehash(path)
        run = Run(seed=2)
        try:
            load_learner_state(path, run.model, run.optimizer)
        except CheckpointError as error:
            assert str(error).startswith(f"{path} is not loadable: ")


# --- damage found by the manifest and the schemas -------------------------------------------------


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: _flip_byte(p / "learner" / "__0_0.distcp"), r"learner/__0_0\.distcp does not match its sha256 in manifest\.json \(the file is damaged\)"),
        (lambda p: (p / "learner" / "__0_0.distcp").write_bytes((p / "learner" / "__0_0.distcp").read_bytes()[:-10]), r"learner/__0_0\.distcp has .* bytes, the manifest says"),
        (lambda p: _flip_byte(p / "learner" / ".metadata"), r"learner/\.metadata does not match its sha256"),
        (lambda p: (p / "learner" / ".metadata").unlink(), r"learner/\.metadata is missing"),
        (lambda p: shutil.copy(p / "learner" / "__0_0.distcp", p / "learner" / "__1_0.distcp"), r"learner/__1_0\.distcp is not in manifest\.json"),
        (lambda p: (p / "model.safetensors").write_bytes(b"truncated"), r"model\.safetensors is not in manifest\.json"),
        (lambda p: _list_in_manifest(p, "learner/../../x"), r"manifest\.json lists learner/\.\./\.\./x, not state\.json and learner/"),
        (lambda p: edit_json(p, "manifest.json", lambda m: m["files"].pop("learner/optimizer.json")), r"manifest\.json lists"),
        (lambda p: edit_json(p, "state.json", lambda s: s.update(learner_ranks=0)), r"state\.json: learner_ranks: Input should be greater than or equal to 1"),
        (lambda p: edit_json(p, "state.json", lambda s: s.update(generator="not base64!")), r"state\.json: generator: String should match pattern"),
        (lambda p: edit_json(p, "state.json", lambda s: s.update(generator="AAAA")), r"state\.json: generator is not a valid RNG state \(3 bytes, not 5056\)"),
        (lambda p: edit_json(p, "state.json", lambda s: s["rng"].update(torch="AAAA")), r"state\.json: rng\.torch is not a valid RNG state"),
        (lambda p: edit_json(p, "state.json", lambda s: s["rng"]["python"]["internal"].__setitem__(-1, 700)), r"state\.json: an invalid RNG state"),
        (lambda p: edit_json(p, "state.json", lambda s: s["scheduler"].update(extra=1)), r"state\.json: scheduler has the keys"),
        (lambda p: edit_json(p, "state.json", lambda s: s.update(step=7)), r"state\.json is for step 7"),
        (lambda p: edit_json(p, "learner/optimizer.json", lambda o: o["param_groups"][0].update(lr="fast")), r"learner/optimizer\.json: param_groups\[0\]\.lr is 'fast', expected a float"),
        (lambda p: edit_json(p, "learner/optimizer.json", lambda o: o["param_groups"][0]["params"].reverse()), r"learner/optimizer\.json: param_groups\[0\]\.params are not this optimizer's parameters in its order"),
    ],
)
def test_a_damaged_sharded_checkpoint_is_one_clear_error_before_anything_changes(tmp_path: Path, damage: Callable[[Path], Any], message: str) -> None:
    sharded_steps(tmp_path, [1, 2])
    path = tmp_path / "step-000002"
    damage(path)
    run = Run(seed=5)
    run.train(1)
    before = run.snapshot()
    with pytest.raises(CheckpointError, match=message) as error:
        load_sharded(run, path)
    assert str(error.value).startswith(f"{path} is not loadable: ")
    assert str(error.value).endswith(f"Complete checkpoints in {tmp_path} (sizes checked, hashes when chosen): step-000001")
    assert same(run.snapshot(), before)


def test_resuming_passes_over_a_sharded_checkpoint_with_a_damaged_file(tmp_path: Path) -> None:
    sharded_steps(tmp_path, [1, 2])
    _flip_byte(tmp_path / "step-000002" / "learner" / "__0_0.distcp")
    assert [i.loadable for i in checkpoint.list_checkpoints(tmp_path, hashes=True)] == [True, False]
    choice = checkpoint.choose_checkpoint(tmp_path)
    assert choice.path == tmp_path / "step-000001"
    assert choice.note == "latest names step-000002; step-000002: learner/__0_0.distcp does not match its sha256 in manifest.json (the file is damaged); using step-000001"


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_edit_of_the_json_files_loads_or_is_a_checkpoint_error(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as folder:
        sharded_steps(Path(folder), [1])
        path = Path(folder) / "step-000001"
        name = data.draw(st.sampled_from(["state.json", "learner/optimizer.json", "manifest.json"]))
        document = json.loads((path / name).read_text())
        place = data.draw(st.sampled_from(_places(document)))
        value = data.draw(_json_values())
        if place:
            target = document
            for key in place[:-1]:
                target = target[key]
            target[place[-1]] = value
        else:
            document = value
        (path / name).write_text(json.dumps(document))
        if name != "manifest.json":
            rehash(path)
        run = Run(seed=2)
        before = run.snapshot()
        try:
            load_sharded(run, path)
        except CheckpointError as error:
            assert str(error).startswith(f"{path} is not loadable: ")
            assert same(run.snapshot(), before)


# --- failed saves ---------------------------------------------------------------------------------


def test_a_failed_learner_save_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = sharded_steps(tmp_path, [1])
    run.train(1)
    staging = begin_checkpoint(tmp_path, 2)

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as disk:
        disk.setattr(torch, "save", full_disk)  # how DCP writes each tensor
        with pytest.raises(CheckpointError) as error:
            save_learner_state(staging, run.model, run.optimizer)
    assert str(error.value) == (
        f"could not save step-000002: no space left on device while writing {staging / 'learner'}; the last good checkpoint step-000001 is kept"
    )
    checkpoint.discard_checkpoint(staging)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000001"]
    assert load_sharded(Run(), checkpoint.latest_checkpoint(tmp_path)).trainer.step == 1


def test_a_failed_finish_removes_its_staging_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = sharded_steps(tmp_path, [1])
    run.train(1)
    staging = begin_checkpoint(tmp_path, 2)
    state = controller_state(2, run.scheduler.state_dict(), run.generator)
    with pytest.raises(CheckpointError, match=r"not saving step-000002: the learners' learner/\.metadata or learner/optimizer\.json is missing"):
        finish_checkpoint(staging, state)
    assert not staging.exists()
    staging = begin_checkpoint(tmp_path, 2)
    save_learner_state(staging, run.model, run.optimizer)
    write = os.write

    def full_disk(descriptor: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{descriptor}").endswith("state.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(descriptor, data)

    with monkeypatch.context() as disk:
        disk.setattr(os, "write", full_disk)
        with pytest.raises(CheckpointError) as error:
            finish_checkpoint(staging, state)
    assert str(error.value) == (
        f"could not save step-000002: no space left on device while writing {staging / 'state.json'}; the last good checkpoint step-000001 is kept"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000001"]
    with pytest.raises(CheckpointError, match="step-000001 exists already; a checkpoint is never overwritten"):
        begin_checkpoint(tmp_path, 1)
    with pytest.raises(CheckpointError, match="the state is for step 2"):
        finish_checkpoint(begin_checkpoint(tmp_path, 3), state)


@pytest.mark.parametrize("poison", ["model", "optimizer"])
def test_non_finite_values_are_never_checkpointed(tmp_path: Path, poison: str) -> None:
    run = sharded_steps(tmp_path, [1])
    if poison == "model":
        with torch.no_grad():
            run.model.hidden.bias[2] = float("nan")
        name = "model hidden.bias"
    else:
        run.optimizer.state[run.model.hidden.weight]["exp_avg"][0, 0] = float("inf")
        name = "optimizer hidden.weight.exp_avg"
    staging = begin_checkpoint(tmp_path, 2)
    with pytest.raises(CheckpointError, match=f"not saving step-000002: NaN or inf values in {name}; the last good checkpoint step-000001 is kept"):
        save_learner_state(staging, run.model, run.optimizer)
    assert list((staging / "learner").iterdir()) == []


# --- kill safety ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_kill_at_any_moment_of_a_sharded_save_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import itertools, sys
        sys.path[:0] = [{str(ROOT)!r}]
        from pathlib import Path
        from tests.test_sharded_checkpoint import Run, load_sharded, save_sharded
        from spiral_train.checkpoint import choose_checkpoint, list_checkpoints, prune_checkpoints
        root = Path({str(tmp_path)!r})
        found = list_checkpoints(root)
        run = Run()
        if found:
            load_sharded(run, choose_checkpoint(root).path, hashes=False)
        for step in itertools.count(found[-1].step + 1 if found else 1):
            run.train(1)
            save_sharded(run, root, step)
            prune_checkpoints(root, keep_last=2)
            print(step, flush=True)
    """)
    steps = []
    for delay in (0.2, 0.45, 0.7, 0.95):
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        first = int(process.stdout.readline())  # then kill it while it saves the next ones
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
        choice = checkpoint.choose_checkpoint(tmp_path)
        steps.append(load_sharded(Run(), choice.path).trainer.step)
        assert steps[-1] >= first
    assert steps == sorted(set(steps))


# --- resharding: 2 ranks -> 1 process, 1 process -> 2 ranks ---------------------------------------


def _one_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    ids = torch.arange(24).reshape(2, 12) * 37 % 2000
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def _full(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The full model and optimizer state, flat (gathered from the shards: a collective, whose
    result only rank 0 gets)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    flat = {f"model.{name}": tensor for name, tensor in model_state.items()}
    flat |= {f"optimizer.{name}.{key}": value for name, values in optimizer_state.get("state", {}).items() for key, value in values.items()}
    return {name: tensor.detach().clone().contiguous() for name, tensor in flat.items()}


def _plain(tiny_qwen3: Path) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    """The tiny Qwen3, AdamW and a constant schedule (which adds ``initial_lr`` to the groups)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def _on_rank(rank: int, port: int, tiny_qwen3: Path, out: Path) -> None:
    """One of 2 gloo ranks: train one step sharded and save it (rank 0 plays the controller),
    gather the full state, then load the other checkpoints into fresh shards and gather again."""
    import torch.distributed as dist

    from spiral_train.sharding import shard_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=RANKS, timeout=datetime.timedelta(seconds=120))
    try:

        def sharded() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
            model = shard_model(_plain(tiny_qwen3)[0])
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
            torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
            return model, optimizer

        model, optimizer = sharded()
        _one_step(model, optimizer)
        root = out / "two-ranks"
        if rank == 0:
            begin_checkpoint(root, 1)
        dist.barrier()
        save_learner_state(root / ".writing-step-000001", model, optimizer)
        dist.barrier()
        if rank == 0:
            finish_checkpoint(root / ".writing-step-000001", controller_state(1, {}, torch.Generator(), ranks=RANKS))
        results = {"two-ranks": _full(model, optimizer)}
        for name in ("one-process", "single-format"):
            model, optimizer = sharded()
            load_learner_state(out / name / "step-000001", model, optimizer)
            results[f"{name}-on-two-ranks"] = _full(model, optimizer)
        if rank == 0:
            for name, tensors in results.items():
                save_file(tensors, out / f"{name}.safetensors")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_checkpoints_reshard_between_two_ranks_and_one_process(tiny_qwen3: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    model, optimizer, scheduler = _plain(tiny_qwen3)
    _one_step(model, optimizer)
    staging = begin_checkpoint(tmp_path / "one-process", 1)
    save_learner_state(staging, model, optimizer)
    finish_checkpoint(staging, controller_state(1, {}, torch.Generator()))
    state = TrainerState(1, 0, 0, {}, {})
    save_checkpoint(tmp_path / "single-format", state, model, optimizer, scheduler, torch.Generator())
    one_process = _full(model, optimizer)

    mp.spawn(_on_rank, args=(free_port(), tiny_qwen3, tmp_path), nprocs=RANKS)

    def equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert any(k.endswith(".exp_avg_sq") for k in one_process) and any(k.endswith(".step") for k in one_process)
    for name in ("one-process", "single-format"):  # 1 process -> 2 ranks
        assert equal(load_file(tmp_path / f"{name}-on-two-ranks.safetensors"), one_process), name
    two_ranks = tmp_path / "two-ranks" / "step-000001"  # 2 ranks -> 1 process
    assert read_state(two_ranks).learner_ranks == RANKS
    assert {p.name for p in (two_ranks / "learner").glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}
    model, optimizer, _ = _plain(tiny_qwen3)
    load_learner_state(two_ranks, model, optimizer)
    gathered = load_file(tmp_path / "two-ranks.safetensors")
    assert equal(_full(model, optimizer), gathered)
    assert not equal(gathered, one_process)  # the ranks' step was their own (summed gradients)


def test_the_index_names_no_path(tmp_path: Path) -> None:
    """The index is written without the staging folder's path (the folder is renamed), so it
    needs no pathlib class to be read."""
    path = save_sharded(sharded_steps(tmp_path, [1]), tmp_path, 2)
    data = (path / "learner" / ".metadata").read_bytes()
    assert b"pathlib" not in data and str(tmp_path).encode() not in data
    assert isinstance(pickle.load(io.BytesIO(data)), dcp_metadata.Metadata)
