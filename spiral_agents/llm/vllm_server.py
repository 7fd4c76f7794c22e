"""A vLLM server as a policy whose weights a trainer replaces: reload from a saved checkpoint.

:class:`VLLMServerBackend` generates like :class:`OpenAICompatibleBackend` (completions API,
token-id prompts, token ids and log-probs back) and adds :meth:`~VLLMServerBackend.update_weights`:
the weights are written as a safetensors checkpoint under ``weights_dir`` (a staging name, then
renamed), the server is asked to reload them in place, and its prefix cache is reset so no KV
block computed with the old weights is reused.

The server must run with ``VLLM_SERVER_DEV_MODE=1``, which adds the ``/collective_rpc`` and
``/reset_prefix_cache`` endpoints used here, and must see ``weights_dir`` at the same path
(the same machine or a shared file system). On the trainer's GPU it also sleeps while the
learner trains (:meth:`~VLLMServerBackend.sleep`, :meth:`~VLLMServerBackend.wake_up`: the
dev-mode ``/sleep`` and ``/wake_up`` endpoints), which needs ``--enable-sleep-mode`` (without
it the server answers but frees nothing), and it must leave the trainer room::

    VLLM_SERVER_DEV_MODE=1 vllm serve Qwen/Qwen3-4B-Base --served-model-name policy \
        --enable-sleep-mode --gpu-memory-utilization 0.35

Only the newest checkpoint is kept once the server has loaded it. A reload that fails raises
:class:`WeightSyncError`: the server may be serving old weights (or none: vLLM's engine does
not survive a failed reload), so generating on would no longer be on-policy.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spiral_agents.llm.openai_backend import (
    REPLY_BYTES_BASE,
    CappedBody,
    OpenAICompatibleBackend,
)
from spiral_agents.llm.vllm_backend import (
    SLEEP_TAGS,
    add_tied_output_layer,
    check_sleep_level,
    save_weights,
    tags_to_wake,
)

if TYPE_CHECKING:
    import torch

CHECKPOINT_PREFIX = "weights-"


class WeightSyncError(RuntimeError):
    """The server did not take the new weights."""


class VLLMServerBackend(OpenAICompatibleBackend):
    """An :class:`OpenAICompatibleBackend` on a vLLM server whose weights can be replaced.

    Args:
        base_url: the server's API root, ending in ``/v1``; the reload endpoints sit beside it.
        model: the served model name.
        tokenizer: the policy's HF tokenizer (prompts are built as token ids).
        weights_dir: where weight checkpoints are written; the server reads them from the same
            path.
        reload_timeout: seconds the server may take to load one checkpoint.
        **kwargs: anything else :class:`OpenAICompatibleBackend` takes (concurrency, timeout,
            retries, API key).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer: Any,
        weights_dir: str | Path,
        *,
        reload_timeout: float = 600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url, model, api="completions", tokenizer=tokenizer, **kwargs)
        self.server_url = self.base_url.removesuffix("/v1")
        self.weights_dir = Path(weights_dir).resolve()
        self.reload_timeout = reload_timeout
        self.updates = 0
        self.asleep: set[str] = set()
        """What :meth:`sleep` released and :meth:`wake_up` has not brought back yet."""

    def sleep(self, level: int = 1) -> None:
        """Have the server free its GPU memory (``POST /sleep?level=N``): level 1 keeps a host
        copy of the weights, level 2 drops them (the next :meth:`update_weights` reloads them
        all). :class:`WeightSyncError` if the server refuses."""
        check_sleep_level(level)
        if not self.asleep:
            self._post_admin(f"/sleep?level={level}", None, self.reload_timeout)
            self.asleep = set(SLEEP_TAGS)

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """Bring back ``tags`` of :data:`~spiral_agents.llm.vllm_backend.SLEEP_TAGS` (default
        all) with ``POST /wake_up?tags=...``; nothing for what is awake."""
        waking = tags_to_wake(tags, self.asleep)
        if waking:
            query = "&".join(f"tags={tag}" for tag in waking)
            self._post_admin(f"/wake_up?{query}", None, self.reload_timeout)
            self.asleep -= set(waking)

    def update_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Save ``state_dict`` (Hugging Face names) as a checkpoint and have the server reload
        from it.

        The server reloads every weight from the checkpoint, so ``state_dict`` must hold the
        whole model. Without ``lm_head.weight`` the model has tied embeddings, and the output
        layer is written from the embeddings (see :func:`add_tied_output_layer`).
        """
        if not state_dict:
            raise ValueError("state_dict is empty")
        weights = dict(state_dict)
        add_tied_output_layer(weights)
        self.updates += 1
        name = f"{CHECKPOINT_PREFIX}{self.updates:06d}"
        staging = self.weights_dir / f".writing-{name}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        save_weights(weights, staging)
        checkpoint = self.weights_dir / name
        shutil.rmtree(checkpoint, ignore_errors=True)
        os.replace(staging, checkpoint)
        self._reload(checkpoint)
        for old in self.weights_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            if old != checkpoint:
                shutil.rmtree(old, ignore_errors=True)

    def _reload(self, checkpoint: Path) -> None:
        """Have the server load the weights in ``checkpoint`` in place, then drop its prefix
        cache; :class:`WeightSyncError` if it does not."""
        if not any(checkpoint.glob("*.safetensors")):
            # vLLM's engine dies on a reload that finds no weights: never send one.
            raise WeightSyncError(f"{checkpoint} holds no .safetensors weights")
        self._post_admin(
            "/collective_rpc",
            {"method": "reload_weights", "kwargs": {"weights_path": str(checkpoint)}},
            self.reload_timeout,
        )
        reply = self._post_admin("/reset_prefix_cache", None, self.timeout)
        if reply.get("success") is False:
            raise WeightSyncError(
                f"{self.server_url} reloaded {checkpoint} but kept its prefix cache "
                "(requests still running?); cached blocks would reuse the old weights"
            )

    def _post_admin(self, path: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        """POST to a dev-mode endpoint; connection errors are retried with backoff. The reply
        is read up to :data:`REPLY_BYTES_BASE` bytes; a JSON object comes back, anything else
        as ``{}``. Error texts are redacted as the backend's request errors are."""
        import httpx

        url = self.server_url + path
        for attempt in range(self.max_retries + 1):
            try:
                with httpx.stream(
                    "POST", url, json=body, headers=self._headers(), timeout=timeout
                ) as response:
                    reply = CappedBody(REPLY_BYTES_BASE, response.headers.get("content-length"))
                    if not reply.exceeded:
                        for chunk in response.iter_bytes():
                            if not reply.take(chunk):
                                break
                break
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
                if attempt == self.max_retries:
                    raise WeightSyncError(self._redact(f"POST {url} failed: {failure}")) from None
                time.sleep(self.backoff * 2**attempt)
            except httpx.RequestError as exc:
                raise WeightSyncError(
                    self._redact(f"POST {url}: unreadable reply ({type(exc).__name__}: {exc})")
                ) from None
        status = response.status_code
        if status == 404:
            raise WeightSyncError(
                f"POST {url}: 404 Not Found; start the vLLM server with VLLM_SERVER_DEV_MODE=1 "
                "to allow weight reloads and sleeping"
            )
        if reply.exceeded:
            raise WeightSyncError(
                f"POST {url}: HTTP {status} with a reply of more than {REPLY_BYTES_BASE} bytes"
            )
        if status != 200:
            snippet = self._snippet(reply.body())
            raise WeightSyncError(self._redact(f"POST {url}: HTTP {status}: {snippet}"))
        raw = reply.body()
        try:
            data = json.loads(raw) if raw else {}
        except (ValueError, RecursionError):
            data = {}
        return data if isinstance(data, dict) else {}
