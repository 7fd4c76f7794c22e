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

A request that gets HTTP 408/429/5xx, a connection error, a timeout or an unparseable body is
retried with exponential backoff and jitter (``Retry-After`` is honoured up to
:data:`MAX_RETRY_AFTER` seconds). One that still fails comes back as generations with
``finish_reason="error"`` for its prompt only. The API key is sent only in the
``Authorization`` header: it is kept out of ``repr`` and scrubbed from every error text.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import random
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

_TOKEN_ID_PREFIX = "token_id:"
_BODY_SNIPPET = 300


class _RequestFailed(Exception):
    """A request attempt failed; ``retry`` says whether another attempt may succeed."""

    def __init__(self, reason: str, *, retry: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.retry_after = retry_after


class _Secret:
    """Holds the API key so that it never shows in a repr."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<redacted>"


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
        self.text_tokenizer = tokenizer
        """The tokenizer given, used to re-encode text when the server returns no ids."""
        self.tokenizer = tokenizer if api == "completions" else None
        key = api_key if api_key is not None else os.environ.get(api_key_env or "") or None
        self._key = _Secret(key) if key else None
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
            data = await self._post(client, semaphore, body)
            generations = [self._parse_choice(choice, sampling) for choice in data]
        except _RequestFailed as exc:
            return error_generations(sampling.n, self._redact(exc.reason))
        if len(generations) < sampling.n:
            missing = f"server returned {len(generations)} of {sampling.n} choices"
            generations += error_generations(sampling.n - len(generations), missing)
        return generations[: sampling.n]

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
        self, client: httpx.AsyncClient, semaphore: asyncio.Semaphore, body: dict
    ) -> list[dict]:
        """POST with retries; the response's choices in index order, or ``_RequestFailed``."""
        attempt = 0
        while True:
            try:
                async with semaphore:
                    return await asyncio.wait_for(self._attempt(client, body), self.timeout)
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

    async def _attempt(self, client: httpx.AsyncClient, body: dict) -> list[dict]:
        import httpx

        try:
            response = await client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise _RequestFailed(
                f"timed out after {self.timeout:g} s ({type(exc).__name__})", retry=True
            ) from None
        except httpx.TransportError as exc:
            raise _RequestFailed(
                f"connection error ({type(exc).__name__}: {exc})", retry=True
            ) from None
        status = response.status_code
        if status != 200:
            snippet = response.text[:_BODY_SNIPPET].strip()
            raise _RequestFailed(
                f"HTTP {status} {response.reason_phrase}: {snippet}",
                retry=status in RETRY_STATUSES or status >= 500,
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        try:
            data = response.json()
            choices = data["choices"]
            if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
                raise TypeError("'choices' is not a list of objects")
            return sorted(choices, key=lambda c: c.get("index", 0))
        except (ValueError, KeyError, TypeError) as exc:
            snippet = response.text[:_BODY_SNIPPET].strip()
            raise _RequestFailed(
                f"malformed JSON response ({type(exc).__name__}: {exc}): {snippet!r}", retry=True
            ) from None

    def _parse_choice(self, choice: dict, sampling: SamplingConfig) -> Generation:
        try:
            if self.api == "chat":
                text = (choice.get("message") or {}).get("content") or ""
                entries = (choice.get("logprobs") or {}).get("content") or []
                tokens = [e["token"] for e in entries]
                logprobs = [float(e["logprob"]) for e in entries]
            else:
                text = choice.get("text") or ""
                lp = choice.get("logprobs") or {}
                tokens = list(lp.get("tokens") or [])
                logprobs = [float(x) for x in lp.get("token_logprobs") or []]
            ids = choice.get("token_ids")
            if ids is None and tokens and all(_token_id(t) is not None for t in tokens):
                ids = [_token_id(t) for t in tokens]
            if ids is None:
                tok = self.text_tokenizer
                ids = list(tok.encode(text, add_special_tokens=False)) if tok is not None else []
            ids = [int(t) for t in ids]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise _RequestFailed(
                f"malformed choice in response ({type(exc).__name__}: {exc})", retry=False
            ) from None
        keep = sampling.logprobs and logprobs and len(logprobs) == len(ids)
        finish: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
        return Generation(
            text=text, token_ids=ids, logprobs=logprobs if keep else None, finish_reason=finish
        )

    def _headers(self) -> dict[str, str]:
        """The bearer-token header, when there is a key."""
        return {"Authorization": f"Bearer {self._key.value}"} if self._key else {}

    def _redact(self, text: str) -> str:
        return text.replace(self._key.value, "<redacted>") if self._key else text


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


def _token_id(token: object) -> int | None:
    """The id in vLLM's ``"token_id:123"`` token form, else ``None``."""
    if isinstance(token, str) and token.startswith(_TOKEN_ID_PREFIX):
        rest = token[len(_TOKEN_ID_PREFIX) :]
        if rest.isdigit():
            return int(rest)
    return None


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
