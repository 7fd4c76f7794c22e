"""``"sdpa_gqa"``: transformers' SDPA attention that keeps grouped-query attention with a mask.

transformers' ``"sdpa"`` copies every key/value head ``num_key_value_groups`` times whenever
an attention mask is given (PyTorch's CUDA kernels fall back to the slow path for a masked
GQA call). A batched generation always has a padding mask, so on the CPU each decoding step
copied the whole KV cache. PyTorch's CPU kernels take ``enable_gqa=True`` with a mask at full
speed and give the same result, so :class:`~spiral_agents.llm.hf_backend.TransformersBackend`
loads models on the CPU with this implementation.
"""

from __future__ import annotations

from typing import Any

NAME = "sdpa_gqa"


def sdpa_gqa_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Attention with key/value heads shared by query groups, without copying them."""
    import torch

    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    output = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=query.shape[2] > 1 and attention_mask is None and causal,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return output.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register ``"sdpa_gqa"`` (with SDPA's mask format) with transformers; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, sdpa_gqa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
