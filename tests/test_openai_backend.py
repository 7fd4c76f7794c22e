"""OpenAICompatibleBackend against a local misbehaving server and a real vLLM server.

Everything talks to 127.0.0.1 only. The fake server picks its behaviour from the prompt text
("scenario:NAME"), counts attempts per (scenario, seed) and records the most requests it saw
in flight at once.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from spiral_agents.llm.backend import Backend, Generation, SamplingConfig
from spiral_agents.llm.openai_backend import MAX_RETRY_AFTER, OpenAICompatibleBackend, _retry_after
from tests.helpers import free_port, serving

SECRET = "sk-test-7f3a9c1e5b"
HANG_S = 2.0


class CharTokenizer:
    """Stands in for an HF tokenizer: one id per character."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.lock = threading.Lock()
        self.attempts: Counter[tuple[str, Any]] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        chat = self.path.endswith("/chat/completions")
        if chat:
            text = body["messages"][-1]["content"]
        else:
            text = body["prompt"] if isinstance(body["prompt"], str) else "scenario:ok"
        scenario = text.removeprefix("scenario:")
        with srv.lock:
            srv.bodies.append(body)
            srv.auth.append(self.headers.get("Authorization"))
            srv.attempts[scenario, body.get("seed")] += 1
            attempt = srv.attempts[scenario, body.get("seed")]
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            self._respond(scenario, attempt, body, chat)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _respond(self, scenario: str, attempt: int, body: dict, chat: bool) -> None:
        if scenario == "flaky500" and attempt <= 2:
            return self._send(500, b'{"error": "temporarily broken"}')
        if scenario == "always500":
            return self._send(503, b'{"error": "overloaded"}')
        if scenario == "ratelimit" and attempt == 1:
            return self._send(429, b'{"error": "slow down"}', {"Retry-After": "1"})
        if scenario == "badjson":
            return self._send(200, b'{"choices": [{"text": "unterminated')
        if scenario == "nochoices":
            return self._send(200, b'{"object": "error", "message": "oops"}')
        if scenario == "bad400":
            return self._send(400, b'{"error": "max_tokens too large"}')
        if scenario == "echoauth":
            payload = json.dumps({"error": f"bad key in {self.headers['Authorization']}"})
            return self._send(401, payload.encode())
        if scenario == "hang":
            time.sleep(HANG_S)
        if scenario == "slow":
            time.sleep(0.15)
        seed = body.get("seed")
        n = 1 if scenario == "short" else body.get("n", 1)
        choices = [self._choice(scenario, seed, j, body, chat) for j in range(n)]
        self._send(200, json.dumps({"choices": choices[::-1]}).encode())

    def _choice(self, scenario: str, seed: Any, j: int, body: dict, chat: bool) -> dict:
        text = f"s{seed}c{j}"
        ids = [100 + j, 200 + (seed or 0), 7]
        lps = [-0.5, -1.5, -0.25]
        finish = {"eos": "eos", "length": "length", "null": None}.get(scenario, "stop")
        choice: dict[str, Any] = {"index": j, "finish_reason": finish}
        plain = scenario == "plain"
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
            if body.get("logprobs") and not plain:
                choice["logprobs"] = {
                    "content": [
                        {"token": f"token_id:{t}", "logprob": lp, "top_logprobs": []}
                        for t, lp in zip(ids, lps, strict=True)
                    ]
                }
        else:
            choice["text"] = text
            if body.get("logprobs") and not plain:
                choice["logprobs"] = {
                    "tokens": [f"token_id:{t}" for t in ids],
                    "token_logprobs": lps,
                }
        if scenario == "idsfield":
            choice["token_ids"] = ids
            choice.pop("logprobs", None)
        return choice


@pytest.fixture
def server() -> Iterator[FakeServer]:
    yield from serving(FakeServer())


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def chat(scenario: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"scenario:{scenario}"}]


def backend(url: str, **kwargs: Any) -> OpenAICompatibleBackend:
    options: dict[str, Any] = {"timeout": 5.0, "max_retries": 2, "backoff": 0.01}
    options.update(kwargs)
    return OpenAICompatibleBackend(url, "fake-model", **options)


# --- the fake server ------------------------------------------------------------------------


def test_chat_request_and_response_mapping(server: FakeServer) -> None:
    be = backend(
        server.url,
        chat_template_kwargs={"enable_thinking": False},
        extra_body={"max_tokens": 99, "repetition_penalty": 1.1},
    )
    assert isinstance(be, Backend) and be.tokenizer is None
    sampling = SamplingConfig(
        temperature=0.7, top_p=0.9, top_k=20, max_tokens=8, n=2, stop_token_ids=(5, 6)
    )
    out = be.generate([chat("ok"), chat("ok")], sampling, seeds=[11, 12])
    assert out == [
        [
            Generation("s11c0", [100, 211, 7], [-0.5, -1.5, -0.25], "stop"),
            Generation("s11c1", [101, 211, 7], [-0.5, -1.5, -0.25], "stop"),
        ],
        [
            Generation("s12c0", [100, 212, 7], [-0.5, -1.5, -0.25], "stop"),
            Generation("s12c1", [101, 212, 7], [-0.5, -1.5, -0.25], "stop"),
        ],
    ]
    body = min(server.bodies, key=lambda b: b["seed"])
    assert body == {
        "model": "fake-model",
        "messages": chat("ok"),
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 20,
        "max_tokens": 99,
        "n": 2,
        "seed": 11,
        "logprobs": True,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
        "stop_token_ids": [5, 6],
        "chat_template_kwargs": {"enable_thinking": False},
        "repetition_penalty": 1.1,
    }
    assert server.auth == [None, None]


def test_completions_request_and_defaults(server: FakeServer) -> None:
    be = backend(server.url, api="completions", server_extensions=False)
    out = be.generate([[1, 2, 3], "scenario:length"], SamplingConfig(max_tokens=4))
    assert out == [
        [Generation("sNonec0", [100, 200, 7], [-0.5, -1.5, -0.25], "stop")],
        [Generation("sNonec0", [100, 200, 7], [-0.5, -1.5, -0.25], "length")],
    ]
    body = next(b for b in server.bodies if b["prompt"] == [1, 2, 3])
    assert body == {
        "model": "fake-model",
        "prompt": [1, 2, 3],
        "temperature": 1.0,
        "top_p": 1.0,
        "max_tokens": 4,
        "n": 1,
        "logprobs": 1,
    }


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_finish_reasons_and_token_id_sources(server: FakeServer, api: str) -> None:
    be = backend(server.url, api=api)
    prompt = chat if api == "chat" else (lambda s: f"scenario:{s}")
    names = ["eos", "null", "length", "idsfield", "plain"]
    out = be.generate([prompt(s) for s in names], SamplingConfig(max_tokens=4), seeds=[1] * 5)
    assert [g[0].finish_reason for g in out] == ["stop", "stop", "length", "stop", "stop"]
    assert out[3][0] == Generation("s1c0", [100, 201, 7], None, "stop")
    assert out[4][0] == Generation("s1c0", [], None, "stop")
    with_tok = backend(server.url, api=api, tokenizer=CharTokenizer())
    assert with_tok.tokenizer is (None if api == "chat" else with_tok.text_tokenizer)
    [[plain]] = with_tok.generate([prompt("plain")], SamplingConfig(), seeds=[1])
    assert plain == Generation("s1c0", [ord(c) for c in "s1c0"], None, "stop")
    no_lp = with_tok.generate([prompt("ok")], SamplingConfig(logprobs=False), seeds=[1])
    assert no_lp == [[Generation("s1c0", [ord(c) for c in "s1c0"], None, "stop")]]


def test_fewer_choices_than_n_pads_with_errors(server: FakeServer) -> None:
    [gens] = backend(server.url).generate([chat("short")], SamplingConfig(n=3), seeds=[4])
    assert [g.finish_reason for g in gens] == ["stop", "error", "error"]
    assert gens[1].error == "server returned 1 of 3 choices"


def test_wrong_prompt_kind_is_an_error_generation(server: FakeServer) -> None:
    sampling = SamplingConfig(n=2)
    [ids, ok] = backend(server.url).generate([[1, 2, 3], chat("ok")], sampling)
    assert [g.finish_reason for g in ids] == ["error", "error"]
    assert "chat API needs a prompt of chat messages" in ids[0].error
    assert "list of int" in ids[0].error
    assert ok[0].text == "sNonec0"
    [msgs, empty] = backend(server.url, api="completions").generate([chat("ok"), []], sampling)
    assert "completions API needs a prompt of token ids or text" in msgs[0].error
    assert "an empty list" in empty[0].error
    assert len(server.bodies) == 1


def test_each_failure_ends_only_its_prompt(server: FakeServer) -> None:
    be = backend(server.url, timeout=0.5, max_retries=2)
    names = ["ok", "flaky500", "always500", "badjson", "nochoices", "hang", "bad400", "ok"]
    start = time.monotonic()
    out = be.generate([chat(s) for s in names], SamplingConfig(), seeds=list(range(len(names))))
    elapsed = time.monotonic() - start
    by_name = {name: gens[0] for name, gens in zip(names, out, strict=True)}
    assert [g[0].text for g in out[:2]] == ["s0c0", "s1c0"] and out[7][0].text == "s7c0"
    assert server.attempts["flaky500", 1] == 3
    for name in ["always500", "badjson", "nochoices", "hang", "bad400"]:
        gen = by_name[name]
        assert (gen.text, gen.token_ids, gen.finish_reason) == ("", [], "error")
        assert gen.error.startswith(f"POST {server.url}/chat/completions failed")
    assert "after 3 attempts: HTTP 503 Service Unavailable" in by_name["always500"].error
    assert "overloaded" in by_name["always500"].error
    assert "after 3 attempts: malformed JSON response" in by_name["badjson"].error
    assert "unterminated" in by_name["badjson"].error
    assert "malformed response (the reply has no 'choices')" in by_name["nochoices"].error
    assert "after 3 attempts: timed out after 0.5 s" in by_name["hang"].error
    assert "failed: HTTP 400 Bad Request" in by_name["bad400"].error
    assert server.attempts["bad400", 6] == 1
    assert server.attempts["always500", 2] == server.attempts["badjson", 3] == 3
    assert server.attempts["hang", 5] == 3
    assert elapsed < 3 * 0.5 + 2.0


def test_retry_after_is_honoured(server: FakeServer) -> None:
    be = backend(server.url, max_retries=1)
    start = time.monotonic()
    [[gen]] = be.generate([chat("ratelimit")], SamplingConfig(), seeds=[3])
    assert time.monotonic() - start >= 0.95
    assert gen.text == "s3c0" and server.attempts["ratelimit", 3] == 2


def test_retry_after_parsing() -> None:
    assert _retry_after("2") == 2.0
    assert _retry_after("-5") == 0.0
    assert _retry_after("100000") == MAX_RETRY_AFTER
    assert _retry_after("soon") is None and _retry_after(None) is None
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < _retry_after(date) <= 30


def test_connection_refused_is_an_error_generation() -> None:
    be = backend(f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    out = be.generate([chat("ok"), chat("ok")], SamplingConfig(n=2))
    for gens in out:
        for gen in gens:
            assert gen.finish_reason == "error"
            assert "failed after 2 attempts: connection error (ConnectError" in gen.error


def test_concurrency_limit(server: FakeServer) -> None:
    be = backend(server.url, concurrency=3)
    out = be.generate([chat("slow")] * 12, SamplingConfig(), seeds=list(range(12)))
    assert [g[0].text for g in out] == [f"s{i}c0" for i in range(12)]
    assert server.max_in_flight == 3


def test_api_key_sent_but_never_shown(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIRAL_TEST_KEY", SECRET)
    be = backend(server.url, api_key_env="SPIRAL_TEST_KEY")
    out = be.generate([chat("ok"), chat("echoauth")], SamplingConfig())
    assert server.auth == [f"Bearer {SECRET}"] * 2
    assert out[0][0].text == "sNonec0"
    error = out[1][0].error
    assert "HTTP 401" in error and "bad key in Bearer <redacted>" in error
    for shown in [repr(be), str(be), error, repr(out), repr(vars(be))]:
        assert SECRET not in shown
    assert "api_key=<set>" in repr(be)
    explicit = backend(server.url, api_key="sk-other", api_key_env="SPIRAL_TEST_KEY")
    explicit.generate([chat("ok")], SamplingConfig())
    assert server.auth[-1] == "Bearer sk-other"
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    backend(server.url, api_key_env=None).generate([chat("ok")], SamplingConfig())
    assert server.auth[-1] is None


def test_generate_inside_running_loop_and_threads(server: FakeServer) -> None:
    be = backend(server.url)
    sampling = SamplingConfig()

    async def from_coroutine() -> tuple[list, list]:
        blocking = be.generate([chat("ok")], sampling, [1])
        return blocking, await be.agenerate([chat("ok")], sampling, [2])

    sync_in_loop, awaited = asyncio.run(from_coroutine())
    assert sync_in_loop[0][0].text == "s1c0" and awaited[0][0].text == "s2c0"
    results: list = []

    def worker(seed: int) -> None:
        results.append(be.generate([chat("ok")], sampling, [seed]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(r[0][0].text for r in results) == ["s0c0", "s1c0", "s2c0"]
    assert be.generate([], sampling) == []


def test_misconfiguration_raises() -> None:
    with pytest.raises(ValueError, match="base_url"):
        OpenAICompatibleBackend("127.0.0.1:8000", "m")
    with pytest.raises(ValueError, match="api must be"):
        OpenAICompatibleBackend("http://127.0.0.1:8000/v1", "m", api="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency"):
        OpenAICompatibleBackend("http://127.0.0.1:8000/v1", "m", concurrency=0)
    with pytest.raises(ValueError, match="timeout"):
        OpenAICompatibleBackend("http://127.0.0.1:8000/v1", "m", timeout=0)
    with pytest.raises(ValueError, match="model"):
        OpenAICompatibleBackend("http://127.0.0.1:8000/v1", "")
    be = OpenAICompatibleBackend("http://127.0.0.1:8000/v1/", "m")
    assert be.url == "http://127.0.0.1:8000/v1/chat/completions"
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        be.generate([chat("ok")], SamplingConfig(), seeds=[1, 2])


# --- a real vLLM server ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_qwen3: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_qwen3)


def _teacher_forced_logprobs(model_dir: Path, prompt: list[int], output: list[int]) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = torch.tensor([prompt + output])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1]
    picked = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(output)[:, None])
    return picked[:, 0].tolist()


@pytest.mark.slow
def test_real_vllm_server(vllm_server: str, tiny_qwen3: Path, tiny_tokenizer: Any) -> None:
    model = str(tiny_qwen3)
    comp = OpenAICompatibleBackend(vllm_server, model, api="completions", tokenizer=tiny_tokenizer)
    chat_be = OpenAICompatibleBackend(
        vllm_server, model, chat_template_kwargs={"enable_thinking": False}
    )
    texts = [f"Game {i}: your move" for i in range(4)]
    prompts = [tiny_tokenizer.encode(t, add_special_tokens=False) for t in texts]
    sampling = SamplingConfig(max_tokens=16, n=2)

    out = comp.generate(prompts, sampling, seeds=[1, 2, 3, 4])
    again = comp.generate(prompts[:2], sampling, seeds=[1, 2])
    for old, new in zip(out[:2], again, strict=True):
        assert [g.token_ids for g in new] == [g.token_ids for g in old]
        assert [g.text for g in new] == [g.text for g in old]
        assert new[0].logprobs == pytest.approx(old[0].logprobs, abs=1e-5)
    for gens in out:
        assert gens[0].token_ids != gens[1].token_ids
        for gen in gens:
            assert gen.error is None and 1 <= len(gen.token_ids) <= 16
            assert gen.finish_reason == ("length" if len(gen.token_ids) == 16 else "stop")
            assert gen.text == tiny_tokenizer.decode(gen.token_ids, skip_special_tokens=True)
            assert len(gen.logprobs) == len(gen.token_ids)
    gen = out[0][0]
    expected = _teacher_forced_logprobs(tiny_qwen3, prompts[0], gen.token_ids)
    assert gen.logprobs == pytest.approx(expected, abs=1e-3)

    # A stop token cuts the same seeded sample; top_k=1 is greedy.
    stop_at = next(i for i, t in enumerate(gen.token_ids) if t not in gen.token_ids[:i] and i >= 2)
    stop = SamplingConfig(max_tokens=16, n=2, stop_token_ids=(gen.token_ids[stop_at],))
    [[cut, _]] = comp.generate(prompts[:1], stop, seeds=[1])
    assert cut.token_ids == gen.token_ids[: stop_at + 1] and cut.finish_reason == "stop"
    greedy = comp.generate(prompts[:2], SamplingConfig(temperature=0, max_tokens=8))
    top1 = comp.generate(prompts[:2], SamplingConfig(top_k=1, max_tokens=8), seeds=[5, 6])
    assert [g[0].token_ids for g in top1] == [g[0].token_ids for g in greedy]

    messages = [[{"role": "user", "content": t}] for t in texts]
    chat_out = chat_be.generate(messages, sampling, seeds=[1, 2, 3, 4])
    [repeat] = chat_be.generate(messages[:1], sampling, seeds=[1])
    assert [g.token_ids for g in repeat] == [g.token_ids for g in chat_out[0]]
    for gens in chat_out:
        for gen in gens:
            assert gen.error is None and 1 <= len(gen.token_ids) <= 16
            assert gen.text or gen.finish_reason == "length"
            assert len(gen.logprobs) == len(gen.token_ids)
    # The server applied the chat template with enable_thinking=False.
    templated = tiny_tokenizer.apply_chat_template(
        messages[0], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    ids = tiny_tokenizer.encode(templated, add_special_tokens=False)
    [[same, _]] = comp.generate([ids], sampling, seeds=[1])
    assert same.token_ids == chat_out[0][0].token_ids
    assert same.logprobs == pytest.approx(chat_out[0][0].logprobs, abs=1e-4)

    # Throughput: 32 prompts x 32 tokens.
    many = [tiny_tokenizer.encode(f"Round {i}: pick", add_special_tokens=False) for i in range(32)]
    fast = OpenAICompatibleBackend(vllm_server, model, api="completions", concurrency=32)
    start = time.perf_counter()
    bench = fast.generate(many, SamplingConfig(max_tokens=32), seeds=list(range(32)))
    elapsed = time.perf_counter() - start
    assert all(g[0].error is None for g in bench)
    tokens = sum(len(g[0].token_ids) for g in bench)
    print(f"\nvLLM server: {32 / elapsed:.1f} requests/s, {tokens / elapsed:.0f} tokens/s")
