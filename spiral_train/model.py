"""The trained model: loading (LoRA-wrapped when asked), the weights its generator serves, the
frozen reference of a KL penalty, and the tokens that end a turn.

Precision: the weights the learner trains are float32 (its master copy; see
:class:`spiral_train.learner.Learner`), whatever the checkpoint on disk holds; on CUDA the
learner computes in bfloat16 under autocast. A LoRA run keeps its frozen base in bfloat16 (its
adapters are float32). These dtypes do not depend on the device, so a checkpoint written on a
GPU loads on a CPU-only machine and back. A generator gets the weights in its own dtype (vLLM
casts them as it loads them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from spiral_agents.llm import attention

if TYPE_CHECKING:
    from spiral_train.config import TrainConfig

TURN_END_TOKENS = ("<|im_end|>", "<|endoftext|>")
"""ChatML's end of a turn and Qwen's end of text: a policy turn stops at either."""


def device() -> torch.device:
    """Where the trainer runs: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_dtype(config: TrainConfig) -> torch.dtype:
    """The dtype the model loads in, on any device: ``model.dtype``, where ``auto`` is float32,
    or bfloat16 for a LoRA run's frozen base. The learner upcasts whatever it trains to float32,
    so loading a fully trained model in float32 only avoids a rounding on the way."""
    name = config.model.dtype
    if name == "auto":
        name = "bfloat16" if config.model.lora_rank else "float32"
    return getattr(torch, name)


def load_model(config: TrainConfig) -> tuple[torch.nn.Module, Any]:
    """Tokenizer and trainable model (LoRA-wrapped when ``model.lora_rank > 0``), on
    :func:`device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    on = device()
    tokenizer = AutoTokenizer.from_pretrained(config.model.path)
    model = AutoModelForCausalLM.from_pretrained(
        config.model.path, dtype=load_dtype(config), **_attention_kwargs(on)
    ).to(on)
    if config.model.lora_rank:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.model.lora_rank,
            lora_alpha=config.model.lora_alpha,
            lora_dropout=config.model.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    model.eval()
    return model, tokenizer


def upcast_trained(model: torch.nn.Module) -> None:
    """Make the parameters ``model`` trains (``requires_grad``) float32 in place: the learner's
    master weights, whatever dtype the model was loaded in (a frozen LoRA base keeps its own)."""
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.is_floating_point() and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()


def _attention_kwargs(on: torch.device) -> dict[str, str]:
    # On the CPU, grouped-query attention without copying key/value heads (same results).
    return {"attn_implementation": attention.register()} if on.type == "cpu" else {}


def is_lora(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a peft model with LoRA adapters."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    return isinstance(model, PeftModel) and any(isinstance(m, LoraLayer) for m in model.modules())


@torch.no_grad()
def generator_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full model's weights under the base model's names, for a generator.

    Without LoRA these are the model's own tensors (no copy). With LoRA each adapted layer's
    weight is built out of place, ``(W.float() + delta.float()).to(W.dtype)`` (one rounding),
    and the frozen base ``W`` is never written: it stays bit-identical however many times the
    weights are synced (peft's merge/unmerge in place would round twice per sync).
    """
    if not is_lora(model):
        return model.state_dict()
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            weight = module.get_base_layer().weight
            total = weight.detach().float()
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    total = total + module.get_delta_weight(adapter).float()
            merged[f"{name}.base_layer.weight"] = total.to(weight.dtype)
    return {
        key.replace(".base_layer", ""): merged.get(key, value).detach()
        for key, value in base.state_dict().items()
        if "lora_" not in key
    }


class FrozenReference:
    """The policy a KL penalty pulls toward: the weights self-play started from (after the warm
    start, :meth:`start_from`).

    With LoRA it is the trained model with its adapters disabled (no second copy). Otherwise
    it is a separate copy of the starting weights that waits on the CPU (in bfloat16 when
    training on CUDA) and visits the learner's device only for its log-prob pass
    (:meth:`on`), so that it takes no GPU memory through the rollout.
    """

    def __init__(self, module: torch.nn.Module, adapters_of: bool = False) -> None:
        self.module = module.eval()
        self.adapters_of = adapters_of
        if not adapters_of:
            module.requires_grad_(False)

    @classmethod
    def of(cls, config: TrainConfig, model: torch.nn.Module) -> FrozenReference:
        """The reference for ``model``, loaded from ``config.model.path`` unless LoRA."""
        if is_lora(model):
            return cls(model, adapters_of=True)
        from transformers import AutoModelForCausalLM

        on = device()
        dtype = torch.bfloat16 if on.type == "cuda" else load_dtype(config)
        module = AutoModelForCausalLM.from_pretrained(config.model.path, dtype=dtype, **_attention_kwargs(on))
        return cls(module)

    def start_from(self, state: dict[str, torch.Tensor]) -> None:
        """Make ``state`` (the trained model's full weights) the reference: the policy after the
        warm start, not the model before it. A LoRA reference stays the adapter-free base."""
        if self.adapters_of:
            return
        missing, unexpected = self.module.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"} if getattr(self.module.config, "tie_word_embeddings", False) else set()
        if unexpected or set(missing) - tied:
            raise ValueError(f"the reference's weights do not fit (missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]})")

    @contextlib.contextmanager
    def on(self, where: torch.device) -> Iterator[torch.nn.Module]:
        """The reference module on ``where`` for the duration of the block."""
        if self.adapters_of:
            with self.module.disable_adapter():
                yield self.module
            return
        home = next(self.module.parameters()).device
        self.module.to(where)
        try:
            yield self.module
        finally:
            self.module.to(home)


def turn_stop_ids(tokenizer: Any) -> tuple[int, ...]:
    """Ids of :data:`TURN_END_TOKENS` the tokenizer has as special tokens.

    Qwen3 base models name ``<|endoftext|>`` as the end of generation in ``config.json`` and
    ``generation_config.json`` and ``<|im_end|>`` only in ``tokenizer_config.json``; a ChatML
    turn ends at ``<|im_end|>``, so both are stop tokens of every policy turn here, whatever
    those files say.
    """
    special = set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {}))
    ids = [tokenizer.convert_tokens_to_ids(token) for token in TURN_END_TOKENS if token in special]
    return tuple(sorted({int(i) for i in ids if i is not None and i >= 0}))
