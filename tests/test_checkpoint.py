"""Checkpoint format: no code runs on load, every file hashed, damage is one clear error,
safe ``latest`` pointer, resume discovery, no overwrites, disk full, pruning, finite weights."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import random
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

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from spiral_train import checkpoint
from spiral_train.checkpoint import TrainerState, latest_checkpoint
from tests.single_process_checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


class TinyLM(torch.nn.Module):
    """Embedding, one hidden layer and an output layer tied to the embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(11, 6)
        self.hidden = torch.nn.Linear(6, 6)
        self.head = torch.nn.Linear(6, 11, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.hidden(self.embed(tokens))))


class Run:
    """A model, AdamW, a warm-up LambdaLR and the learner's generator, as the Learner has them."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = TinyLM()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-2, betas=(0.9, 0.99))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(1.0, (step + 1) / 3))
        self.generator = torch.Generator().manual_seed(seed + 1)

    def train(self, steps: int) -> list[float]:
        """Optimizer steps whose data and noise come from every RNG a checkpoint restores."""
        draws = []
        for _ in range(steps):
            tokens = torch.randint(0, 11, (4, 3), generator=self.generator)
            noise = random.random() + float(np.random.rand()) + float(torch.rand(()))
            loss = self.model(tokens).logsumexp(-1).mean() * noise
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            draws.append(noise)
        return draws

    def save(self, root: Path, step: int) -> Path:
        state = TrainerState(step, 10 * step, step, {"values": [["Nim-v0", 0, 0.5]]}, {"steps": 9})
        return save_checkpoint(root, state, self.model, self.optimizer, self.scheduler, self.generator)

    def load(self, path: Path, **kwargs: Any) -> TrainerState:
        return load_checkpoint(path, self.model, self.optimizer, self.scheduler, self.generator, **kwargs)

    def snapshot(self) -> dict[str, Any]:
        """Everything a load may change."""
        return {
            "model": {k: v.clone() for k, v in self.model.state_dict().items()},
            "optimizer": {f"{i}.{k}": v.clone() for i, state in self.optimizer.state_dict()["state"].items() for k, v in state.items()},
            "groups": self.optimizer.state_dict()["param_groups"],
            "scheduler": self.scheduler.state_dict(),
            "rng": (random.getstate(), repr(np.random.get_state()), torch.get_rng_state(), self.generator.get_state()),
        }


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    tensors = all(a[part].keys() == b[part].keys() and all(torch.equal(a[part][k], b[part][k]) for k in a[part]) for part in ("model", "optimizer"))
    rng = a["rng"][:2] == b["rng"][:2] and all(torch.equal(x, y) for x, y in zip(a["rng"][2:], b["rng"][2:]))
    return tensors and rng and a["groups"] == b["groups"] and a["scheduler"] == b["scheduler"]


def saved_steps(root: Path, steps: list[int]) -> Run:
    run = Run()
    for step in steps:
        run.train(1)
        run.save(root, step)
    return run


def rehash(path: Path) -> None:
    """Rewrite the manifest to match the files as they are now (a consistent but wrong writer)."""
    manifest = json.loads((path / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        data = (path / name).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (path / "manifest.json").write_text(json.dumps(manifest))


def edit_json(path: Path, name: str, change: Callable[[Any], None]) -> None:
    document = json.loads((path / name).read_text())
    change(document)
    (path / name).write_text(json.dumps(document))
    rehash(path)


def edit_tensors(path: Path, name: str, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_file(path / name)
    change(tensors)
    save_file(tensors, path / name)
    rehash(path)


# --- saving and loading ---------------------------------------------------------------------


def test_a_resumed_run_continues_bitwise(tmp_path: Path) -> None:
    run = Run()
    run.train(4)
    state = TrainerState(4, 40, 4, {"alpha": 0.95, "values": [["Nim-v0", 1, 0.25]]}, {"steps": 9})
    path = save_checkpoint(tmp_path, state, run.model, run.optimizer, run.scheduler, run.generator)
    expected = run.train(3), run.snapshot()

    resumed = Run(seed=7)
    resumed.train(1)
    assert resumed.load(path) == state
    assert (resumed.train(3), resumed.snapshot())[0] == expected[0]
    assert same(resumed.snapshot(), expected[1])
    assert path.name == "step-000004" and latest_checkpoint(tmp_path) == path


class Planted:
    """Unpickling this creates ``marker``: what any code in a checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_holds_only_json_and_safetensors(tmp_path: Path) -> None:
    path = saved_steps(tmp_path, [1]).save(tmp_path, 2)
    for name in sorted(p.name for p in path.iterdir()):
        if name.endswith(".json"):
            json.loads((path / name).read_text())
        else:
            assert name.endswith(".safetensors") and load_file(path / name), name


def test_loading_never_runs_code_from_the_checkpoint(tmp_path: Path) -> None:
    saved_steps(tmp_path / "ckpt", [1])
    path = tmp_path / "ckpt" / "step-000001"
    marker = tmp_path / "code-ran"
    (path / "training.pt").write_bytes(pickle.dumps(Planted(marker)))  # the old format's name
    try:
        Run(seed=3).load(path)
    except (ValueError, TypeError, RuntimeError):
        pass
    assert not marker.exists()
    for name in ("training.safetensors", "model.safetensors"):  # pickles where tensors belong
        shutil.copy(path / "training.pt", path / name)
        rehash(path)
        with pytest.raises(checkpoint.CheckpointError, match=f"{name}: not a readable safetensors file"):
            Run(seed=3).load(path)
        assert not marker.exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:-10]), "model.safetensors has .* bytes, the manifest says"),
        (lambda p: _flip_byte(p / "model.safetensors"), "model.safetensors does not match its sha256"),
        (lambda p: _flip_byte(p / "training.safetensors"), "training.safetensors does not match its sha256"),
        (lambda p: _flip_byte(p / "state.json"), "state.json does not match its sha256"),
        (lambda p: (p / "training.json").unlink(), "training.json is missing"),
        (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "manifest.json: not valid JSON"),
        (lambda p: edit_json(p, "manifest.json", lambda m: m.update(step="1")), "manifest.json: step: Input should be a valid integer"),
        (lambda p: edit_json(p, "manifest.json", lambda m: m.update(signed_by="me")), "manifest.json: signed_by: Extra inputs"),
        (lambda p: edit_json(p, "manifest.json", lambda m: m["files"].pop("state.json")), "manifest.json lists"),
        (lambda p: edit_json(p, "manifest.json", lambda m: m.update(step=7)), "manifest.json is for step 7"),
        (lambda p: ((p / "training.json").write_text("[1, 2"), rehash(p)), "training.json: not valid JSON"),
        (lambda p: edit_json(p, "state.json", lambda s: s.update(games="2")), "state.json: games: Input should be a valid integer"),
        (lambda p: edit_json(p, "state.json", lambda s: s.update(epoch=1)), "state.json: epoch: Extra inputs"),
        (lambda p: edit_json(p, "training.json", lambda t: t["optimizer"]["param_groups"][0].update(lr="fast")), "optimizer.param_groups\\[0\\].lr is 'fast', expected a float"),
        (lambda p: edit_json(p, "training.json", lambda t: t["optimizer"]["param_groups"][0].update(momentum=0.9)), "optimizer.param_groups\\[0\\] has the keys"),
        (lambda p: edit_json(p, "training.json", lambda t: t["optimizer"]["param_groups"][0]["params"].pop()), "params should be a list of 3 values"),
        (lambda p: edit_json(p, "training.json", lambda t: t["optimizer"]["state"].update({"9": {}})), "optimizer state for parameter 9"),
        (lambda p: edit_json(p, "training.json", lambda t: t["scheduler"].update(lr_lambdas=[{"__class__": 1}])), "scheduler.lr_lambdas\\[0\\] is"),
        (lambda p: edit_json(p, "training.json", lambda t: t["scheduler"].update(extra=1)), "scheduler has the keys"),
        (lambda p: edit_json(p, "training.json", lambda t: t["rng"]["python"]["internal"].pop()), "rng.python.internal: List should have at least 625"),
        (lambda p: edit_json(p, "training.json", lambda t: t["rng"]["python"]["internal"].__setitem__(-1, 700)), "an invalid RNG state"),
        (lambda p: edit_json(p, "training.json", lambda t: t["rng"]["numpy"].update(key=[-1] * 624)), "rng.numpy.key.0: Input should be greater than or equal to 0"),
        (lambda p: edit_tensors(p, "model.safetensors", lambda t: t.update({"hidden.weight": torch.zeros(6, 7)})), "hidden.weight is torch.float32 \\[6, 7\\], the model's is torch.float32 \\[6, 6\\]"),
        (lambda p: edit_tensors(p, "model.safetensors", lambda t: t.update({"hidden.weight": t["hidden.weight"].double()})), "hidden.weight is torch.float64"),
        (lambda p: edit_tensors(p, "model.safetensors", lambda t: t.update({"head.weight": t["embed.weight"].clone()})), "model.safetensors does not fit this model"),
        (lambda p: edit_tensors(p, "training.safetensors", lambda t: t.update({"optimizer.1.exp_avg": torch.zeros(3)})), "optimizer state 1.exp_avg is torch.float32 \\[3\\], its parameter \\[6, 6\\]"),
        (lambda p: edit_tensors(p, "training.safetensors", lambda t: t.pop("rng.learner")), "training.safetensors does not fit training.json: it lacks rng.learner"),
        (lambda p: edit_tensors(p, "training.safetensors", lambda t: t.update({"rng.torch": torch.zeros(10, dtype=torch.uint8)})), "rng.torch is not a valid RNG state"),
        (lambda p: edit_tensors(p, "training.safetensors", lambda t: t.update({"rng.torch": torch.full((5056,), 255, dtype=torch.uint8)})), "rng.torch is not a valid RNG state"),
    ],
)
def test_a_damaged_checkpoint_is_one_clear_error_before_anything_changes(tmp_path: Path, damage: Callable[[Path], Any], message: str) -> None:
    saved_steps(tmp_path, [1, 2])
    path = tmp_path / "step-000002"
    damage(path)
    run = Run(seed=5)
    run.train(1)
    before = run.snapshot()
    with pytest.raises(checkpoint.CheckpointError, match=message) as error:
        run.load(path)
    assert str(error.value).startswith(f"{path} is not loadable: ")
    assert str(error.value).endswith(f"Complete checkpoints in {tmp_path} (sizes checked, hashes when chosen): step-000001")
    assert same(run.snapshot(), before)


def _flip_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[-1] ^= 0x01  # the last tensor's data, or a JSON file's closing brace
    file.write_bytes(bytes(data))


def _json_values() -> st.SearchStrategy:
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def _places(document: Any, where: tuple = ()) -> list[tuple]:
    """Every place (path of keys) in a JSON document."""
    places = [where]
    if isinstance(document, dict):
        for key, value in document.items():
            places += _places(value, (*where, key))
    elif isinstance(document, list):
        for index, value in enumerate(document[:3]):
            places += _places(value, (*where, index))
    return places


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_edit_of_the_json_files_loads_or_is_a_checkpoint_error(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as folder:
        saved_steps(Path(folder), [1])
        path = Path(folder) / "step-000001"
        name = data.draw(st.sampled_from(["training.json", "state.json", "manifest.json"]))
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
            run.load(path)
        except checkpoint.CheckpointError as error:
            assert str(error).startswith(f"{path} is not loadable: ")
            assert same(run.snapshot(), before)


# --- the latest pointer and choosing a checkpoint --------------------------------------------


@pytest.mark.parametrize("pointer", ["../../other", "/etc", "step-000001/../other", "", "\n", "garbage", "step-1", "step-0000012", "step-００００01", "step-000009"])
def test_latest_only_ever_names_a_checkpoint_folder_of_the_root(tmp_path: Path, pointer: str) -> None:
    root = tmp_path / "runs" / "a"
    saved_steps(root, [1, 2])
    other = tmp_path / "other"  # a complete checkpoint elsewhere
    shutil.copytree(root / "step-000002", other)
    (root / "step-000009").write_text("a file, not a checkpoint")
    (root / "latest").write_text(pointer)
    with pytest.raises(checkpoint.CheckpointError, match="latest"):
        latest_checkpoint(root)
    choice = checkpoint.choose_checkpoint(root)
    assert choice.path == root / "step-000002" and choice.step == 2
    assert choice.note.startswith(f"{root / 'latest'} ") and "step-000009: it is not a folder" in choice.note


def test_latest_is_not_followed_through_links(tmp_path: Path) -> None:
    saved_steps(tmp_path / "a", [1])
    saved_steps(tmp_path / "b", [5])
    os.symlink(tmp_path / "b" / "step-000005", tmp_path / "a" / "step-000005")
    (tmp_path / "a" / "latest").write_text("step-000005")
    with pytest.raises(checkpoint.CheckpointError, match="names step-000005, which is not a checkpoint folder"):
        latest_checkpoint(tmp_path / "a")
    (tmp_path / "a" / "latest").unlink()
    os.symlink(tmp_path / "b" / "latest", tmp_path / "a" / "latest")
    with pytest.raises(checkpoint.CheckpointError, match="is not a plain file"):
        latest_checkpoint(tmp_path / "a")
    assert checkpoint.choose_checkpoint(tmp_path / "a").path == tmp_path / "a" / "step-000001"


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80) | st.from_regex(r"\s*step-[0-9]{1,8}\s*", fullmatch=True) | st.sampled_from(["step-000003", " step-000003\n"]))
def test_any_pointer_text_names_a_direct_child_or_is_an_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "step-000003").mkdir()
        (root / "latest").write_text(text, errors="surrogateescape")
        try:
            path = latest_checkpoint(root)
        except checkpoint.CheckpointError:
            return
        assert path == root / "step-000003" and text.strip() == "step-000003"


@given(text=st.text(max_size=12) | st.integers(-5, 2_000_000) | st.from_regex(r"(step-)?[0-9]{1,8}", fullmatch=True))
def test_resume_from_accepts_step_numbers_in_any_spelling(text: str | int) -> None:
    try:
        step = checkpoint.parse_step(text)
    except checkpoint.CheckpointError as error:
        assert "is not a checkpoint step" in str(error)
        return
    assert 0 <= step <= 999_999 and str(text).strip().removeprefix("step-").lstrip("0") == str(step).lstrip("0")


def test_choosing_what_to_resume_from(tmp_path: Path) -> None:
    saved_steps(tmp_path, [1, 2, 3, 4])
    (tmp_path / "step-000003" / "manifest.json").unlink()
    _flip_byte(tmp_path / "step-000004" / "model.safetensors")
    listed = checkpoint.list_checkpoints(tmp_path)
    assert [(i.step, i.loadable) for i in listed] == [(1, True), (2, True), (3, False), (4, True)]
    assert "manifest.json is missing" in listed[2].problem
    hashed = checkpoint.list_checkpoints(tmp_path, hashes=True)
    assert [i.loadable for i in hashed] == [True, True, False, False]
    assert "model.safetensors does not match its sha256" in hashed[3].problem

    choice = checkpoint.choose_checkpoint(tmp_path)  # latest names the damaged step-000004
    assert choice.path == tmp_path / "step-000002"
    assert choice.note.startswith("latest names step-000004; step-000003: manifest.json is missing")
    assert "step-000004: model.safetensors does not match" in choice.note and choice.note.endswith("; using step-000002")
    assert Run().load(choice.path, hashes=False).step == 2

    for spelling in ("step-1", "step-000001", "1", " 1 ", 1):
        assert checkpoint.choose_checkpoint(tmp_path, spelling) == (tmp_path / "step-000001", None)
    with pytest.raises(checkpoint.CheckpointError, match="step-000004: model.safetensors does not match .*: step-000001, step-000002$"):
        checkpoint.choose_checkpoint(tmp_path, "step-4")
    with pytest.raises(checkpoint.CheckpointError, match="step-000007: it does not exist. Complete checkpoints .*: step-000001, step-000002"):
        checkpoint.choose_checkpoint(tmp_path, 7)
    with pytest.raises(checkpoint.CheckpointError, match="'../1' is not a checkpoint step"):
        checkpoint.choose_checkpoint(tmp_path, "../1")

    (tmp_path / "latest").unlink()
    assert checkpoint.choose_checkpoint(tmp_path).note.startswith(f"{tmp_path / 'latest'} is missing; ")
    for step in (1, 2):
        (tmp_path / f"step-00000{step}" / "state.json").unlink()
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.choose_checkpoint(tmp_path)
    assert str(error.value) == (
        f"no loadable checkpoint in {tmp_path}: step-000001: state.json is missing; step-000002: state.json is missing; "
        "step-000003: manifest.json is missing (an incomplete copy, or an older checkpoint format); "
        "step-000004: model.safetensors does not match its sha256 in manifest.json (the file is damaged)"
    )
    with pytest.raises(checkpoint.CheckpointError, match="no loadable checkpoint in .*: there is none"):
        checkpoint.choose_checkpoint(tmp_path / "nothing-here")


def test_a_checkpoint_newer_than_latest_is_used(tmp_path: Path) -> None:
    """A kill between a checkpoint's rename and the pointer update leaves latest one behind."""
    saved_steps(tmp_path, [1, 2])
    (tmp_path / "latest").write_text("step-000001")
    choice = checkpoint.choose_checkpoint(tmp_path)
    assert choice.path == tmp_path / "step-000002"
    assert "latest names step-000001, but step-000002 is newer and complete" in choice.note


# --- never overwrite; setting later checkpoints aside ------------------------------------------


def test_a_step_folder_is_never_overwritten(tmp_path: Path) -> None:
    run = saved_steps(tmp_path, [1, 2, 3])
    first = (tmp_path / "step-000001" / "model.safetensors").read_bytes()
    run.train(1)
    with pytest.raises(checkpoint.CheckpointError, match="step-000001 exists already; a checkpoint is never overwritten"):
        run.save(tmp_path, 1)
    assert (tmp_path / "step-000001" / "model.safetensors").read_bytes() == first
    assert latest_checkpoint(tmp_path).name == "step-000003"

    later = checkpoint.later_checkpoints(tmp_path, 1)
    assert later == [tmp_path / "step-000002", tmp_path / "step-000003"]
    aside = checkpoint.set_aside(tmp_path, later[1:])
    assert aside.parent == tmp_path / "superseded" and [p.name for p in aside.iterdir()] == ["step-000003"]
    assert latest_checkpoint(tmp_path).name == "step-000002"  # it named a moved one
    checkpoint.verify_checkpoint(aside / "step-000003")
    checkpoint.delete_checkpoints(tmp_path, [tmp_path / "step-000002"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("step")] == ["step-000001"]
    assert latest_checkpoint(tmp_path).name == "step-000001"
    with pytest.raises(checkpoint.CheckpointError, match="not checkpoints of"):
        checkpoint.delete_checkpoints(tmp_path, [aside / "step-000003"])
    assert run.save(tmp_path, 2).name == "step-000002"


# --- failed saves -------------------------------------------------------------------------------


def test_disk_full_while_writing_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = saved_steps(tmp_path, [1])
    write = os.write

    def full_disk(descriptor: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{descriptor}").startswith(str(tmp_path / ".writing-")):
            write(descriptor, bytes(data)[:7])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(descriptor, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(checkpoint.CheckpointError) as error:
        run.save(tmp_path, 2)
    monkeypatch.undo()
    assert str(error.value) == (
        f"could not save step-000002: no space left on device while writing {tmp_path / '.writing-step-000002' / 'training.json'}; "
        "the last good checkpoint step-000001 is kept"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000001"]
    assert Run().load(latest_checkpoint(tmp_path)).step == 1


def test_a_really_full_disk_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    """On a 1 MiB tmpfs (in a user and mount namespace) that the first checkpoint and a filler
    file fill up."""
    namespace = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c"]
    probe = f"mount -t tmpfs -o size=4k tmpfs {tmp_path}"
    try:
        if subprocess.run([*namespace, probe], check=False, capture_output=True, timeout=30).returncode:
            pytest.skip("unprivileged user namespaces cannot mount a tmpfs here")
    except OSError:
        pytest.skip("needs unshare (util-linux)")
    code = textwrap.dedent(f"""
        import os, sys
        sys.path[:0] = [{str(ROOT)!r}]
        from pathlib import Path
        from tests.test_checkpoint import Run
        from spiral_train.checkpoint import CheckpointError, latest_checkpoint
        root = Path({str(tmp_path / "disk")!r}) / "checkpoints"
        run = Run()
        run.save(root, 1)
        free = os.statvfs(root).f_bavail * os.statvfs(root).f_frsize
        (root.parent / "filler").write_bytes(bytes(free - 2048))
        try:
            run.save(root, 2)
        except CheckpointError as error:
            print(error)
        print(sorted(p.name for p in root.iterdir()), latest_checkpoint(root).name, Run().load(root / "step-000001").step)
    """)
    (tmp_path / "disk").mkdir()
    script = f"mount -t tmpfs -o size=1m tmpfs {tmp_path / 'disk'} && exec {sys.executable} -c \"$0\""
    result = subprocess.run([*namespace, script, code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    message, listing = result.stdout.strip().splitlines()
    assert message.startswith("could not save step-000002: no space left on device while writing ")
    assert f"{tmp_path / 'disk' / 'checkpoints' / '.writing-step-000002'}/" in message
    assert message.endswith("the last good checkpoint step-000001 is kept")
    assert listing == "['latest', 'step-000001'] step-000001 1"


@pytest.mark.parametrize("poison", ["model", "optimizer"])
def test_non_finite_values_are_never_checkpointed(tmp_path: Path, poison: str) -> None:
    run = saved_steps(tmp_path, [1])
    if poison == "model":
        with torch.no_grad():
            run.model.hidden.bias[2] = float("nan")
        name = "model hidden.bias"
    else:
        run.optimizer.state[run.model.hidden.weight]["exp_avg"][0, 0] = float("inf")
        name = "optimizer optimizer.1.exp_avg"
    with pytest.raises(checkpoint.CheckpointError, match=f"not saving step-000002: NaN or inf values in {name}; the last good checkpoint step-000001 is kept"):
        run.save(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000001"]


# --- pruning ------------------------------------------------------------------------------------


def test_pruning_keeps_the_newest_and_what_latest_names(tmp_path: Path) -> None:
    run = Run()
    for step in range(1, 6):
        run.train(1)
        run.save(tmp_path, step)
        checkpoint.prune_checkpoints(tmp_path, keep_last=2)
    assert [i.step for i in checkpoint.list_checkpoints(tmp_path)] == [4, 5]
    (tmp_path / "latest").write_text("step-000004")
    run.train(1)
    run.save(tmp_path, 6)
    (tmp_path / "latest").write_text("step-000004")
    assert checkpoint.prune_checkpoints(tmp_path, keep_last=1) == [tmp_path / "step-000005"]
    assert [i.step for i in checkpoint.list_checkpoints(tmp_path)] == [4, 6]
    assert checkpoint.prune_checkpoints(tmp_path, keep_last=0) == []
    with pytest.raises(ValueError, match="keep_last must be >= 0"):
        checkpoint.prune_checkpoints(tmp_path, keep_last=-1)


# --- kill safety --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_kill_at_any_moment_of_saving_and_pruning_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import itertools, sys
        sys.path[:0] = [{str(ROOT)!r}]
        from pathlib import Path
        from tests.test_checkpoint import Run
        from spiral_train.checkpoint import choose_checkpoint, list_checkpoints, prune_checkpoints
        root = Path({str(tmp_path)!r})
        found = list_checkpoints(root)
        run = Run()
        if found:
            run.load(choose_checkpoint(root).path)
        for step in itertools.count(found[-1].step + 1 if found else 1):
            run.train(1)
            run.save(root, step)
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
        steps.append(Run().load(choice.path).step)
        assert steps[-1] >= first
    assert steps == sorted(set(steps))
