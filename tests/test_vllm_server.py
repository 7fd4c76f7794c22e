"""VLLMServerBackend: weight checkpoints and reload requests, against a fake admin server and
against a real vLLM server on the tiny Qwen3."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from spiral_agents.llm.backend import SamplingConfig
from spiral_agents.llm.vllm_server import VLLMServerBackend, WeightSyncError
from tests.helpers import free_port, serving

SECRET = "sk-test-reload-42"


class AdminServer(ThreadingHTTPServer):
    """Answers the two dev-mode endpoints; ``replies`` maps a path to (status, JSON body)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), AdminHandler)
        self.requests: list[tuple[str, Any, str | None]] = []
        self.replies: dict[str, tuple[int, Any]] = {
            "/collective_rpc": (200, {"results": [None]}),
            "/reset_prefix_cache": (200, {"success": True}),
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class AdminHandler(BaseHTTPRequestHandler):
    server: AdminServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        path = self.path.split("?")[0]
        self.server.requests.append((path, body, self.headers.get("Authorization")))
        status, reply = self.server.replies.get(path, (404, {"detail": "Not Found"}))
        payload = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def admin() -> Iterator[AdminServer]:
    yield from serving(AdminServer())


def tied_weights() -> dict[str, torch.Tensor]:
    embed = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    return {
        "model.embed_tokens.weight": embed,
        "lm_head.weight": embed,  # shares storage, as a tied model's state_dict does
        "model.norm.weight": torch.ones(3),
    }


def server_backend(url: str, weights_dir: Path, **kwargs: Any) -> VLLMServerBackend:
    return VLLMServerBackend(url, "policy", tokenizer=None, weights_dir=weights_dir, backoff=0.01, **kwargs)


def test_update_writes_a_checkpoint_then_asks_for_a_reload(admin: AdminServer, tmp_path: Path) -> None:
    backend = server_backend(admin.url, tmp_path / "w", api_key=SECRET)
    backend.update_weights(tied_weights())
    first = tmp_path / "w" / "weights-000001"
    saved = load_file(first / "model.safetensors")
    assert set(saved) == set(tied_weights())
    assert all(torch.equal(saved[k], v) for k, v in tied_weights().items())
    assert [r[0] for r in admin.requests] == ["/collective_rpc", "/reset_prefix_cache"]
    rpc = admin.requests[0][1]
    assert rpc == {"method": "reload_weights", "kwargs": {"weights_path": str(first.resolve())}}
    assert all(auth == f"Bearer {SECRET}" for _, _, auth in admin.requests)

    backend.update_weights({k: v + 1 for k, v in tied_weights().items()})
    # only the newest checkpoint stays, and no staging folder is left behind
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["weights-000002"]
    assert admin.requests[2][1]["kwargs"]["weights_path"].endswith("weights-000002")


@pytest.mark.parametrize(
    ("path", "status", "reply", "message"),
    [
        ("/collective_rpc", 404, {"detail": "Not Found"}, "VLLM_SERVER_DEV_MODE=1"),
        ("/collective_rpc", 500, {"error": f"worker died (key {SECRET})"}, "HTTP 500"),
        ("/reset_prefix_cache", 200, {"success": False}, "kept its prefix cache"),
    ],
)
def test_a_refused_reload_raises_a_clear_error(
    admin: AdminServer, tmp_path: Path, path: str, status: int, reply: Any, message: str
) -> None:
    admin.replies[path] = (status, reply)
    backend = server_backend(admin.url, tmp_path, api_key=SECRET)
    with pytest.raises(WeightSyncError, match=message) as info:
        backend.update_weights(tied_weights())
    assert SECRET not in str(info.value)


LONG_KEY = "sk-proj-Q7f3a9c1e5bZ2x8Lm4Nw6Rt0Yp1Ks9Dh3Vg5Jc7Ub2Ea"


@pytest.mark.parametrize(
    "echo",
    [
        "x" * 469 + LONG_KEY,  # the key straddles character 500 of the body
        "x" * 270 + LONG_KEY,  # ... character 300
        "x" * 270 + f"Authorization: Bearer {LONG_KEY}",
        f"bad key {LONG_KEY[:8]}*****{LONG_KEY[-4:]}",
    ],
    ids=["cut-500", "cut-300", "header", "masked"],
)
def test_reload_errors_never_show_the_key(admin: AdminServer, tmp_path: Path, echo: str) -> None:
    admin.replies["/collective_rpc"] = (500, {"error": echo})
    backend = server_backend(admin.url, tmp_path, api_key=LONG_KEY)
    with pytest.raises(WeightSyncError, match="HTTP 500") as info:
        backend.update_weights(tied_weights())
    shown = str(info.value)
    pieces = [LONG_KEY[i : i + 6] for i in range(len(LONG_KEY) - 5)]
    assert not [piece for piece in pieces if piece in shown], shown
    assert LONG_KEY[-4:] not in shown


def test_an_oversized_reload_reply_is_refused(admin: AdminServer, tmp_path: Path) -> None:
    admin.replies["/reset_prefix_cache"] = (200, {"success": True, "pad": "x" * (3 << 20)})
    backend = server_backend(admin.url, tmp_path)
    with pytest.raises(WeightSyncError, match="reply of more than 1048576 bytes"):
        backend.update_weights(tied_weights())


@pytest.mark.parametrize("reply", [[1, 2], "ok", {"success": None}])
def test_odd_reload_replies_count_as_success(
    admin: AdminServer, tmp_path: Path, reply: object
) -> None:
    admin.replies["/reset_prefix_cache"] = (200, reply)
    server_backend(admin.url, tmp_path).update_weights(tied_weights())
    assert [r[0] for r in admin.requests] == ["/collective_rpc", "/reset_prefix_cache"]


def test_server_down_raises_after_retries(tmp_path: Path) -> None:
    backend = server_backend(f"http://127.0.0.1:{free_port()}/v1", tmp_path, max_retries=2)
    with pytest.raises(WeightSyncError, match="ConnectError"):
        backend.update_weights(tied_weights())


def test_tied_output_layer_is_written_when_missing(admin: AdminServer, tmp_path: Path) -> None:
    weights = tied_weights()
    del weights["lm_head.weight"]  # as Hugging Face's save_pretrained writes a tied model
    server_backend(admin.url, tmp_path).update_weights(weights)
    saved = load_file(tmp_path / "weights-000001" / "model.safetensors")
    assert torch.equal(saved["lm_head.weight"], weights["model.embed_tokens.weight"])


def test_nothing_is_sent_without_weights(admin: AdminServer, tmp_path: Path) -> None:
    backend = server_backend(admin.url, tmp_path)
    with pytest.raises(ValueError, match="empty"):
        backend.update_weights({})
    with pytest.raises(WeightSyncError, match="no .safetensors"):
        backend._reload(tmp_path)  # vLLM's engine would die on it
    assert admin.requests == []


def _logprobs(model: torch.nn.Module, prompt: list[int], output: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt + output])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].log_softmax(-1)
    return logits.gather(1, torch.tensor(output)[:, None]).squeeze(1)


@pytest.mark.slow
def test_real_server_reloads_from_a_saved_checkpoint(vllm_server: str, tiny_qwen3: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    backend = VLLMServerBackend(vllm_server, str(tiny_qwen3), tokenizer, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter), alpha=0.3)
    prompt = tokenizer.encode("Player 0, your move. Your legal moves: [0], [1]", add_special_tokens=False)
    sampling = SamplingConfig(max_tokens=6)
    try:
        before = backend.generate([prompt], sampling, [0])[0][0]
        backend.update_weights(model.state_dict())
        after = backend.generate([prompt], sampling, [0])[0][0]
        assert after.error is None
        expected = _logprobs(model, prompt, after.token_ids)
        # (a stale prefix cache would give the prompt the old weights' keys and values)
        assert torch.allclose(torch.tensor(after.logprobs), expected, atol=1e-3)
    finally:
        backend.update_weights(original)  # the session's server goes back to the tiny Qwen3
    restored = backend.generate([prompt], sampling, [0])[0][0]
    model.load_state_dict(original)
    assert restored.token_ids == before.token_ids
    assert torch.allclose(torch.tensor(restored.logprobs), _logprobs(model, prompt, before.token_ids), atol=1e-3)
