"""Frozen LLM opponents: snapshot files of the learner's weights, and the frozen models a
generator serves them with.

A snapshot (``initial``, or a population member) is one safetensors file under
``<output_dir>/opponents``, written by learner rank 0 with the weights a generator gets (base
names, LoRA merged, in the base model's dtype; tied weights once) and checked by its sha256
when it is loaded again. A generator serves each frozen opponent as its own transformers copy of
the model, on the generator's device, whatever the generator's backend: one more copy of the
weights per opponent (Qwen3-4B in bfloat16: about 8 GB each).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from spiral_train.config import TrainConfig


class OpponentError(RuntimeError):
    """A frozen opponent that cannot be loaded (the message says which file and why)."""


def snapshot_path(output_dir: str | Path, name: str) -> Path:
    return Path(output_dir) / "opponents" / f"{name}.safetensors"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_snapshot(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype) -> str:
    """Write ``state`` (a generator's weights) to ``path`` atomically; return its sha256.
    A tensor that shares its storage with an earlier one (tied embeddings) is left out."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen:
            continue
        seen.add(pointer)
        value = tensor.detach().to("cpu")
        tensors[name] = (value.to(dtype) if value.is_floating_point() else value).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.writing")
    save_file(tensors, staging)
    os.replace(staging, path)
    return sha256_of(path)


def base_dtype(config: TrainConfig) -> torch.dtype:
    """The dtype the base model's config declares (float32 when it declares none)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(config.model.path).dtype or torch.float32


def load_frozen(config: TrainConfig, source: Path, sha256: str | None = None) -> torch.nn.Module:
    """A frozen model (eval mode, no gradients) on this process's device from ``source``: a
    snapshot file (checked against ``sha256``), an exported model folder (``config.json``) or a
    training checkpoint (``state.json``); :class:`OpponentError` when it does not load."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from spiral_train.model import device

    on = device()
    try:
        if source.is_file():
            if sha256 is not None and sha256_of(source) != sha256:
                raise OpponentError(f"{source}: its sha256 is not the one the run recorded (damaged or replaced)")
            from safetensors.torch import load_file

            state = load_file(source)
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config.model.path), dtype=next(iter(state.values())).dtype)
            missing, unexpected = model.load_state_dict(state, strict=False)
            tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
            if unexpected or set(missing) - tied:
                raise OpponentError(f"{source}: weights do not fit {config.model.path} (missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]})")
            model.tie_weights()
        elif (source / "state.json").is_file():
            from spiral_train.export import trained_model

            model = trained_model(source)[0]
        else:
            model = AutoModelForCausalLM.from_pretrained(source)
    except OpponentError:
        raise
    except Exception as error:  # noqa: BLE001 - any unreadable opponent is reported the same way
        raise OpponentError(f"cannot load the frozen opponent {source}: {type(error).__name__}: {error}") from None
    dtype = torch.bfloat16 if on.type == "cuda" else torch.float32
    model = model.to(device=on, dtype=dtype).eval()
    model.requires_grad_(False)
    return model


def frozen_backend(config: TrainConfig, model: torch.nn.Module, tokenizer: Any) -> Any:
    """A transformers backend serving ``model`` with the run's batch budget."""
    from spiral_agents.llm.hf_backend import TransformersBackend

    return TransformersBackend(model, tokenizer=tokenizer, max_batch_tokens=config.generator.max_batch_tokens)
