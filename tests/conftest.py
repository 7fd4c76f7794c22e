"""Shared fixtures: the tiny offline Qwen3 and a real vLLM server on it."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

SERVER_READY_S = 240.0


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the tiny offline Qwen3 (tokenizer + random weights), built once per run."""
    from spiral_agents.llm.tiny import ensure_tiny_qwen3

    return ensure_tiny_qwen3(tmp_path_factory.mktemp("models") / "tiny-qwen3")


@pytest.fixture(scope="session")
def vllm_server(tiny_qwen3: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A vLLM OpenAI-compatible server on the tiny Qwen3 (served under its path, dev-mode
    endpoints on, so weights can be reloaded); yields its base URL. A test that reloads
    weights must load the tiny Qwen3's own weights back before it ends."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    import httpx

    scratch = tmp_path_factory.mktemp("vllm-server")
    port = free_port()
    env = dict(
        os.environ,
        VLLM_CPU_KVCACHE_SPACE="1",
        VLLM_SERVER_DEV_MODE="1",
        HF_HUB_OFFLINE="1",
        TMPDIR=str(scratch),
        VLLM_CACHE_ROOT=str(scratch / "cache"),
    )
    # --enforce-eager skips the warm-up compilation: ready in ~30 s instead of ~100 s here.
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_qwen3),
        "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "1024",
        "--dtype", "float32", "--enforce-eager",
    ]  # fmt: skip
    log_path = scratch / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVER_READY_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{_tail(log_path)}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not ready in {SERVER_READY_S:g} s:\n{_tail(log_path)}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop_group(proc)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after 30 s; no leftovers."""
    pgid = proc.pid
    for sig, wait_s in [(signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)]:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            continue
        break
    proc.wait(timeout=10)
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
