"""The generator backends a training run can use, by name (``generator.backend``).

Each entry builds a backend from the run's config; ``module`` is the learner's own model when
the generator runs in the learner's process and may share it (None on a separate worker). A
backend that serves ``module`` itself needs no weight sync (:func:`shares_module`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from spiral_train.config import TrainConfig

BackendFactory = Callable[["TrainConfig", "torch.nn.Module | None", Any], Any]
BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Register a generator backend factory ``(config, module, tokenizer) -> backend``."""

    def register(factory: BackendFactory) -> BackendFactory:
        BACKENDS[name] = factory
        return factory

    return register


def build_backend(config: TrainConfig, module: torch.nn.Module | None, tokenizer: Any) -> Any:
    """The backend ``config.generator.backend`` names."""
    try:
        factory = BACKENDS[config.generator.backend]
    except KeyError:
        raise ValueError(f"unknown generator backend {config.generator.backend!r}; known: {', '.join(BACKENDS)}") from None
    return factory(config, module, tokenizer)


def shares_module(backend: Any, module: torch.nn.Module | None) -> bool:
    """Whether ``backend`` generates with ``module`` itself (its weights are always current)."""
    return module is not None and getattr(backend, "model", None) is module


@register_backend("transformers")
def _transformers(config: TrainConfig, module: torch.nn.Module | None, tokenizer: Any) -> Any:
    from spiral_agents.llm.hf_backend import TransformersBackend

    source = module if module is not None else config.model.path
    return TransformersBackend(source, tokenizer=tokenizer, max_batch_tokens=config.generator.max_batch_tokens)


@register_backend("vllm")
def _vllm(config: TrainConfig, module: torch.nn.Module | None, tokenizer: Any) -> Any:
    from spiral_agents.llm.vllm_backend import VLLMBackend

    g = config.generator
    tensor_parallel = int(config.cluster.gpus_per_generator) if config.cluster.gpus_per_generator > 1 else 1
    return VLLMBackend(
        config.model.path,
        gpu_memory_utilization=g.gpu_memory_utilization,
        max_model_len=g.max_model_len,
        seed=config.seed,
        enable_sleep_mode=g.sleep_while_learning,
        request_seeds=g.request_seeds,
        **({"tensor_parallel_size": tensor_parallel} if tensor_parallel > 1 else {}),
    )


@register_backend("vllm-server")
def _vllm_server(config: TrainConfig, module: torch.nn.Module | None, tokenizer: Any) -> Any:
    from transformers import AutoConfig

    from spiral_agents.llm.vllm_server import VLLMServerBackend

    g = config.generator
    return VLLMServerBackend(
        g.base_url,
        g.served_model_name or config.model.path,
        tokenizer,
        g.weights_dir or Path(config.output_dir) / "served-weights",
        concurrency=config.concurrency,
        timeout=g.request_timeout,
        reload_timeout=g.request_timeout,
        vocab_size=AutoConfig.from_pretrained(config.model.path).vocab_size,
    )
