"""OpenAICompatibleBackend against hostile replies from a fake server on 127.0.0.1.

Reply shapes (listed, and fuzzed with hypothesis both through the pure parser and over HTTP),
API keys echoed back in whole or in part, and bodies far larger than the request allows.
Every failure must be an error generation for its prompt only, never an exception.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spiral_agents.llm.backend import Generation, SamplingConfig
from spiral_agents.llm.openai_backend import (
    REPLY_BYTES_BASE,
    MalformedReply,
    OpenAICompatibleBackend,
    SecretKey,
    parse_reply,
    redact_credentials,
    reply_limit,
)
from spiral_agents.llm.prompts import BaseModelTemplate
from spiral_agents.llm.rollout import LLMPolicy, Matchup, RolloutEngine

KEY = "sk-proj-Q7f3a9c1e5bZ2x8Lm4Nw6Rt0Yp1Ks9Dh3Vg5Jc7Ub2Ea"
VOCAB = 1000
MiB = 1 << 20
from tests.helpers import serving


def key_pieces(text: str, size: int = 6) -> list[str]:
    """Every run of ``size`` characters of the key that shows in ``text``."""
    return [KEY[i : i + size] for i in range(len(KEY) - size + 1) if KEY[i : i + size] in text]


class CharTokenizer:
    """Stands in for an HF tokenizer: one id per character."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]


Reply = Callable[["Handler", dict], None]


class HostileServer(ThreadingHTTPServer):
    """Answers each POST with ``reply(handler, request_body)``; HTTP/1.0, so a body without
    ``Content-Length`` ends when the connection closes."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.reply: Reply = lambda handler, body: handler.send_json(200, valid_reply(body))
        self.requests = 0
        self.sent = 0
        self.auth: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    server: HostileServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests += 1
            self.server.auth.append(self.headers.get("Authorization"))
        try:
            self.server.reply(self, body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def send_json(self, status: int, data: Any) -> None:
        self.send(status, json.dumps(data).encode())

    def stream(self, chunks: Iterator[bytes]) -> None:
        """A 200 reply of ``chunks`` with no declared length, counting the bytes sent."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(chunk)
            with self.server.lock:
                self.server.sent += len(chunk)


def prompt_text(body: dict) -> str:
    if "messages" in body:
        return body["messages"][-1]["content"]
    return body["prompt"] if isinstance(body["prompt"], str) else "ok"


def valid_choice(body: dict, index: int, content: Any = "fine") -> dict:
    choice: dict[str, Any] = {"index": index, "finish_reason": "stop", "token_ids": [5, 6, 7]}
    entries = [-0.5, -1.5, -0.25]
    if "messages" in body:
        choice["message"] = {"role": "assistant", "content": content}
        choice["logprobs"] = {"content": [{"token": "t", "logprob": lp} for lp in entries]}
    else:
        choice["text"] = content
        choice["logprobs"] = {"tokens": ["t"] * 3, "token_logprobs": entries}
    return choice


def valid_reply(body: dict, content: Any = "fine") -> dict:
    return {"choices": [valid_choice(body, j, content) for j in range(body.get("n", 1))]}


@pytest.fixture
def server() -> Iterator[HostileServer]:
    yield from _serve()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[HostileServer]:
    yield from _serve()


def _serve() -> Iterator[HostileServer]:
    yield from serving(HostileServer())


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def backend(url: str, api: str = "chat", **kwargs: Any) -> OpenAICompatibleBackend:
    options: dict[str, Any] = {"timeout": 5.0, "max_retries": 0, "backoff": 0.01}
    options.update(kwargs)
    return OpenAICompatibleBackend(url, "fake-model", api=api, vocab_size=VOCAB, **options)


def prompt(api: str, text: str) -> Any:
    return [{"role": "user", "content": text}] if api == "chat" else text


def assert_well_formed(generations: list[Generation], n: int, vocab: int = VOCAB) -> None:
    """``n`` generations that the rollout engine and a trainer can take as they are."""
    assert len(generations) == n
    for gen in generations:
        assert isinstance(gen, Generation)
        assert isinstance(gen.text, str)
        gen.text.encode("utf-8")
        assert gen.finish_reason in ("stop", "length", "error")
        assert all(type(t) is int and 0 <= t < vocab for t in gen.token_ids)
        if gen.logprobs is not None:
            assert len(gen.logprobs) == len(gen.token_ids)
            assert all(type(x) is float and math.isfinite(x) and x <= 0 for x in gen.logprobs)
        if gen.finish_reason == "error":
            assert isinstance(gen.error, str) and gen.error
            assert (gen.text, gen.token_ids, gen.logprobs) == ("", [], None)
        else:
            assert gen.error is None


# --- content as text parts ------------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_text_parts_are_joined(server: HostileServer, api: str) -> None:
    parts = [{"type": "text", "text": "The answer "}, {"type": "text", "text": "is \\boxed{4}"}]
    server.reply = lambda h, body: h.send_json(200, valid_reply(body, parts))
    [[first, second]] = backend(server.url, api).generate(
        [prompt(api, "ok")], SamplingConfig(n=2)
    )
    assert first == Generation("The answer is \\boxed{4}", [5, 6, 7], [-0.5, -1.5, -0.25])
    assert second == first


# --- one hostile choice ---------------------------------------------------------------------

def _content(value: Any) -> Callable[[dict], None]:
    return lambda choice: choice["message"].update(content=value)


def _logprob(value: Any) -> Callable[[dict], None]:
    return lambda choice: choice["logprobs"]["content"][1].update(logprob=value)


def _ids(value: Any) -> Callable[[dict], None]:
    return lambda choice: choice.update(token_ids=value)


# (name, how a chat choice is spoilt, what the error says for chat / for completions)
HOSTILE_CHOICES: list[tuple[str, Callable[[dict], None], str, str]] = [
    ("content-number", _content(42), "content is a JSON number, not text", "'text' is a JSON"),
    ("content-object", _content({"a": 1}), "content is a JSON object, not text", "not text"),
    ("content-image-part", _content([{"type": "image_url"}]), "not a text part", "not a text part"),
    ("content-surrogate", _content("ok\ud800"), "lone surrogate", "lone surrogate"),
    ("no-message", lambda c: c.pop("message"), "'message' is a JSON null", "it has no 'text'"),
    ("ids-strings", _ids(["5", "6", "7"]), "JSON string, not an integer", "not an integer"),
    ("ids-floats", _ids([5.0, 6.0, 7.0]), "JSON number, not an integer", "not an integer"),
    ("ids-booleans", _ids([True, False, True]), "JSON boolean, not an integer", "not an integer"),
    ("ids-negative", _ids([5, -1, 7]), "outside the vocabulary", "outside the vocabulary"),
    ("ids-past-vocab", _ids([5, VOCAB, 7]), "outside the vocabulary", "outside the vocabulary"),
    ("ids-huge", _ids([10**40, 6, 7]), "outside the vocabulary", "outside the vocabulary"),
    ("ids-not-array", _ids({"0": 5}), "not an array", "not an array"),
    ("logprob-nan", _logprob(math.nan), "log-prob 1 is nan", "log-prob 1 is nan"),
    ("logprob-inf", _logprob(-math.inf), "log-prob 1 is -inf", "log-prob 1 is -inf"),
    ("logprob-positive", _logprob(0.5), "log-prob 1 is 0.5", "not a finite number <= 0"),
    ("logprob-huge-int", _logprob(-(10**400)), "log-prob 1 is -inf", "-inf"),
    ("logprob-string", _logprob("-0.5"), "JSON string, not a number", "not a number"),
    ("logprobs-array", lambda c: c.update(logprobs=[-0.5]), "'logprobs' is a JSON array", "array"),
]


def _as_completion(choice: dict) -> None:
    """The completions-API form of a (maybe spoilt) chat choice."""
    message = choice.pop("message", None)
    if message is not None:
        choice["text"] = message["content"]
    entries = choice.pop("logprobs")
    if isinstance(entries, dict):
        choice["logprobs"] = {
            "tokens": [e["token"] for e in entries["content"]],
            "token_logprobs": [e["logprob"] for e in entries["content"]],
        }
    else:
        choice["logprobs"] = entries


@pytest.mark.parametrize("api", ["chat", "completions"])
@pytest.mark.parametrize(
    ("spoil", "chat_says", "completions_says"),
    [pytest.param(*case[1:], id=case[0]) for case in HOSTILE_CHOICES],
)
def test_a_hostile_choice_is_an_error_generation_for_it_only(
    server: HostileServer,
    api: str,
    spoil: Callable[[dict], None],
    chat_says: str,
    completions_says: str,
) -> None:
    def reply(handler: Handler, body: dict) -> None:
        as_chat = dict(body, messages=[])
        choices = [valid_choice(as_chat, j) for j in range(body["n"])]
        if prompt_text(body) == "hostile":
            spoil(choices[1])
        if api == "completions":
            for choice in choices:
                _as_completion(choice)
        handler.send_json(200, {"choices": choices})

    server.reply = reply
    be = backend(server.url, api, tokenizer=CharTokenizer())
    hostile, fine = be.generate([prompt(api, "hostile"), prompt(api, "ok")], SamplingConfig(n=2))
    for gens in (hostile, fine):
        assert_well_formed(gens, 2)
    assert hostile[0] == fine[0] == fine[1] == Generation("fine", [5, 6, 7], [-0.5, -1.5, -0.25])
    assert hostile[1].finish_reason == "error"
    assert hostile[1].error.startswith("malformed choice 1 in reply: ")
    assert (chat_says if api == "chat" else completions_says) in hostile[1].error


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        ({"choices": [{}]}, "'message' is a JSON null"),
        ({"choices": ["text"]}, "it is a JSON string, not an object"),
        ({"choices": []}, "server returned 0 of 2 choices"),
        ({"choices": [None, {"index": 0}]}, "JSON null"),
    ],
)
def test_empty_missing_and_junk_choices(server: HostileServer, reply: dict, says: str) -> None:
    server.reply = lambda h, body: h.send_json(200, reply)
    [gens] = backend(server.url).generate([prompt("chat", "x")], SamplingConfig(n=2))
    assert_well_formed(gens, 2)
    assert all(g.finish_reason == "error" for g in gens)
    assert any(says in g.error for g in gens)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"[" * 100_000, "RecursionError"),
        (b'{"choices": null}', "'choices' is a JSON null, not an array"),
        (b'"just a string"', "the reply is a JSON string, not an object"),
        (b"\xff\xfe\x00garbage", "malformed JSON response"),
    ],
)
def test_unusable_bodies_are_retried_then_an_error(
    server: HostileServer, payload: bytes, says: str
) -> None:
    server.reply = lambda h, body: h.send(200, payload)
    [gens] = backend(server.url, max_retries=1).generate([prompt("chat", "x")], SamplingConfig())
    assert_well_formed(gens, 1)
    assert gens[0].finish_reason == "error" and says in gens[0].error
    assert "after 2 attempts" in gens[0].error and server.requests == 2


def test_bad_content_encoding_is_an_error(server: HostileServer) -> None:
    server.reply = lambda h, body: h.send(200, b"not gzip at all", {"Content-Encoding": "gzip"})
    [[gen]] = backend(server.url).generate([prompt("chat", "x")], SamplingConfig())
    assert gen.finish_reason == "error" and "DecodingError" in gen.error


# --- fuzzing --------------------------------------------------------------------------------

_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.integers(min_value=-5, max_value=VOCAB + 5)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["\ud800", "token_id:7", "token_id:99999", "token_id:\u00b2", "text", "stop"])
)
_keys = st.text(max_size=8) | st.sampled_from(["type", "text", "content", "token_ids"])
json_values = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(_keys, children, max_size=4),
    max_leaves=16,
)


@st.composite
def near_valid_replies(draw: st.DrawFn) -> Any:
    """A reply of the right overall shape with any field dropped or swapped for junk."""

    def keep() -> bool:
        return draw(st.integers(0, 3)) > 0

    choices = []
    for index in range(draw(st.integers(0, 4))):
        ids = draw(st.lists(st.integers(-3, VOCAB + 3), max_size=4))
        lps = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4))
        pairs = list(zip(ids, lps))
        parts = st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["text", "image_url"]), "text": st.text(max_size=6)}
            ),
            max_size=3,
        )
        content = draw(st.text(max_size=12) | parts | json_values)
        fields = {
            "index": draw(st.sampled_from([index, 3 - index]) | json_values),
            "finish_reason": draw(st.sampled_from(["stop", "length", None]) | json_values),
            "message": {"role": "assistant", "content": content},
            "text": content,
            "token_ids": ids,
            "logprobs": draw(
                st.sampled_from(
                    [
                        {"content": [{"token": f"token_id:{t}", "logprob": x} for t, x in pairs]},
                        {"tokens": [f"token_id:{t}" for t in ids], "token_logprobs": lps},
                    ]
                )
            ),
        }
        choice = {}
        for name, value in fields.items():
            action = draw(st.sampled_from(["keep", "keep", "keep", "drop", "junk"]))
            if action == "keep":
                choice[name] = value
            elif action == "junk":
                choice[name] = draw(json_values)
        choices.append(choice if keep() else draw(json_values))
    reply = {"choices": choices, "usage": draw(json_values)}
    return reply if keep() else draw(json_values)


@settings(max_examples=300, deadline=None)
@given(
    data=near_valid_replies() | json_values,
    api=st.sampled_from(["chat", "completions"]),
    n=st.integers(1, 3),
    logprobs=st.booleans(),
    with_tokenizer=st.booleans(),
)
def test_fuzzed_replies_parse_to_generations(
    data: Any, api: str, n: int, logprobs: bool, with_tokenizer: bool
) -> None:
    sampling = SamplingConfig(n=n, logprobs=logprobs)
    tokenizer = CharTokenizer() if with_tokenizer else None
    try:
        generations = parse_reply(data, api, sampling, vocab_size=VOCAB, tokenizer=tokenizer)
    except MalformedReply as exc:
        assert not (isinstance(data, dict) and isinstance(data.get("choices"), list)), exc
        return
    assert_well_formed(generations, n)


TEXT_PARTS_BODY = b'{"choices": [{"text": [{"type": "text", "text": "a"}]}]}'
JUNK_CHOICE_BODY = b'{"choices": [{"message": {"content": 7}, "token_ids": [1e999]}]}'
_bodies = (
    near_valid_replies().map(lambda reply: json.dumps(reply).encode())
    | json_values.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=64)
    | st.builds(lambda depth: b"[" * depth + b"]" * depth, st.integers(0, 5000))
)


@settings(max_examples=60, deadline=None)
@example(payload=b"[" * 5000 + b"]" * 5000, status=200, api="chat")
@example(payload=TEXT_PARTS_BODY, status=200, api="completions")
@example(payload=JUNK_CHOICE_BODY, status=200, api="chat")
@given(
    payload=_bodies,
    status=st.sampled_from([200, 200, 200, 400, 500]),
    api=st.sampled_from(["chat", "completions"]),
)
def test_fuzzed_bodies_over_http_never_raise(
    shared_server: HostileServer, payload: bytes, status: int, api: str
) -> None:
    shared_server.reply = lambda h, body: h.send(status, payload)
    be = backend(shared_server.url, api, tokenizer=CharTokenizer())
    [generations] = be.generate([prompt(api, "x")], SamplingConfig(n=2))
    assert_well_formed(generations, 2)


# --- the API key ----------------------------------------------------------------------------

PAD = "p" * 270  # the key straddles the 300-character cut of an error snippet


@pytest.mark.parametrize(
    "echo",
    [
        PAD + KEY,
        PAD + KEY[:31],
        "x" * 250 + KEY + " and again " + KEY,
        f"key {KEY[:12]}...{KEY[-20:]} refused",
        f"Incorrect API key provided: {KEY[:8]}**********************{KEY[-4:]}.",
        "x" * 262 + f"Authorization: Bearer {KEY}",  # the key straddles the cut
        json.dumps({"headers": {"authorization": f"Bearer {KEY}", "x-api-key": KEY}}),
        f"token={KEY[5:40]};",
    ],
    ids=["at-cut", "prefix-at-cut", "twice", "split", "masked", "header", "json-headers", "middle"],
)
@pytest.mark.parametrize("status", [401, 500, 200])
def test_echoed_key_never_shows(server: HostileServer, echo: str, status: int) -> None:
    # 200: a body that is no JSON reply at all, quoted as a malformed response.
    server.reply = lambda h, body: h.send(status, echo.encode())
    be = backend(server.url, api_key=KEY)
    out = be.generate([prompt("chat", "x")], SamplingConfig(n=2))
    assert server.auth == [f"Bearer {KEY}"]
    assert out[0][0].finish_reason == "error"
    shown = repr(out)
    assert key_pieces(shown) == [], shown
    assert "sk-" not in shown.replace("<redacted>", "") and KEY[-4:] not in shown


def test_other_bearer_tokens_and_credential_fields_are_redacted(server: HostileServer) -> None:
    echo = 'bad: Authorization: Bearer eyJhbGciOi.J9.x, {"api_key": "abc123secret"}'
    server.reply = lambda h, body: h.send(403, echo.encode())
    [[gen]] = backend(server.url).generate([prompt("chat", "x")], SamplingConfig())
    assert "eyJhbGciOi" not in gen.error and "abc123secret" not in gen.error
    assert "Authorization: <redacted>" in gen.error and '"api_key": "<redacted>"' in gen.error


@pytest.mark.parametrize("echo", [KEY, KEY[:10], KEY[20:32]], ids=["whole", "prefix", "middle"])
def test_generated_text_that_echoes_the_key_is_an_error(server: HostileServer, echo: str) -> None:
    server.reply = lambda h, body: h.send_json(200, valid_reply(body, f"my move [4] {echo}"))
    [[gen]] = backend(server.url, api_key=KEY).generate([prompt("chat", "x")], SamplingConfig())
    assert gen.finish_reason == "error" and "holds (part of) the API key" in gen.error
    assert key_pieces(repr(gen)) == []


@settings(max_examples=200, deadline=None)
@given(
    before=st.text(max_size=400),
    start=st.integers(0, len(KEY) - 6),
    size=st.integers(6, len(KEY)),
    after=st.text(max_size=50),
)
def test_redaction_removes_any_run_of_the_key(
    before: str, start: int, size: int, after: str
) -> None:
    text = before + KEY[start : start + size] + after
    redacted = redact_credentials(text, SecretKey(KEY))
    assert key_pieces(redacted) == []
    assert key_pieces(redacted[:300]) == []


def test_a_key_that_no_header_can_carry_is_refused_unshown() -> None:
    for bad in [KEY + "\n", f" {KEY}", KEY[:10] + "é" + KEY[10:]]:
        with pytest.raises(ValueError, match="printable ASCII") as info:
            OpenAICompatibleBackend("http://127.0.0.1:1/v1", "m", api_key=bad)
        assert key_pieces(str(info.value)) == []


# --- reply size -----------------------------------------------------------------------------


def _huge_text_reply(total: int) -> Iterator[bytes]:
    """A valid chat reply whose text is ``total`` bytes, made chunk by chunk."""
    yield b'{"choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "'
    chunk = b"a" * 65536
    for _ in range(total // len(chunk)):
        yield chunk
    yield b'"}}]}'


def test_a_reply_far_past_the_cap_is_cut_off(server: HostileServer) -> None:
    total = 64 * MiB
    server.reply = lambda h, body: h.stream(_huge_text_reply(total))
    be = backend(server.url, max_retries=2)
    [[gen]] = be.generate([prompt("chat", "x")], SamplingConfig(max_tokens=8))
    cap = reply_limit(8, 1)
    assert cap < 2 * MiB
    assert gen.finish_reason == "error"
    assert f"reply too large: more than {cap} bytes for max_tokens=8 x n=1" in gen.error
    assert server.requests == 1  # not retried
    assert server.sent < total / 3  # reading stopped; the server could not send it all


def test_the_cap_grows_with_the_request(server: HostileServer) -> None:
    size = 3 * MiB
    server.reply = lambda h, body: h.stream(_huge_text_reply(size))
    [[small]] = backend(server.url).generate([prompt("chat", "x")], SamplingConfig(max_tokens=8))
    assert small.finish_reason == "error"
    [[large]] = backend(server.url).generate([prompt("chat", "x")], SamplingConfig(max_tokens=1024))
    assert large.finish_reason == "stop" and len(large.text) == size // 65536 * 65536


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (200, f"reply too large: more than {reply_limit(8, 1)} bytes"),
        (500, f"HTTP 500 Internal Server Error: (a body of more than {REPLY_BYTES_BASE} bytes"),
    ],
)
def test_a_declared_length_past_the_cap_is_not_read(
    server: HostileServer, status: int, says: str
) -> None:
    def reply(handler: Handler, body: dict) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", str(200_000_000))
        handler.end_headers()
        handler.wfile.write(b"{" * 1024)

    server.reply = reply
    [[gen]] = backend(server.url).generate([prompt("chat", "x")], SamplingConfig(max_tokens=8))
    assert gen.finish_reason == "error" and says in gen.error, gen.error


# --- through the rollout engine -------------------------------------------------------------


def test_hostile_replies_end_only_their_games_in_a_rollout(server: HostileServer) -> None:
    """A mix of well-formed replies (as text parts), junk content and key echoes: the run
    finishes, junk voids only its games, and no record or sample holds the key."""

    def reply(handler: Handler, body: dict) -> None:
        text = prompt_text(body)
        legal = re.findall(r"\[\d\]", text.rsplit("Your legal moves:", 1)[-1])
        move = legal[body["seed"] % len(legal)]
        answer = f"\\boxed{{{move}}}"
        content: Any = [{"type": "text", "text": "I pick "}, {"type": "text", "text": answer}]
        if body["seed"] % 12 == 0:
            content = 12345
        elif body["seed"] % 12 == 1:
            content = f"{answer} {KEY[3:30]}"
        handler.send_json(200, valid_reply(body, content))

    server.reply = reply
    be = backend(server.url, api_key=KEY, concurrency=8)
    policy = LLMPolicy(be, BaseModelTemplate(), SamplingConfig(max_tokens=64), "remote")
    engine = RolloutEngine([Matchup("TicTacToe-v0", (policy, policy))], concurrency=8, seed=8)
    rollout = engine.run(games=16)
    assert len(rollout.games) == 16
    errors = [r.error for r in rollout.games if r.error]
    assert any("is a JSON number, not text" in e for e in errors)
    assert any("holds (part of) the API key" in e for e in errors)
    assert any(not r.error and r.moves for r in rollout.games)
    dumped = json.dumps([dataclasses.asdict(r) for r in rollout.games])
    dumped += json.dumps([dataclasses.asdict(s) for s in rollout.samples])
    assert key_pieces(dumped) == []
    assert np.isfinite([x for s in rollout.samples for x in s.logprobs or []]).all()
