"""Generation with Hugging Face transformers, on CPU or GPU: the fallback when vLLM is absent.

:class:`TransformersBackend` runs its own sampling loop over a KV cache, so that it can give
every output row its own random generator (a row's tokens depend only on its prompt and seed,
not on what else is in the batch) and report the log-prob of every sampled token. It can hold
the trainer's own module: weight updates are then shared without a copy.

Conventions, chosen to agree with vLLM 0.32's defaults so the rollout engine sees the same
thing from either backend:

- ``token_ids`` include the stop token that ended a generation (vLLM appends it to the
  output before checking for a stop); ``text`` leaves it out and skips special tokens
  (vLLM's ``skip_special_tokens=True`` and ``include_stop_str_in_output=False``).
- A generation stops at the tokenizer's EOS and pad tokens, the model's
  ``generation_config.eos_token_id`` ids and ``SamplingConfig.stop_token_ids``. A stop token
  sampled as the last allowed token still gives ``"stop"``, as in vLLM.
- Sample ``j`` of a prompt with seed ``s`` is seeded with ``s + j`` (vLLM's parallel sampling).
  Each row draws one uniform per token from its own CPU ``torch.Generator`` and inverts the
  CDF, so a seed gives the same draws on any device; the tokens differ from vLLM's, whose
  random streams are its own.
- ``logprobs[t]`` is ``log_softmax(logits / temperature)`` at the sampled token (plain
  ``log_softmax(logits)`` when greedy), *without* the top-k/top-p truncation: what a learner
  recomputes with one forward pass. vLLM's default ``logprobs_mode="raw_logprobs"`` ignores
  the temperature, so the two agree at temperature 1 (and 0); its ``"processed_logprobs"``
  agrees at any temperature when top-k and top-p are off.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from spiral_agents.llm import attention
from spiral_agents.llm.backend import (
    Generation,
    Prompt,
    SamplingConfig,
    check_seeds,
    encode_prompt,
    error_generations,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

GREEDY_BELOW = 1e-5
"""Temperatures under this sample greedily (vLLM's threshold)."""

_Outputs = dict[tuple[int, int], Generation]
"""Generations by (prompt index, sample index)."""


@dataclass
class _Row:
    """One output row: a prompt's token ids, which prompt and sample it is, and its seed."""
    prompt: int
    sample: int
    ids: list[int]
    seed: int | None


class TransformersBackend:
    """A :class:`~spiral_agents.llm.backend.UpdatableBackend` on a transformers causal LM.

    Args:
        model: a model id or directory for ``AutoModelForCausalLM.from_pretrained``, or an
            already loaded model (used as is, not copied: the trainer's module).
        tokenizer: a tokenizer or its id/directory; by default loaded from the model's path.
        device: where to run; by default CUDA when available else CPU for a path, and the
            model's own device for a loaded model (given explicitly, the model is moved there).
        dtype: ``"auto"`` (bfloat16 on CUDA, float32 on CPU; a loaded model keeps its own),
            or a dtype name such as ``"float32"``/``"bfloat16"``, or a ``torch.dtype``.
        batch_size: most output rows (prompts times ``n``) decoded together.
        max_batch_tokens: most tokens decoded together, counting each row as the batch's
            longest prompt plus its most new tokens: the KV cache preallocated for a batch
            is this many tokens (Qwen3-4B in bfloat16: 144 KiB a token, 9 GiB for the default).
            A row longer than this is decoded alone.
        attn_implementation: passed to ``from_pretrained`` (e.g. ``"sdpa"``, ``"eager"``); by
            default ``"sdpa_gqa"`` on the CPU (see :mod:`spiral_agents.llm.attention`).
    """

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        *,
        tokenizer: Any = None,
        device: str | None = None,
        dtype: str | torch.dtype = "auto",
        batch_size: int = 64,
        max_batch_tokens: int = 65536,
        attn_implementation: str | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be at least 1, got {max_batch_tokens}")
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        if isinstance(model, (str, Path)):
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            torch_dtype = _resolve_dtype(dtype, self.device)
            kwargs = {"dtype": torch_dtype}
            if attn_implementation is None and self.device.type == "cpu":
                attn_implementation = attention.register()
            if attn_implementation is not None:
                kwargs["attn_implementation"] = attn_implementation
            try:
                self.model = AutoModelForCausalLM.from_pretrained(str(model), **kwargs)
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot load a causal LM from {str(model)!r}: {exc}") from exc
            self.model.to(self.device)
            source = str(model)
        else:
            if not isinstance(model, torch.nn.Module):
                raise TypeError(f"model must be a path, a model id or a model, not {type(model)!r}")
            if attn_implementation is not None:
                raise ValueError("attn_implementation only applies to a model loaded from a path")
            self.model = model
            if device is not None:
                self.model.to(device)
            self.device = next(self.model.parameters()).device
            if dtype != "auto":
                self.model.to(_resolve_dtype(dtype, self.device))
            source = getattr(model, "name_or_path", "") or model.config._name_or_path
        self._cache_kwarg = cache_argument(self.model)
        if tokenizer is None or isinstance(tokenizer, (str, Path)):
            tokenizer_source = str(tokenizer) if tokenizer is not None else source
            if not tokenizer_source:
                raise ValueError("pass tokenizer=: the model does not say where it was loaded from")
            try:
                tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
            except (OSError, ValueError) as exc:
                message = f"cannot load a tokenizer from {tokenizer_source!r}: {exc}"
                raise ValueError(message) from exc
        self.tokenizer = tokenizer
        self.max_length: int | None = getattr(self.model.config, "max_position_embeddings", None)
        self.vocab_size: int = self.model.get_input_embeddings().weight.shape[0]
        self.stop_ids = frozenset(_default_stop_ids(self.tokenizer, self.model))
        pad = self.tokenizer.pad_token_id
        self.pad_id: int = pad if pad is not None else (min(self.stop_ids) if self.stop_ids else 0)
        # Prefix groups merge into one batch by left-padding their caches: plain layers only
        # (not sliding-window ones, whose window would count the padding).
        layers = DynamicCache(config=self.model.config).layers
        self._mergeable_cache = all(type(layer) is DynamicLayer for layer in layers)

    # -- generation -------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Prompt],
        sampling: SamplingConfig,
        seeds: Sequence[int | None] | None = None,
    ) -> list[list[Generation]]:
        """For each prompt, ``sampling.n`` generations; ``seeds[i]`` seeds prompt i's rows."""
        seeds = check_seeds(prompts, seeds)
        results: list[list[Generation]] = [[] for _ in prompts]
        rows: list[_Row] = []
        for index, (prompt, seed) in enumerate(zip(prompts, seeds)):
            try:
                ids = encode_prompt(
                    prompt, self.tokenizer, self.vocab_size, self.max_length,
                    "max_position_embeddings",
                )
            except Exception as exc:  # noqa: BLE001 - one bad prompt ends only itself
                results[index] = error_generations(sampling.n, f"bad prompt: {exc}")
                continue
            for sample in range(sampling.n):
                rows.append(_Row(index, sample, ids, None if seed is None else seed + sample))
        # In token order, rows that share a prefix are neighbours; every row is independent
        # of its chunk.
        rows.sort(key=lambda row: row.ids)
        outputs: _Outputs = {}
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for chunk in self._chunks(rows, sampling.max_tokens):
                    outputs.update(self._run_isolated(chunk, sampling))
        finally:
            self.model.train(was_training)
        for (index, sample), generation in sorted(outputs.items()):
            results[index].append(generation)
        return results

    def _chunks(self, rows: list[_Row], max_tokens: int) -> Iterator[list[_Row]]:
        """Consecutive rows in batches of at most ``batch_size`` rows whose rows, each counted
        as the batch's longest prompt plus its most new tokens, fit ``max_batch_tokens``."""
        chunk: list[_Row] = []
        longest = budget = 0
        for row in rows:
            row_budget = self._budget(len(row.ids), max_tokens)
            wider = max(longest, len(row.ids)), max(budget, row_budget)
            if chunk and (len(chunk) == self.batch_size or (len(chunk) + 1) * sum(wider) > self.max_batch_tokens):
                yield chunk
                chunk, wider = [], (len(row.ids), row_budget)
            chunk.append(row)
            longest, budget = wider
        if chunk:
            yield chunk

    def _budget(self, prompt_length: int, max_tokens: int) -> int:
        """New tokens a row of ``prompt_length`` prompt tokens may generate."""
        return min(max_tokens, self.max_length - prompt_length) if self.max_length else max_tokens

    def _run_isolated(self, chunk: list[_Row], sampling: SamplingConfig) -> _Outputs:
        """Run a chunk; if it fails, run each prompt's rows alone so only the culprit errors."""
        try:
            return self._run_chunk(chunk, sampling)
        except Exception as exc:  # noqa: BLE001 - one failure must not end the other prompts
            by_prompt: dict[int, list[_Row]] = {}
            for row in chunk:
                by_prompt.setdefault(row.prompt, []).append(row)
            if len(by_prompt) == 1:
                message = f"{type(exc).__name__}: {exc}"
                return {(row.prompt, row.sample): error_generations(1, message)[0] for row in chunk}
            outputs: _Outputs = {}
            for group in by_prompt.values():
                outputs.update(self._run_isolated(group, sampling))
            return outputs

    def _run_chunk(self, chunk: list[_Row], sampling: SamplingConfig) -> _Outputs:
        """Decode one batch with a KV cache; finished rows leave the batch."""
        device = self.device
        lengths = [len(row.ids) for row in chunk]
        budgets = [self._budget(n, sampling.max_tokens) for n in lengths]
        if self._mergeable_cache:
            parts = [self._prefill(group) for group in _prefix_groups(chunk)]
            cache, mask, logits = self._merge(parts, spare=max(budgets))
        else:
            cache, mask, logits = self._prefill(chunk)
        # The mask gets a column per decoded token: a buffer with room for all of them is
        # filled in place (views of it are passed) instead of being copied at every step.
        width = mask.shape[1]
        mask_buffer = torch.cat([mask, mask.new_zeros((len(chunk), max(budgets)))], dim=1)
        stop_ids = self.stop_ids | set(sampling.stop_token_ids)
        greedy = sampling.temperature < GREEDY_BELOW
        generators = None if greedy else [self._generator(row.seed) for row in chunk]
        tokens: list[list[int]] = [[] for _ in chunk]
        logprobs: list[list[float]] = [[] for _ in chunk]
        finish: list[str] = [""] * len(chunk)
        active = list(range(len(chunk)))
        next_position = torch.tensor(lengths, dtype=torch.long, device=device)
        while True:
            row_generators = None if generators is None else [generators[i] for i in active]
            chosen, chosen_logprobs = _sample(logits.float(), sampling, row_generators)
            chosen_list = chosen.tolist()
            logprob_list = None if chosen_logprobs is None else chosen_logprobs.tolist()
            keep: list[int] = []
            for slot, i in enumerate(active):
                token = chosen_list[slot]
                tokens[i].append(token)
                if logprob_list is not None:
                    logprobs[i].append(logprob_list[slot])
                if token in stop_ids:
                    finish[i] = "stop"
                elif len(tokens[i]) >= budgets[i]:
                    finish[i] = "length"
                else:
                    keep.append(slot)
            if not keep:
                break
            if len(keep) < len(active):
                kept = torch.tensor(keep, dtype=torch.long, device=device)
                cache.batch_select_indices(kept)
                mask_buffer, chosen, next_position = mask_buffer[kept], chosen[kept], next_position[kept]
                active = [active[slot] for slot in keep]
            mask_buffer[:, width] = 1
            width += 1
            logits = self.model(
                input_ids=chosen[:, None],
                attention_mask=mask_buffer[:, :width],
                position_ids=next_position[:, None],
                **{self._cache_kwarg: cache},
                use_cache=True,
            ).logits[:, -1, :]
            next_position = next_position + 1
        outputs: _Outputs = {}
        for i, row in enumerate(chunk):
            shown = tokens[i][:-1] if finish[i] == "stop" else tokens[i]
            outputs[(row.prompt, row.sample)] = Generation(
                text=self.tokenizer.decode(shown, skip_special_tokens=True),
                token_ids=tokens[i],
                logprobs=logprobs[i] if sampling.logprobs else None,
                finish_reason=finish[i],  # type: ignore[arg-type]
            )
        return outputs

    def _prefill(self, rows: list[_Row]) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """KV cache, attention mask and last-token logits of rows' prompts.

        The rows' shared prefix (all but at least one token of each prompt) is computed once
        and its cache copied to every row; the rest of each prompt follows, left-padded:
        ``[prefix][padding][own tokens]``, the padding masked out.
        """
        device = self.device
        lengths = [len(row.ids) for row in rows]
        shared = min(_common_prefix(rows[0].ids, rows[-1].ids), min(lengths) - 1)
        cache = DynamicCache(config=self.model.config)
        if len(rows) > 1 and shared > 0:
            prefix = torch.tensor([rows[0].ids[:shared]], dtype=torch.long, device=device)
            self.model(input_ids=prefix, **{self._cache_kwarg: cache}, use_cache=True, logits_to_keep=1)
            cache.batch_repeat_interleave(len(rows))
        else:
            shared = 0
        width = max(lengths) - shared
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for i, row in enumerate(rows):
            own = lengths[i] - shared
            input_ids[i, width - own :] = torch.tensor(row.ids[shared:], dtype=torch.long)
            mask[i, shared + width - own :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        logits = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0)[:, shared:],
            **{self._cache_kwarg: cache},
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]
        return cache, mask, logits

    def _merge(
        self, parts: list[tuple[DynamicCache, torch.Tensor, torch.Tensor]], spare: int
    ) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """One batch from prefilled groups: caches and masks left-padded to a common length,
        the cache with room for ``spare`` more tokens per row."""
        width = max(mask.shape[1] for _, mask, _ in parts)
        cache = DynamicCache(config=self.model.config)
        cache.layers = [
            _RoomyLayer.merged([c.layers[i] for c, _, _ in parts], width, spare)
            for i in range(len(cache.layers))
        ]
        masks = [mask for _, mask, _ in parts]
        mask = torch.zeros((sum(m.shape[0] for m in masks), width), dtype=masks[0].dtype, device=masks[0].device)
        start = 0
        for part in masks:
            mask[start : start + part.shape[0], width - part.shape[1] :] = part
            start += part.shape[0]
        logits = torch.cat([logits for _, _, logits in parts])
        return cache, mask, logits

    @staticmethod
    def _generator(seed: int | None) -> torch.Generator:
        """A row's own random stream (on the CPU): from its seed, or freshly random without one."""
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed % 2**64)
        return generator

    # -- weights ----------------------------------------------------------------------------

    def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Copy ``state_dict`` into the model in place.

        Unknown keys, wrong shapes and missing keys raise ``ValueError`` before anything is
        copied, except a missing key whose parameter is tied to one that is given (such as
        ``lm_head.weight`` with tied embeddings). Passing the model's own tensors (the backend
        shares the trainer's module) is harmless.
        """
        own = self.model.state_dict()
        unknown = sorted(set(state_dict) - set(own))
        if unknown:
            raise ValueError(f"unknown keys in state_dict: {unknown[:5]}")
        wrong = [k for k, v in state_dict.items() if tuple(v.shape) != tuple(own[k].shape)]
        if wrong:
            raise ValueError(f"shape mismatch for {wrong[:5]}")
        given = {own[k].data_ptr() for k in state_dict}
        missing = [k for k in own if k not in state_dict and own[k].data_ptr() not in given]
        if missing:
            raise ValueError(f"state_dict lacks {missing[:5]}, not tied to any given weight")
        self.model.load_state_dict(dict(state_dict), strict=False)


class _RoomyLayer(DynamicLayer):
    """A :class:`DynamicLayer` whose keys and values are views of buffers with spare room:
    appending a decoded token writes into the buffers instead of copying the whole cache."""

    @classmethod
    def merged(cls, parts: list[DynamicLayer], width: int, spare: int) -> _RoomyLayer:
        """The parts' rows stacked, each left-padded with zeros to ``width`` tokens."""
        layer = cls()
        keys = parts[0].keys
        rows = sum(part.keys.shape[0] for part in parts)
        shape = (rows, keys.shape[1], width + spare, keys.shape[3])
        layer._key_buffer, layer._value_buffer = keys.new_zeros(shape), keys.new_zeros(shape)
        start = 0
        for part in parts:
            end, length = start + part.keys.shape[0], part.keys.shape[2]
            layer._key_buffer[start:end, :, width - length : width] = part.keys
            layer._value_buffer[start:end, :, width - length : width] = part.values
            start = end
        layer.dtype, layer.device, layer.is_initialized = keys.dtype, keys.device, True
        layer._length = width
        layer._view()
        return layer

    def _view(self) -> None:
        self.keys = self._key_buffer[:, :, : self._length]
        self.values = self._value_buffer[:, :, : self._length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self._length + key_states.shape[-2]
        self._key_buffer[:, :, self._length : end] = key_states
        self._value_buffer[:, :, self._length : end] = value_states
        self._length = end
        self._view()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._key_buffer, self._value_buffer = self._key_buffer[indices], self._value_buffer[indices]
        self._view()


def _resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"unknown dtype {dtype!r}: use 'auto', 'float32', 'bfloat16', ...")
    return resolved


def _default_stop_ids(tokenizer: Any, model: Any) -> set[int]:
    """The tokenizer's EOS and pad ids and the generation config's EOS ids."""
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    generation_config = getattr(model, "generation_config", None)
    eos = getattr(generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return {int(token) for token in ids if token is not None}


def _sample(
    logits: torch.Tensor, sampling: SamplingConfig, generators: list[torch.Generator] | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next tokens (one per row, each row from its own generator) and their log-probs.

    Greedy when ``generators`` is None. Log-probs (None unless ``sampling.logprobs``) are of the
    temperature-scaled distribution before top-k/top-p truncation.
    """
    if generators is None:
        chosen = logits.argmax(dim=-1)
        scaled = logits
    else:
        scaled = logits / sampling.temperature
        # Inverse-CDF sampling with one uniform per row: much faster than a per-row
        # torch.multinomial, and the uniforms come from CPU generators on any device.
        probs = _truncate(scaled, sampling.top_k, sampling.top_p).softmax(dim=-1)
        cdf = probs.double().cumsum(dim=-1)
        uniforms = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])
        targets = uniforms.to(cdf.device)[:, None] * cdf[:, -1:]
        chosen = torch.searchsorted(cdf, targets, right=True).squeeze(-1)
        chosen = chosen.clamp(max=cdf.shape[-1] - 1)
    if not sampling.logprobs:
        return chosen, None
    return chosen, scaled.log_softmax(dim=-1).gather(-1, chosen[:, None]).squeeze(-1)


def _truncate(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Logits with everything outside the top-k and the top-p nucleus set to -inf."""
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ascending, order = logits.sort(dim=-1)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= 1 - top_p
        drop[:, -1] = False
        logits = logits.scatter(-1, order, ascending.masked_fill(drop, float("-inf")))
    return logits


SPLIT_SAVING = 256
"""Prefill tokens a separate prefix group must save (over the rows already in the current
one) to be worth its own two prefill calls: rows of another game, seat or template."""


def _prefix_groups(rows: list[_Row]) -> Iterator[list[_Row]]:
    """Rows in token order, cut where a row would shorten the current group's shared prefix
    so much that the rows already in it would recompute more than :data:`SPLIT_SAVING`
    tokens (the first row computes its prefix either way)."""
    group: list[_Row] = []
    shared = 0
    for row in rows:
        if group:
            with_row = _common_prefix(group[0].ids, row.ids)
            if (shared - with_row) * (len(group) - 1) > SPLIT_SAVING:
                yield group
                group = []
            else:
                shared = with_row
        if not group:
            shared = len(row.ids)
        group.append(row)
    if group:
        yield group


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))



def cache_argument(model: torch.nn.Module) -> str:
    """The name ``model.forward`` takes its KV cache under: ``cache`` from transformers 5.24
    (where ``past_key_values`` is deprecated, to go in 5.40), ``past_key_values`` before."""
    forward = getattr(model, "get_base_model", lambda: model)().forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"
