"""Generation over HTTP from any OpenAI-compatible server: vLLM, SGLang or a hosted API.

:class:`OpenAICompatibleBackend` sends one request per prompt (each with its own seed), all
at once up to a concurrency limit, with ``httpx``. Two request shapes:

- ``api="chat"`` posts chat messages to ``{base_url}/chat/completions``; the server applies
  the chat template. The backend's ``tokenizer`` attribute is then ``None``, so the rollout
  engine hands it messages.
- ``api="completions"`` posts token ids (or a string) to ``{base_url}/completions``; the
  caller applies the template. Give a tokenizer so the rollout engine builds token-id prompts.

Token ids and log-probs of the generated text come from the server where it gives them
(vLLM's ``return_token_ids`` and ``return_tokens_as_token_ids`` extensions), else token ids are
re-encoded from the text with the tokenizer, if one was given, and log-probs are kept only when
they line up with those ids.

Replies are untrusted. A reply body is read as a stream and given up past a size cap that
grows with the request (:func:`reply_limit`). :func:`parse_reply` turns any JSON value into
generations without raising: content sent as a list of text parts is joined, and a choice
with anything else wrong (content that is no text, token ids that are no integers in
``[0, vocab_size)``, log-probs that are not finite or above 0) becomes an error generation.

A request that gets HTTP 408/429/5xx, a connection error, a timeout or an unparseable body is
retried with exponential backoff and jitter (``Retry-After`` is honoured up to
:data:`MAX_RETRY_AFTER` seconds). One that still fails comes back as generations with
``finish_reason="error"`` for its prompt only. The API key is sent only in the
``Authorization`` header and is kept out of ``repr``. Every error text is redacted before it
is cut: the key and any run of 6 or more of its characters, ``Bearer`` tokens,
``Authorization``/``api-key`` values and ``sk-``-like words. A generation whose text holds
part of the key becomes an error generation.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import os
import random
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

from spiral_agents.llm.backend import (
    FinishReason,
    Generation,
    Prompt,
    SamplingConfig,
    check_seeds,
    error_generations,
)

if TYPE_CHECKING:
    import httpx

MAX_RETRY_AFTER = 60.0
"""Longest wait, in seconds, that a server's ``Retry-After`` header can impose."""

RETRY_STATUSES = frozenset({408, 429})
"""Statuses retried besides every 5xx."""

REPLY_BYTES_PER_TOKEN = 4096
"""Reply bytes allowed per requested token (``max_tokens`` x ``n``): text, ids and log-probs
of a real reply take a few hundred."""

REPLY_BYTES_BASE = 1 << 20
"""Reply bytes allowed on top of the per-token allowance, and the cap on an error reply."""

TOKEN_ID_BOUND = 2**31
"""Token ids must lie below this when no ``vocab_size`` is given (an int32 holds them)."""

REDACTED = "<redacted>"
KEY_PIECE = 6
"""A run of this many characters of the API key is redacted wherever it shows."""

_TOKEN_ID_PREFIX = "token_id:"
_BODY_SNIPPET = 300
_BEARER = re.compile(r"(?i)\bbearer(?:\s+|%20|\+)[^\s\"',;}\]]+")
_CREDENTIAL_FIELD = re.compile(
    r"(?i)\b(authorization|x-api-key|api[-_]?key)([\"']?\s*[:=]\s*[\"']?)(?:bearer\s+)?"
    r"[^\s\"',;}\]]+"
)
_KEY_LIKE = r"(?<![A-Za-z0-9])(?:{prefixes})[\w\-.*\u2022\u2026]+"
_KEY_SCHEME = re.compile(r"[A-Za-z]{1,10}[-_]")
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def reply_limit(max_tokens: int, n: int) -> int:
    """The most reply bytes read for a request of ``max_tokens`` x ``n`` tokens."""
    return REPLY_BYTES_BASE + REPLY_BYTES_PER_TOKEN * max_tokens * n


class MalformedReply(ValueError):
    """A reply that holds no list of choices at all (retried like a failed request)."""


class _BadChoice(ValueError):
    """What is wrong with one choice of a reply."""


class _RequestFailed(Exception):
    """A request attempt failed; ``retry`` says whether another attempt may succeed."""

    def __init__(self, reason: str, *, retry: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.retry_after = retry_after


class SecretKey:
    """Holds an API key so that it never shows in a repr, and redacts it from text."""

    __slots__ = ("_key_like", "_pieces", "value")

    def __init__(self, value: str) -> None:
        self.value = value
        size = min(len(value), KEY_PIECE)
        self._pieces = frozenset(value[i : i + size] for i in range(len(value) - size + 1))
        prefixes = ["sk-"]
        scheme = _KEY_SCHEME.match(value)
        if scheme and scheme[0] not in prefixes:
            prefixes.append(scheme[0])
        self._key_like = re.compile(_KEY_LIKE.format(prefixes="|".join(map(re.escape, prefixes))))

    def __repr__(self) -> str:
        return REDACTED

    def shows_in(self, text: str) -> bool:
        """Whether ``text`` holds the key or a run of :data:`KEY_PIECE` of its characters."""
        return any(piece in text for piece in self._pieces)

    def redact(self, text: str) -> str:
        """``text`` with every word shaped like the key (``sk-...`` or the key's own prefix,
        masked ones too) and every run of the key's characters that :meth:`shows_in` finds,
        redacted."""
        text = self._key_like.sub(REDACTED, text)
        if self.shows_in(text):
            covered = bytearray(len(text))
            for piece in self._pieces:
                start = text.find(piece)
                while start != -1:
                    covered[start : start + len(piece)] = b"\x01" * len(piece)
                    start = text.find(piece, start + 1)
            kept = []
            position = 0
            for run in re.finditer(rb"\x01+", covered):
                kept.append(text[position : run.start()])
                kept.append(REDACTED)
                position = run.end()
            kept.append(text[position:])
            text = "".join(kept)
        return text


def redact_credentials(text: str, secret: SecretKey | None = None) -> str:
    """``text`` without ``Bearer`` tokens, ``Authorization``/``api-key`` values and, with a
    ``secret``, any part of that key."""
    if secret is not None:
        text = secret.redact(text)
    text = _CREDENTIAL_FIELD.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    return _BEARER.sub(f"Bearer {REDACTED}", text)


class OpenAICompatibleBackend:
    """A :class:`~spiral_agents.llm.backend.Backend` over an OpenAI-compatible HTTP API.

    Args:
        base_url: the API root including its version, e.g. ``"http://127.0.0.1:8000/v1"``.
        model: the model name the server knows (vLLM: the served model path or name).
        api: ``"chat"`` (message prompts) or ``"completions"`` (token-id or string prompts).
        api_key: the key to send as a bearer token; when ``None`` it is read from
            ``api_key_env``; with neither, no ``Authorization`` header is sent.
        api_key_env: the environment variable holding the key, or ``None`` to read none.
        concurrency: most requests in flight at once.
        timeout: seconds one attempt may take, end to end.
        max_retries: further attempts after a failed first one.
        backoff: the first retry waits about this many seconds, doubling each time, plus a
            random jitter of up to the same amount.
        chat_template_kwargs: sent with chat requests (e.g. ``{"enable_thinking": False}``).
        extra_body: merged into every request body last, overriding what the backend set.
        tokenizer: an HF tokenizer; re-encodes text to token ids when the server returns none,
            and in completions mode is exposed as ``tokenizer`` for building prompts.
        server_extensions: ask for token ids with vLLM's ``return_token_ids`` and
            ``return_tokens_as_token_ids`` fields; turn off for servers that reject unknown
            fields.
        vocab_size: the model's vocabulary size (rows of its embedding); a generation with a
            token id outside ``[0, vocab_size)`` is an error. ``None`` allows any id below
            :data:`TOKEN_ID_BOUND`.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api: Literal["chat", "completions"] = "chat",
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 16,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        chat_template_kwargs: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        tokenizer: Any = None,
        server_extensions: bool = True,
        vocab_size: int | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("model must be a non-empty name")
        if api not in ("chat", "completions"):
            raise ValueError(f"api must be 'chat' or 'completions', got {api!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if max_retries < 0 or backoff < 0:
            raise ValueError("max_retries and backoff must be non-negative")
        if vocab_size is not None and vocab_size < 1:
            raise ValueError(f"vocab_size must be at least 1, got {vocab_size}")
        key = api_key if api_key is not None else os.environ.get(api_key_env or "") or None
        if key and not _HEADER_SAFE.fullmatch(key):
            raise ValueError(
                "the API key holds whitespace or characters outside printable ASCII (not "
                "shown), which an Authorization header cannot carry; strip it"
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api = api
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.extra_body = dict(extra_body or {})
        self.server_extensions = server_extensions
        self.vocab_size = vocab_size
        self.text_tokenizer = tokenizer
        """The tokenizer given, used to re-encode text when the server returns no ids."""
        self.tokenizer = tokenizer if api == "completions" else None
        self._key = SecretKey(key) if key else None
        self._rng = random.Random()
        path = "/chat/completions" if api == "chat" else "/completions"
        self.url = self.base_url + path

    def __repr__(self) -> str:
        return (
            f"OpenAICompatibleBackend(base_url={self.base_url!r}, model={self.model!r}, "
            f"api={self.api!r}, concurrency={self.concurrency}, "
            f"api_key={'<set>' if self._key else None})"
        )

    def generate(
        self,
        prompts: Sequence[Prompt | str],
        sampling: SamplingConfig,
        seeds: Sequence[int | None] | None = None,
    ) -> list[list[Generation]]:
        """For each prompt, ``sampling.n`` generations; ``seeds[i]`` is sent as prompt i's seed.

        Runs :meth:`agenerate` in a fresh event loop, in a worker thread when this thread
        already runs one.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(prompts, sampling, seeds))
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.agenerate(prompts, sampling, seeds)).result()

    async def agenerate(
        self,
        prompts: Sequence[Prompt | str],
        sampling: SamplingConfig,
        seeds: Sequence[int | None] | None = None,
    ) -> list[list[Generation]]:
        """Async :meth:`generate`: all prompts at once, at most ``concurrency`` in flight."""
        import httpx

        seeds = check_seeds(prompts, seeds)
        if not prompts:
            return []
        headers = self._headers()
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        semaphore = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(self.timeout), limits=limits
        ) as client:
            return list(
                await asyncio.gather(
                    *(
                        self._one_prompt(client, semaphore, prompt, sampling, seed)
                        for prompt, seed in zip(prompts, seeds)
                    )
                )
            )

    async def _one_prompt(
        self,
        client: httpx.AsyncClient,
        semaphore: asyncio.Semaphore,
        prompt: Prompt | str,
        sampling: SamplingConfig,
        seed: int | None,
    ) -> list[Generation]:
        try:
            body = self._body(prompt, sampling, seed)
        except ValueError as exc:
            return error_generations(sampling.n, str(exc))
        try:
            generations = await self._post(client, semaphore, body, sampling)
        except _RequestFailed as exc:
            generations = error_generations(sampling.n, exc.reason)
        return [self._screen(generation) for generation in generations]

    def _screen(self, generation: Generation) -> Generation:
        """``generation`` with its error text redacted; an error if its text holds the key."""
        if generation.error is not None:
            generation.error = self._redact(generation.error)
        elif self._key is not None and self._key.shows_in(generation.text):
            return error_generations(1, "the reply's text holds (part of) the API key")[0]
        return generation

    def _body(self, prompt: Prompt | str, sampling: SamplingConfig, seed: int | None) -> dict:
        """The JSON request for one prompt; ``ValueError`` if the prompt fits not this API."""
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "n": sampling.n,
        }
        if self.api == "chat":
            if not _is_messages(prompt):
                raise ValueError(
                    "chat API needs a prompt of chat messages ({'role', 'content'} dicts), got "
                    f"{_describe(prompt)}; use api='completions' for token-id or text prompts"
                )
            body["messages"] = prompt
            if sampling.logprobs:
                body["logprobs"] = True
            if self.chat_template_kwargs:
                body["chat_template_kwargs"] = self.chat_template_kwargs
        else:
            is_ids = isinstance(prompt, list) and all(
                isinstance(t, int) and not isinstance(t, bool) for t in prompt
            )
            if not (isinstance(prompt, str) or (is_ids and prompt)):
                raise ValueError(
                    "completions API needs a prompt of token ids or text, got "
                    f"{_describe(prompt)}; use api='chat' for chat messages"
                )
            body["prompt"] = prompt
            if sampling.logprobs:
                body["logprobs"] = 1
        if self.server_extensions:
            body["return_token_ids"] = True
            if sampling.logprobs:
                body["return_tokens_as_token_ids"] = True
        if seed is not None:
            body["seed"] = seed
        if sampling.top_k > 0:
            body["top_k"] = sampling.top_k
        if sampling.stop_token_ids:
            body["stop_token_ids"] = list(sampling.stop_token_ids)
        body.update(self.extra_body)
        return body

    async def _post(
        self,
        client: httpx.AsyncClient,
        semaphore: asyncio.Semaphore,
        body: dict,
        sampling: SamplingConfig,
    ) -> list[Generation]:
        """POST with retries; the reply's generations, or ``_RequestFailed``."""
        attempt = 0
        while True:
            try:
                async with semaphore:
                    return await asyncio.wait_for(
                        self._attempt(client, body, sampling), self.timeout
                    )
            except TimeoutError:
                failure = _RequestFailed(f"timed out after {self.timeout:g} s", retry=True)
            except _RequestFailed as exc:
                failure = exc
            attempt += 1
            if not failure.retry or attempt > self.max_retries:
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                raise _RequestFailed(
                    f"POST {self.url} failed{tries}: {failure.reason}", retry=False
                )
            delay = self.backoff * (2 ** (attempt - 1) + self._rng.random())
            if failure.retry_after is not None:
                delay = max(delay, failure.retry_after)
            await asyncio.sleep(delay)

    async def _attempt(
        self, client: httpx.AsyncClient, body: dict, sampling: SamplingConfig
    ) -> list[Generation]:
        import httpx

        max_tokens = _positive_int(body.get("max_tokens"), sampling.max_tokens)
        n = _positive_int(body.get("n"), sampling.n)
        try:
            async with client.stream("POST", self.url, json=body) as response:
                status = response.status_code
                cap = reply_limit(max_tokens, n) if status == 200 else REPLY_BYTES_BASE
                reply = CappedBody(cap, response.headers.get("content-length"))
                if not reply.exceeded:
                    async for chunk in response.aiter_bytes():
                        if not reply.take(chunk):
                            break
        except httpx.TimeoutException as exc:
            raise _RequestFailed(
                f"timed out after {self.timeout:g} s ({type(exc).__name__})", retry=True
            ) from None
        except httpx.TransportError as exc:
            raise _RequestFailed(
                f"connection error ({type(exc).__name__}: {self._quote(str(exc))})", retry=True
            ) from None
        except httpx.RequestError as exc:  # e.g. a body that fails its Content-Encoding
            raise _RequestFailed(
                f"unreadable reply ({type(exc).__name__}: {self._quote(str(exc))})", retry=True
            ) from None
        if status != 200:
            shown = (
                f"(a body of more than {cap} bytes, not shown)"
                if reply.exceeded
                else self._snippet(reply.body())
            )
            raise _RequestFailed(
                f"HTTP {status} {self._quote(response.reason_phrase)}: {shown}",
                retry=status in RETRY_STATUSES or status >= 500,
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        if reply.exceeded:
            raise _RequestFailed(
                f"reply too large: more than {cap} bytes for max_tokens={max_tokens} x n={n}",
                retry=False,
            )
        raw = reply.body()
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise _RequestFailed(
                f"malformed JSON response ({type(exc).__name__}: {self._quote(str(exc))}): "
                f"{self._snippet(raw)!r}",
                retry=True,
            ) from None
        try:
            return parse_reply(
                data,
                self.api,
                sampling,
                vocab_size=self.vocab_size,
                tokenizer=self.text_tokenizer,
            )
        except MalformedReply as exc:
            raise _RequestFailed(
                f"malformed response ({exc}): {self._snippet(raw)!r}", retry=True
            ) from None

    def _snippet(self, raw: bytes) -> str:
        """The start of a reply body for an error text (see :meth:`_quote`)."""
        return self._quote(raw.decode("utf-8", errors="replace"))

    def _quote(self, text: str) -> str:
        """Server-sent ``text`` fit for an error text: redacted as a whole, then cut."""
        return self._redact(text)[:_BODY_SNIPPET].strip()

    def _headers(self) -> dict[str, str]:
        """The bearer-token header, when there is a key."""
        return {"Authorization": f"Bearer {self._key.value}"} if self._key else {}

    def _redact(self, text: str) -> str:
        return redact_credentials(text, self._key)


class CappedBody:
    """Collects a reply body up to ``cap`` bytes; past it (or when the declared
    ``Content-Length`` is past it) it holds nothing and is ``exceeded``, and the caller
    stops reading."""

    def __init__(self, cap: int, content_length: str | None) -> None:
        self.cap = cap
        self.size = 0
        self.chunks: list[bytes] = []
        declared = content_length.strip() if content_length else ""
        self.exceeded = declared.isascii() and declared.isdigit() and int(declared) > cap

    def take(self, chunk: bytes) -> bool:
        """Keep ``chunk``; ``False`` (and the body dropped) once the cap is passed."""
        self.size += len(chunk)
        if self.size > self.cap:
            self.exceeded = True
            self.chunks.clear()
            return False
        self.chunks.append(chunk)
        return True

    def body(self) -> bytes:
        return b"".join(self.chunks)


# --- reply parsing ----------------------------------------------------------------------------


def parse_reply(
    data: object,
    api: Literal["chat", "completions"],
    sampling: SamplingConfig,
    *,
    vocab_size: int | None = None,
    tokenizer: Any = None,
) -> list[Generation]:
    """``sampling.n`` generations from a decoded JSON reply of the chat or completions API.

    Choices go in ``index`` order. A choice with anything wrong becomes an error generation
    that says what; missing choices are error generations too. Raises only
    :class:`MalformedReply`, when ``data`` is no object with a ``choices`` array.
    ``tokenizer`` re-encodes the text when the reply carries no token ids.
    """
    if not isinstance(data, dict):
        raise MalformedReply(f"the reply is a JSON {_kind(data)}, not an object")
    if "choices" not in data:
        raise MalformedReply("the reply has no 'choices'")
    choices = data["choices"]
    if not isinstance(choices, list):
        raise MalformedReply(f"'choices' is a JSON {_kind(choices)}, not an array")
    ordered = [
        choice
        for _, _, choice in sorted(
            (_choice_index(choice, position), position, choice)
            for position, choice in enumerate(choices)
        )
    ]
    bound = TOKEN_ID_BOUND if vocab_size is None else vocab_size
    generations = []
    for position, choice in enumerate(ordered[: sampling.n]):
        try:
            generations.append(_parse_choice(choice, api, sampling, bound, tokenizer))
        except _BadChoice as exc:
            generations += error_generations(1, f"malformed choice {position} in reply: {exc}")
    if len(generations) < sampling.n:
        missing = f"server returned {len(generations)} of {sampling.n} choices"
        generations += error_generations(sampling.n - len(generations), missing)
    return generations


def _parse_choice(
    choice: object,
    api: Literal["chat", "completions"],
    sampling: SamplingConfig,
    vocab_size: int,
    tokenizer: Any,
) -> Generation:
    if not isinstance(choice, dict):
        raise _BadChoice(f"it is a JSON {_kind(choice)}, not an object")
    if api == "chat":
        message = choice.get("message")
        if not isinstance(message, dict):
            raise _BadChoice(f"'message' is a JSON {_kind(message)}, not an object")
        if "content" not in message:
            raise _BadChoice("the message has no 'content'")
        text = _text(message["content"], "the message content")
        tokens, logprobs = _chat_logprobs(choice.get("logprobs"))
    else:
        if "text" not in choice:
            raise _BadChoice("it has no 'text'")
        text = _text(choice["text"], "'text'")
        tokens, logprobs = _completion_logprobs(choice.get("logprobs"))
    ids_field = choice.get("token_ids")
    if ids_field is not None:
        ids = _token_ids(ids_field)
    elif tokens and all(_token_id(t) is not None for t in tokens):
        ids = [_token_id(t) for t in tokens]
    elif tokenizer is not None:
        ids = list(tokenizer.encode(text, add_special_tokens=False))
    else:
        ids = []
    outside = next((i for i, t in enumerate(ids) if not 0 <= t < vocab_size), None)
    if outside is not None:
        raise _BadChoice(
            f"token id {_clip(str(ids[outside]), 20)} at position {outside} is outside the "
            f"vocabulary [0, {vocab_size})"
        )
    keep = sampling.logprobs and logprobs and len(logprobs) == len(ids)
    finish: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
    return Generation(
        text=text, token_ids=ids, logprobs=logprobs if keep else None, finish_reason=finish
    )


def _text(content: object, what: str) -> str:
    """Generated text from a string, ``null`` (none) or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for position, part in enumerate(content):
            if not (
                isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            ):
                raise _BadChoice(
                    f"part {position} of {what} is not a text part ({{'type': 'text', "
                    "'text': ...}})"
                )
            parts.append(part["text"])
        text = "".join(parts)
    else:
        raise _BadChoice(f"{what} is a JSON {_kind(content)}, not text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _BadChoice(f"{what} is not valid Unicode (it holds a lone surrogate)") from None
    return text


def _chat_logprobs(field: object) -> tuple[list[object], list[float]]:
    """Tokens and log-probs of a chat choice's ``logprobs`` (``{"content": [entries]}``)."""
    if field is None:
        return [], []
    if not isinstance(field, dict):
        raise _BadChoice(f"'logprobs' is a JSON {_kind(field)}, not an object")
    entries = field.get("content")
    if entries is None:
        return [], []
    if not isinstance(entries, list):
        raise _BadChoice(f"'logprobs.content' is a JSON {_kind(entries)}, not an array")
    tokens, logprobs = [], []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _BadChoice(f"log-prob entry {position} is a JSON {_kind(entry)}, not an object")
        tokens.append(entry.get("token"))
        logprobs.append(_logprob(entry.get("logprob"), position))
    return tokens, logprobs


def _completion_logprobs(field: object) -> tuple[list[object], list[float]]:
    """Tokens and log-probs of a completions choice's ``logprobs``
    (``{"tokens": [...], "token_logprobs": [...]}``)."""
    if field is None:
        return [], []
    if not isinstance(field, dict):
        raise _BadChoice(f"'logprobs' is a JSON {_kind(field)}, not an object")
    tokens = field.get("tokens")
    values = field.get("token_logprobs")
    for name, value in (("tokens", tokens), ("token_logprobs", values)):
        if value is not None and not isinstance(value, list):
            raise _BadChoice(f"'logprobs.{name}' is a JSON {_kind(value)}, not an array")
    logprobs = [_logprob(value, position) for position, value in enumerate(values or [])]
    return list(tokens or []), logprobs


def _logprob(value: object, position: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _BadChoice(f"log-prob {position} is a JSON {_kind(value)}, not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer past the float range
        number = math.inf if value > 0 else -math.inf
    if not (math.isfinite(number) and number <= 0):
        raise _BadChoice(f"log-prob {position} is {number:g}, not a finite number <= 0")
    return number


def _token_ids(field: object) -> list[int]:
    if not isinstance(field, list):
        raise _BadChoice(f"'token_ids' is a JSON {_kind(field)}, not an array")
    for position, token in enumerate(field):
        if isinstance(token, bool) or not isinstance(token, int):
            raise _BadChoice(f"token id {position} is a JSON {_kind(token)}, not an integer")
    return list(field)


def _token_id(token: object) -> int | None:
    """The id in vLLM's ``"token_id:123"`` token form, else ``None``."""
    if isinstance(token, str) and token.startswith(_TOKEN_ID_PREFIX):
        rest = token[len(_TOKEN_ID_PREFIX) :]
        if rest.isascii() and rest.isdigit() and len(rest) <= 18:
            return int(rest)
    return None


def _choice_index(choice: object, position: int) -> int:
    """A choice's ``index`` where it is an integer, else its position in the reply."""
    index = choice.get("index") if isinstance(choice, dict) else None
    return index if isinstance(index, int) and not isinstance(index, bool) else position


def _kind(value: object) -> str:
    """The JSON type name of a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[:size] + "..."


def _positive_int(value: object, default: int) -> int:
    """``value`` if it is a positive integer, else ``default``."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return value if ok else default  # type: ignore[return-value]


def _is_messages(prompt: object) -> bool:
    return (
        isinstance(prompt, list)
        and bool(prompt)
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt)
    )


def _describe(prompt: object) -> str:
    if isinstance(prompt, list):
        kinds = sorted({type(x).__name__ for x in prompt})
        return f"a list of {'/'.join(kinds)}" if kinds else "an empty list"
    return f"a {type(prompt).__name__}"


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), bounded."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
