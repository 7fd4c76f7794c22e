"""Generation with vLLM's in-process offline engine (``vllm.LLM``), on a GPU or vLLM's CPU build.

:class:`VLLMBackend` sends a whole batch of prompts to one ``LLM.generate`` call and lets
vLLM's scheduler batch them. Conventions (vLLM 0.32's, shared by the transformers backend):

- Prompts go in as token ids; chat messages are rendered with the tokenizer's chat template
  (with the generation prompt) first.
- ``token_ids`` include the stop token that ended a generation; ``text`` leaves it out and
  skips special tokens.
- Sample ``j`` of a prompt with seed ``s`` is seeded with ``s + j`` (vLLM's parallel sampling).
- ``logprobs[t]`` is the log-prob of the sampled token from vLLM's ``logprobs_mode``; its
  default ``"raw_logprobs"`` is ``log_softmax(logits)`` before temperature, top-k and top-p.
  Pass ``logprobs_mode="processed_logprobs"`` to get the temperature-scaled (and truncated)
  distribution instead.

Weights are replaced in place with the engine's ``reload_weights`` worker call, followed by a
prefix-cache reset (otherwise cached KV blocks computed with the old weights are reused). With
the engine in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, which this module sets unless
it is set already) the tensors are handed over directly; otherwise they go through a
safetensors file, since tensors cannot cross vLLM's process boundary.

With ``enable_lora=True``, :meth:`VLLMBackend.adapter` gives a :class:`LoRAView`: a backend
that generates with the same engine plus one peft-saved LoRA adapter (frozen opponents of a
LoRA run). Each ``generate`` call of a backend or a view is one engine call with one adapter
(or none): vLLM 0.32's CPU LoRA kernels apply the adapter in the last slot to requests without
one when a scheduler step mixes them with adapter requests.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spiral_agents.llm.backend import (
    FinishReason,
    Generation,
    Prompt,
    SamplingConfig,
    check_seeds,
    encode_prompt,
    error_generations,
)

if TYPE_CHECKING:
    import torch
    import vllm
    from vllm.lora.request import LoRARequest

EMBEDDINGS = "model.embed_tokens.weight"
SLEEP_TAGS = ("weights", "kv_cache")
"""What vLLM's sleep mode releases, in the order it is best woken."""

_FINISH_REASONS: dict[str | None, FinishReason] = {"stop": "stop", "length": "length"}


class VLLMBackend:
    """A :class:`~spiral_agents.llm.backend.UpdatableBackend` over an in-process ``vllm.LLM``.

    Args:
        model: a model directory or Hugging Face model id.
        dtype: weight dtype; ``"auto"`` takes the model config's dtype on a GPU and float32 on
            vLLM's CPU platform (faster there than bfloat16).
        max_model_len: longest prompt plus generation; by default the model's own limit.
        gpu_memory_utilization: share of GPU memory vLLM may take (ignored on the CPU, where
            ``VLLM_CPU_KVCACHE_SPACE`` GiB, default 1 here, sizes the KV cache).
        enforce_eager: skip CUDA graphs and compilation; by default on for the CPU (fast
            start), off on a GPU.
        seed: the engine's global seed, used by requests that have no seed of their own.
        enable_sleep_mode: let :meth:`sleep` free GPU memory between rollouts. Where the
            platform has no sleep mode (the CPU) this warns and :meth:`sleep` does nothing.
        request_seeds: pass each prompt's seed to vLLM (reproducible sampling). Off, seeds
            are ignored and the engine's own random stream samples: vLLM's sampler then skips
            a Python loop over seeded requests at every token (a training speed-up on a GPU).
        enable_lora: let :meth:`adapter` serve LoRA adapters on top of the engine's weights.
        max_lora_rank: the largest rank an adapter may have (vLLM allows 1, 8, 16, 32, 64,
            128, 256, 320 and 512).
        max_loras: how many adapters one scheduler step can hold (vLLM's LoRA slots; on a GPU
            each slot holds ``max_lora_rank`` weights for every layer). How many loaded
            adapters stay cached in host memory is vLLM's ``max_cpu_loras`` (an engine
            keyword, by default ``max_loras``); the others are read again from their folder.
        **engine_kwargs: anything else ``vllm.LLM`` accepts (e.g. ``logprobs_mode``).

    Environment defaults, each set only if unset and before vLLM reads it:
    ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (the engine runs in this process, so weight updates
    pass tensors directly), ``HF_HUB_OFFLINE=1`` when ``model`` is a local directory, and on
    the CPU ``VLLM_CPU_KVCACHE_SPACE=1``. On the CPU chunked prefill is off by default (vLLM
    0.32 cannot rewind a CPU random generator after a partial prefill, which fails every
    seeded request of a batch larger than one scheduler step).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: Any = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.85,
        enforce_eager: bool | None = None,
        seed: int = 0,
        enable_sleep_mode: bool = False,
        request_seeds: bool = True,
        enable_lora: bool = False,
        max_lora_rank: int = 16,
        max_loras: int = 1,
        **engine_kwargs: Any,
    ) -> None:
        model = str(model)
        local = Path(model).expanduser()
        if local.exists():
            if not local.is_dir():
                raise ValueError(f"model must be a directory or a model id, got file {model!r}")
            model = str(local)
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        elif model.startswith(("/", ".", "~")):
            raise ValueError(f"model directory {model!r} does not exist")
        if max_model_len is not None and max_model_len < 2:
            raise ValueError(f"max_model_len must be at least 2, got {max_model_len}")
        if not 0 < gpu_memory_utilization <= 1:
            message = f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}"
            raise ValueError(message)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

        import vllm
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        if on_cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            if dtype == "auto":
                dtype = "float32"
            # vLLM rewinds a seeded request's generator after a partial (chunked) prefill;
            # CPU generators cannot rewind, so a large seeded batch would fail every request.
            engine_kwargs.setdefault("enable_chunked_prefill", False)
        if enforce_eager is None:
            enforce_eager = on_cpu
        self.sleep_mode = enable_sleep_mode and current_platform.is_sleep_mode_available()
        if enable_sleep_mode and not self.sleep_mode:
            warnings.warn(
                f"vLLM has no sleep mode on the {current_platform.device_name} platform: "
                "sleep() and wake_up() do nothing",
                stacklevel=2,
            )
        if enable_lora:
            engine_kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=max_loras)
        try:
            self.llm: vllm.LLM = vllm.LLM(
                model,
                dtype=dtype,
                max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization,
                enforce_eager=enforce_eager,
                seed=seed,
                enable_sleep_mode=self.sleep_mode,
                **engine_kwargs,
            )
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot start vLLM on {model!r}: {exc}") from exc
        self.tokenizer: Any = self.llm.get_tokenizer()
        model_config = self.llm.llm_engine.model_config
        self.max_model_len: int = model_config.max_model_len
        self.vocab_size: int = model_config.get_vocab_size()
        self.tied_embeddings = bool(
            getattr(model_config.hf_text_config, "tie_word_embeddings", False)
        )
        self.request_seeds = request_seeds
        self.asleep: set[str] = set()
        """What :meth:`sleep` released and :meth:`wake_up` has not brought back yet."""
        self._weights_dir: tempfile.TemporaryDirectory[str] | None = None
        self.lora_enabled = enable_lora
        self._adapters: dict[str, LoRAView] = {}

    # -- generation -------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Prompt],
        sampling: SamplingConfig,
        seeds: Sequence[int | None] | None = None,
    ) -> list[list[Generation]]:
        """For each prompt, ``sampling.n`` generations; ``seeds[i]`` seeds prompt i's samples
        (unless the backend was made with ``request_seeds=False``).

        A prompt that cannot be encoded (empty, token ids outside the vocabulary, too long for
        ``max_model_len``) gets error generations of its own; if vLLM fails for the batch,
        every prompt in it does.
        """
        return self._generate(prompts, sampling, seeds, None)

    def _generate(
        self,
        prompts: Sequence[Prompt],
        sampling: SamplingConfig,
        seeds: Sequence[int | None] | None,
        lora_request: LoRARequest | None,
    ) -> list[list[Generation]]:
        """:meth:`generate`, every prompt with ``lora_request``'s adapter (or none)."""
        seeds = check_seeds(prompts, seeds if self.request_seeds else None)
        results: list[list[Generation]] = [[] for _ in prompts]
        requests: list[dict[str, list[int]]] = []
        params: list[vllm.SamplingParams] = []
        indices: list[int] = []
        for index, (prompt, seed) in enumerate(zip(prompts, seeds)):
            try:
                ids = encode_prompt(
                    prompt, self.tokenizer, self.vocab_size, self.max_model_len, "max_model_len"
                )
            except Exception as exc:  # noqa: BLE001 - one bad prompt ends only itself
                results[index] = error_generations(sampling.n, f"bad prompt: {exc}")
                continue
            requests.append({"prompt_token_ids": ids})
            params.append(self._sampling_params(sampling, seed))
            indices.append(index)
        if not requests:
            return results
        try:
            outputs = self.llm.generate(requests, params, use_tqdm=False, lora_request=lora_request)
        except Exception as exc:  # noqa: BLE001 - report the failure, keep the caller alive
            message = f"vLLM generate failed: {type(exc).__name__}: {exc}"
            for index in indices:
                results[index] = error_generations(sampling.n, message)
            return results
        for index, output in zip(indices, outputs):
            results[index] = [
                self._generation(completion, sampling.logprobs)
                for completion in sorted(output.outputs, key=lambda c: c.index)
            ]
        return results

    @staticmethod
    def _sampling_params(sampling: SamplingConfig, seed: int | None) -> vllm.SamplingParams:
        import vllm

        return vllm.SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,  # 0 turns top-k off in vLLM too
            max_tokens=sampling.max_tokens,
            stop_token_ids=list(sampling.stop_token_ids),
            seed=seed,
            # 0 extra candidates: vLLM still returns the sampled token's log-prob.
            logprobs=0 if sampling.logprobs else None,
        )

    @staticmethod
    def _generation(completion: Any, with_logprobs: bool) -> Generation:
        """A vLLM ``CompletionOutput`` as a :class:`Generation`."""
        token_ids = list(completion.token_ids)
        finish = _FINISH_REASONS.get(completion.finish_reason)
        logprobs = None
        if with_logprobs and completion.logprobs is not None:
            logprobs = [step[token].logprob for step, token in zip(completion.logprobs, token_ids)]
        if finish is None:
            return Generation(
                text=completion.text,
                token_ids=token_ids,
                logprobs=logprobs,
                finish_reason="error",
                error=f"vLLM finished with {completion.finish_reason!r}",
            )
        return Generation(completion.text, token_ids, logprobs, finish)

    # -- LoRA adapters ----------------------------------------------------------------------

    def adapter(self, name: str, path: str | Path) -> LoRAView:
        """A backend that generates with this engine plus the peft-saved LoRA adapter in folder
        ``path`` (``adapter_config.json`` and the adapter weights), under ``name``.

        The adapter is loaded now, so a folder vLLM cannot use (missing, not an adapter, rank
        above ``max_lora_rank``, modules the model lacks) is a ``ValueError`` here rather than a
        failed generation later. Each name gets its own vLLM adapter id (1, 2, ... in the order
        of first use); asking for a name again with the same folder gives the same view, with
        another folder a ``ValueError`` (vLLM caches adapters by id). Keep the folder: vLLM
        reads it again when the adapter has left its host cache (``max_cpu_loras``).

        The adapter adds to the engine's *current* weights: frozen LoRA snapshots stay right
        while the engine keeps the base weights they were trained on, not after
        :meth:`update_weights` loads merged weights.
        """
        if not self.lora_enabled:
            raise ValueError("LoRA adapters need a VLLMBackend made with enable_lora=True")
        folder = Path(path).expanduser().resolve()
        known = self._adapters.get(name)
        if known is not None:
            loaded = known.lora_request.lora_path
            if loaded != str(folder):
                raise ValueError(f"adapter {name!r} is already loaded from {loaded}, not {folder}")
            return known
        if not (folder / "adapter_config.json").is_file():
            raise ValueError(f"LoRA adapter {name!r}: {folder} has no adapter_config.json")
        from vllm.lora.request import LoRARequest

        request = LoRARequest(name, len(self._adapters) + 1, str(folder))
        try:
            self.llm.llm_engine.add_lora(request)
        except Exception as exc:  # vLLM's loader raises several types
            raise ValueError(f"cannot load LoRA adapter {name!r} from {folder}: {exc}") from exc
        view = self._adapters[name] = LoRAView(self, request)
        return view

    # -- weights ----------------------------------------------------------------------------

    def update_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load ``state_dict`` (Hugging Face parameter names) into the engine in place.

        With tied embeddings and no ``lm_head.weight`` in ``state_dict``, the output layer is
        loaded from ``model.embed_tokens.weight`` (vLLM keeps a separate copy of it). The prefix
        cache is reset afterwards, so no KV block computed with the old weights is reused.
        """
        weights = {name: tensor.detach() for name, tensor in state_dict.items()}
        if not weights:
            raise ValueError("state_dict is empty")
        if self.tied_embeddings:
            add_tied_output_layer(weights)
        if self._tensors_in_process():
            kwargs: dict[str, Any] = {"weights_iterator": list(weights.items())}
        else:
            kwargs = {"weights_path": self._save(weights)}
        self.llm.collective_rpc("reload_weights", kwargs=kwargs)
        self.reset_prefix_cache()

    def reset_prefix_cache(self) -> None:
        """Forget every cached KV block, so that no prompt reuses earlier computation."""
        self.llm.reset_prefix_cache()

    def _tensors_in_process(self) -> bool:
        """Whether the model lives in this process, so tensors can be passed as they are."""
        from vllm.v1.engine.core_client import InprocClient

        engine = self.llm.llm_engine
        return (
            isinstance(engine.engine_core, InprocClient)
            and engine.vllm_config.parallel_config.distributed_executor_backend == "uni"
        )

    def _save(self, weights: dict[str, torch.Tensor]) -> str:
        """Write ``weights`` as one safetensors file in this backend's scratch directory."""
        if self._weights_dir is None:
            self._weights_dir = tempfile.TemporaryDirectory(prefix="spiral-vllm-weights-")
        save_weights(weights, self._weights_dir.name)
        return self._weights_dir.name

    # -- sleep mode -------------------------------------------------------------------------

    def sleep(self, level: int = 1) -> None:
        """Free the engine's accelerator memory while the trainer runs.

        Level 1 moves the weights to host memory and drops the KV cache; level 2 drops the
        weights too (load new ones with :meth:`update_weights` after waking the weights).
        Does nothing unless sleep mode was enabled and the platform has it.
        """
        check_sleep_level(level)
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=level)
            self.asleep = set(SLEEP_TAGS)

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """Bring back what :meth:`sleep` released: ``tags`` of :data:`SLEEP_TAGS`, by default
        all. Waking ``"weights"`` first, updating them and then waking ``"kv_cache"`` keeps
        the KV cache out of memory while the weights change. Does nothing for what is awake."""
        waking = tags_to_wake(tags, self.asleep)
        if waking:
            self.llm.wake_up(tags=waking)
            self.asleep -= set(waking)


class LoRAView:
    """A :class:`~spiral_agents.llm.backend.Backend` that generates with a
    :class:`VLLMBackend`'s engine plus one LoRA adapter (see :meth:`VLLMBackend.adapter`):
    the same tokenizer, prompt handling, seeding and sampling conventions."""

    def __init__(self, backend: VLLMBackend, lora_request: LoRARequest) -> None:
        self.backend = backend
        self.lora_request = lora_request
        self.tokenizer: Any = backend.tokenizer

    @property
    def name(self) -> str:
        return self.lora_request.lora_name

    def generate(
        self,
        prompts: Sequence[Prompt],
        sampling: SamplingConfig,
        seeds: Sequence[int | None] | None = None,
    ) -> list[list[Generation]]:
        """:meth:`VLLMBackend.generate` with this view's adapter."""
        return self.backend._generate(prompts, sampling, seeds, self.lora_request)


def check_sleep_level(level: int) -> None:
    """``ValueError`` unless ``level`` is a sleep level the trainer uses (1 or 2)."""
    if level not in (1, 2):
        raise ValueError(f"sleep level must be 1 or 2, got {level!r}")


def tags_to_wake(tags: Sequence[str] | None, asleep: set[str]) -> list[str]:
    """Which of ``tags`` (:data:`SLEEP_TAGS` by default) are asleep, in waking order;
    ``ValueError`` for a tag that is not one of :data:`SLEEP_TAGS`."""
    wanted = set(SLEEP_TAGS if tags is None else tags)
    if not wanted <= set(SLEEP_TAGS):
        raise ValueError(f"wake_up tags must be among {SLEEP_TAGS}, got {sorted(wanted)}")
    return [tag for tag in SLEEP_TAGS if tag in wanted & asleep]


def add_tied_output_layer(weights: dict[str, torch.Tensor]) -> None:
    """Give a tied model's weights an ``lm_head.weight`` (the embeddings) where they lack one:
    vLLM keeps a separate copy of the output layer, which would otherwise keep old weights."""
    if "lm_head.weight" not in weights and EMBEDDINGS in weights:
        weights["lm_head.weight"] = weights[EMBEDDINGS]


def save_weights(weights: Mapping[str, torch.Tensor], directory: str | Path) -> Path:
    """Write ``weights`` to ``directory/model.safetensors`` (on the CPU), the layout vLLM's
    ``reload_weights(weights_path=...)`` reads; tensors that share storage (tied embeddings)
    are written as separate copies, which safetensors requires."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors = {}
    for name, tensor in weights.items():
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        tensors[name] = tensor
    path = Path(directory) / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path
