"""The scale-out's prepared GPU script (benchmarks/gpu_scale.py) run on the CPU with --tiny, its
parts that need no run, and the SLURM launch script (scripts/slurm/spiral-train.sbatch) driven by
stand-ins for srun, scontrol, hostname, ray and spiral-train (there is no SLURM cluster here)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_scale.py"
SBATCH = ROOT / "scripts" / "slurm" / "spiral-train.sbatch"


@pytest.fixture(scope="module")
def gpu_scale() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --- the peak FLOP/s table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H200 NVL", 835.0),
        ("NVIDIA GH200 480GB", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L40", 181.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA B200", 2250.0),
        ("AMD Instinct MI300X", 1307.0),
        ("NVIDIA GeForce RTX 4090", None),
        ("Tesla V100-SXM2-16GB", None),
        ("CPU", None),
    ],
)
def test_the_peak_is_looked_up_by_the_words_of_the_gpu_name(gpu_scale: ModuleType, name: str, tflops: float | None) -> None:
    assert gpu_scale.peak_bf16_tflops(name) == tflops


@given(name=st.text())
def test_any_gpu_name_gives_a_table_entry_or_none(gpu_scale: ModuleType, name: str) -> None:
    assert gpu_scale.peak_bf16_tflops(name) in {None, *(tflops for _, tflops in gpu_scale.PEAK_BF16_TFLOPS)}


# --- arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tiny", "--steps", "0"], "--steps: must be at least 1, got 0"),
        (["--tiny", "--samples", "two"], "--samples: expected a whole number, got 'two'"),
        (["--tiny", "--peak-tflops", "nan"], "--peak-tflops: must be a finite number above 0, got 'nan'"),
        (["--tiny", "--peak-tflops", "-5"], "--peak-tflops: must be a finite number above 0, got '-5'"),
        (["--tiny", "--vllm-memory", "1.5"], "--vllm-memory: must be in (0, 1], got '1.5'"),
        (["--tiny", "--out", "/nonexistent-folder/figures.json"], "--out /nonexistent-folder/figures.json: must be a file in an existing folder"),
    ],
)
def test_a_bad_argument_is_one_error_line_before_any_work(
    gpu_scale: ModuleType, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        gpu_scale.parse_args(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_without_a_gpu_the_full_size_run_points_to_tiny(gpu_scale: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the full-size run is allowed")
    with pytest.raises(SystemExit):
        gpu_scale.parse_args([])
    assert "no CUDA GPU here: run with --tiny" in capsys.readouterr().err


def test_an_out_folder_is_refused(gpu_scale: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        gpu_scale.parse_args(["--tiny", "--out", str(tmp_path)])
    assert "must be a file in an existing folder" in capsys.readouterr().err


# --- phases and optional libraries --------------------------------------------------------------------


def test_a_failed_phase_is_reported_and_the_next_one_still_runs(gpu_scale: ModuleType) -> None:
    report = gpu_scale.Report({"script": "x"})
    with report.phase("learner") as figures:
        figures["seconds"] = gpu_scale.figure(1.0, "s")
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
    with report.phase("weight_gather") as figures:
        figures["bytes"] = gpu_scale.figure(8, "bytes")
    assert report.failed
    assert report.data["learner"] == "failed: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert report.data["weight_gather"] == {"bytes": {"value": 8, "unit": "bytes"}}
    assert set(report.data["phase_seconds"]) == {"learner", "weight_gather"}


def test_a_missing_or_broken_library_is_a_reason_to_skip(gpu_scale: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert gpu_scale.optional_module("spiral_no_such_library") == (None, "spiral_no_such_library not installed")
    (tmp_path / "spiral_broken_library.py").write_text("raise RuntimeError('libnvrtc.so.13: cannot open shared object file')\n")
    (tmp_path / "spiral_library_missing_a_dependency.py").write_text("import spiral_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module, reason = gpu_scale.optional_module("spiral_broken_library")
    assert module is None and reason == "spiral_broken_library does not import: RuntimeError: libnvrtc.so.13: cannot open shared object file"
    module, reason = gpu_scale.optional_module("spiral_library_missing_a_dependency")
    assert module is None and reason.startswith("spiral_library_missing_a_dependency does not import: No module named")


# --- the --tiny run ----------------------------------------------------------------------------------

REQUIRED = {
    "learner": ["tokens_per_second", "seconds_per_update", "trained_tokens", "parameters", "model_flops_per_second", "mfu", "peak_memory"],
    "weight_gather": ["seconds", "bytes", "tensors"],
    "transformers_generate": ["tokens_per_second", "seconds", "generated_tokens"],
    "ray": ["actors_ready_seconds", "sync_seconds", "gather_seconds", "load_seconds", "bytes"],
    "vllm": ["tokens_per_second", "seconds", "generated_tokens", "weight_update_seconds", "weight_update_bytes"],
    "async": ["k0_step_seconds", "k1_step_seconds", "k1_generator_idle_seconds", "k1_policy_lag_mean", "k0_over_k1_step"],
}


def run_tiny(tmp_path: Path, *extra: str, blocked: tuple[str, ...] = ()) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """``gpu_scale.py --tiny`` in a subprocess on loopback; ``blocked`` libraries cannot be imported
    there (as where they are not installed). Returns the JSON object on stdout and the process."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), GLOO_SOCKET_IFNAME="lo",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", VLLM_CACHE_ROOT=str(tmp_path / "vllm-cache"), HF_HUB_OFFLINE="1")
    if blocked:
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked))
        env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    out = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out), *extra], check=False, cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    data = json.loads(result.stdout)  # stdout holds the JSON object and nothing else
    assert json.loads(out.read_text()) == data
    return data, result


def assert_figures(phase: Any, required: list[str]) -> None:
    assert isinstance(phase, dict), phase
    assert set(required) <= set(phase), f"missing {set(required) - set(phase)}"
    for name, value in phase.items():
        if isinstance(value, dict):
            assert set(value) == {"value", "unit"} and isinstance(value["unit"], str) and value["unit"], name
            assert isinstance(value["value"], (int, float)) and math.isfinite(value["value"]) and value["value"] >= 0, name
            assert value["value"] > 0 or name not in required, name


def assert_header(data: dict[str, Any]) -> None:
    assert data["machine"]["device"] == "cpu" and data["machine"]["gpu"] is None
    assert data["versions"]["torch"] and data["versions"]["transformers"]
    assert data["settings"]["mode"] == "tiny (CPU)"
    assert data["total_seconds"]["unit"] == "s" and data["total_seconds"]["value"] > 0


def test_the_tiny_run_measures_the_torch_phases_and_says_what_it_skipped(tmp_path: Path) -> None:
    data, _ = run_tiny(tmp_path, "--steps", "1", "--samples", "2", "--gen-tokens", "2", "--peak-tflops", "0.1",
                       blocked=("vllm", "ray"))
    assert_header(data)
    assert data["settings"]["peak_bf16_flops"] == {"value": 1e11, "unit": "FLOP/s"}
    assert data["settings"]["peak_source"] == "--peak-tflops"
    for phase in ("learner", "weight_gather", "transformers_generate"):
        assert_figures(data[phase], REQUIRED[phase])
        assert data["phase_seconds"][phase]["value"] > 0
    assert data["learner"]["parameters"]["value"] == 164_288  # the tiny Qwen3, tied embeddings once
    assert data["weight_gather"]["bytes"]["value"] == 4 * 164_288  # float32, tied weights once
    assert data["transformers_generate"]["generated_tokens"]["value"] == 4 * 2
    assert data["vllm"] == "skipped: vllm not installed"
    assert data["ray"] == data["async"] == "skipped: ray not installed"


@pytest.mark.slow
def test_the_tiny_run_with_vllm_and_ray_measures_every_phase(tmp_path: Path) -> None:
    for library in ("vllm", "ray"):
        if importlib.util.find_spec(library) is None:
            pytest.skip(f"{library} is not installed")
    data, result = run_tiny(tmp_path)
    assert_header(data)
    assert data["learner"].pop("mfu") == "unknown: no peak bf16 FLOP/s for 'CPU'; pass --peak-tflops"
    assert "peak_bf16_flops" not in data["settings"]
    for phase, required in REQUIRED.items():
        assert_figures(data[phase], [name for name in required if name != "mfu"])
    assert data["learner"]["trained_tokens"]["value"] == 2 * 2 * 139  # 2 updates x 2 epochs x the 8 samples' tokens
    assert data["ray"]["learner_actor_on"] == data["ray"]["generator_actor_on"] == "CPU"
    assert data["ray"]["bytes"] == data["weight_gather"]["bytes"] == data["vllm"]["weight_update_bytes"]
    assert data["vllm"]["generated_tokens"]["value"] == data["transformers_generate"]["generated_tokens"]["value"] == 4 * 16
    assert "INFO" in result.stderr  # vLLM's log lines, which it writes to stdout, went to stderr


# --- the SLURM launch script --------------------------------------------------------------------------

STAND_INS = {
    # srun: logs on which node (-w) it runs what, then runs it here
    "srun": """node=all
while [[ $1 == -* ]]; do
    if [[ $1 == -w ]]; then node=$2; shift; fi
    shift
done
echo "srun[$node] $*" >> "$LOG"
SHIM_NODE=$node exec "$@"
""",
    "scontrol": 'echo "$SHIM_NODES" | tr " " "\\n"\n',
    "hostname": 'echo "fe80::5054:ff:fe12:3456 10.1.2.3"\n',
    # ray: `start --block` marks its node up and blocks until TERM (SHIM_DEAD_NODE fails to
    # start); `status` lists the nodes that are up as Ray 2.60 prints them
    "ray": """echo "ray[$SHIM_NODE] $*" >> "$LOG"
case $1 in
start)
    [[ $SHIM_NODE == "${SHIM_DEAD_NODE:-}" ]] && exit 1
    trap 'rm -f "$STATE/up-$SHIM_NODE"; exit 0' TERM
    touch "$STATE/up-$SHIM_NODE"
    while :; do sleep 0.05; done ;;
status)
    compgen -G "$STATE/up-*" > /dev/null || exit 1
    echo "Node status"; echo "-------"; echo "Active:"
    for up in "$STATE"/up-*; do echo " 1 node_${up##*/up-}"; done
    echo "Pending:"; echo " (no pending nodes)"; echo "Recent failures:"; echo " (no failures)" ;;
esac
""",
    # spiral-train: logs its arguments and whether it has Ray's token; SHIM_TRAIN=fail exits 3,
    # SHIM_TRAIN=hang trains until TERM
    "spiral-train": """echo "spiral-train $* auth=$RAY_AUTH_MODE token=${#RAY_AUTH_TOKEN}" >> "$LOG"
case ${SHIM_TRAIN:-} in
fail) exit 3 ;;
hang) trap 'echo "spiral-train got TERM" >> "$LOG"; exit 143' TERM
      touch "$STATE/training"
      while :; do sleep 0.05; done ;;
esac
""",
}


@pytest.fixture
def slurm(tmp_path: Path) -> dict[str, str]:
    """The environment of a two-node job whose commands are the stand-ins above."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in STAND_INS.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path), "LOG": str(tmp_path / "log"),
        "STATE": str(state), "SHIM_NODES": "gpu-a gpu-b", "SLURM_JOB_NODELIST": "gpu-[a-b]", "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_ID": "42", "SLURM_CPUS_PER_TASK": "32", "SLURM_GPUS_PER_TASK": "8", "RAY_START_TIMEOUT": "20",
    }


def sbatch(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    result = subprocess.run(["bash", str(SBATCH), *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return result, Path(env["LOG"]).read_text().splitlines() if Path(env["LOG"]).exists() else []


def test_the_job_starts_the_head_then_the_workers_trains_on_the_head_and_stops_ray(slurm: dict[str, str]) -> None:
    result, log = sbatch(slurm, "steps=2", "--resume")
    assert result.returncode == 0, result.stderr
    address = "10.1.2.3:6379"
    resources = "--num-cpus=32 --num-gpus=8 --disable-usage-stats --block"
    head_up = log.index(f"ray[gpu-a] start --head --node-ip-address=10.1.2.3 --port=6379 {resources}")
    worker = log.index(f"srun[gpu-b] ray start --address={address} {resources}")
    # the script polls `ray status` until the head answers: polls before the background srun
    # step logs are a matter of timing, but one poll must see the head up before a worker starts
    assert f"ray[] status --address {address}" in log[head_up:worker]
    log = [line for line in log if not line.startswith("ray[] status")]
    assert log[0] == "srun[gpu-a] hostname --ip-address"
    assert log[1] == f"srun[gpu-a] ray start --head --node-ip-address=10.1.2.3 --port=6379 {resources}"
    worker = log.index(f"srun[gpu-b] ray start --address={address} {resources}")
    training = next(i for i, line in enumerate(log) if line.startswith("spiral-train"))
    assert 1 < worker < training
    assert log[training] == (
        f"spiral-train --config configs/qwen3-4b-base.yaml cluster.address={address} cluster.learners=16 "
        "cluster.generators=16 cluster.colocate=true steps=2 --resume auth=token token=64"
    )
    assert log[training + 1 :] == ["srun[gpu-a,gpu-b] ray stop", "ray[gpu-a,gpu-b] stop"]


def test_a_failed_training_ends_the_job_with_its_status_and_ray_stopped(slurm: dict[str, str]) -> None:
    result, log = sbatch(dict(slurm, SHIM_TRAIN="fail", LEARNERS="4", COLOCATE="false", RAY_AUTH_MODE="disabled"))
    assert result.returncode == 3
    training = next(line for line in log if line.startswith("spiral-train"))
    assert "cluster.learners=4 cluster.generators=4 cluster.colocate=false" in training
    assert training.endswith("auth=disabled token=0")
    assert log[-1] == "ray[gpu-a,gpu-b] stop"


def test_a_worker_that_does_not_start_stops_the_job_before_training(slurm: dict[str, str]) -> None:
    result, log = sbatch(dict(slurm, SHIM_DEAD_NODE="gpu-b"))
    assert result.returncode == 1
    assert "a 'ray start' step ended early (1 of 2 nodes up)" in result.stderr
    assert not any(line.startswith("spiral-train") for line in log)
    assert log[-1] == "ray[gpu-a,gpu-b] stop"


def test_a_term_from_slurm_stops_training_then_ray(slurm: dict[str, str]) -> None:
    env = dict(slurm, SHIM_TRAIN="hang")
    job = subprocess.Popen(["bash", str(SBATCH)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (Path(env["STATE"]) / "training").exists():
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()
            time.sleep(0.05)
        job.send_signal(signal.SIGTERM)  # what --signal=B:TERM@300 sends before the time limit
        _, stderr = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 143, stderr
    log = Path(env["LOG"]).read_text().splitlines()
    assert log[-3:] == ["spiral-train got TERM", "srun[gpu-a,gpu-b] ray stop", "ray[gpu-a,gpu-b] stop"]
    assert not list(Path(env["STATE"]).glob("up-*"))  # both `ray start --block` steps ended


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"SLURM_JOB_NODELIST": ""}, "not inside a SLURM job: submit this script with sbatch"),
        ({"CONFIG": "configs/missing.yaml"}, "CONFIG=configs/missing.yaml: no such file"),
        ({"GPUS_PER_NODE": "eight"}, "GPUS_PER_NODE=eight: expected a whole number"),
        ({"COLOCATE": "yes"}, "COLOCATE=yes: expected true or false"),
    ],
)
def test_a_bad_setting_stops_the_job_before_ray_starts(slurm: dict[str, str], changes: dict[str, str], message: str) -> None:
    result, log = sbatch(dict(slurm, **changes))
    assert result.returncode == 1 and message in result.stderr
    assert log == []
