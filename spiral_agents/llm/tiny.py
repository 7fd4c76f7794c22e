"""Build a tiny, randomly initialised Qwen3 (tokenizer + model) offline, for tests and CPU demos.

The real Qwen3 architecture at toy size: a byte-level BPE trained on the games' own text with
Qwen's special tokens and a ChatML chat template, and ``Qwen3ForCausalLM`` with hidden size 64,
2 layers, 4 attention heads, 2 KV heads, head_dim 32 and tied embeddings. It loads through the
same ``from_pretrained`` path as ``Qwen/Qwen3-4B-Base``, in transformers and in vLLM.

    python -m spiral_agents.llm.tiny artifacts/tiny-qwen3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% endif %}{% endif %}"
)


def game_corpus(games_per_id: int = 40, seed: int = 0) -> list[str]:
    """Text the tokenizer learns from: every game's observations and typical answers."""
    import spiral_envs

    rng = np.random.default_rng(seed)
    texts = [
        "Let me think step by step. The best move is \\boxed{4}.",
        "<think>\nI should check the legal moves first.\n</think>\n\nFinal answer: \\boxed{[bet]}",
        "I will offer a trade. \\boxed{[Offer: 3 Wood -> 2 Gold]} \\boxed{[Accept]} \\boxed{[Deny]}",
        "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 [0] [1] [2] [3] [4] [5] [6] [7] [8]",
    ]
    for game_id in sorted(spiral_envs.GAMES):
        env = spiral_envs.env(game_id)
        for game in range(games_per_id):
            env.reset(seed=seed + game)
            while not (env.terminations[env.agent_selection] or env.truncations[env.agent_selection]):
                texts.append(env.observe(env.agent_selection)["text"])
                move = env.game_state.random_move(rng)
                texts.append(move if isinstance(move, str) else env.game.actions[move])
                env.step(move)
    return texts


def build_tokenizer(vocab_size: int = 2048, seed: int = 0):
    """A byte-level BPE with Qwen's special tokens, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(game_corpus(seed=seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<think>", "</think>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_qwen3(path: str | Path, seed: int = 0, vocab_size: int = 2048, initializer_range: float = 0.02) -> Path:
    """Write tokenizer and randomly initialised weights (safetensors) to ``path``; the weights
    are drawn with standard deviation ``initializer_range`` (Qwen3's 0.02 by default)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen3Config

    path = Path(path)
    tokenizer = build_tokenizer(vocab_size, seed)
    padded_vocab = -(-len(tokenizer) // 64) * 64
    config = Qwen3Config(
        vocab_size=padded_vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=[config.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=config.pad_token_id,
    )
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    model.save_pretrained(path, safe_serialization=True)
    settings = {"seed": seed, "vocab_size": vocab_size, "initializer_range": initializer_range}
    (path / "spiral_tiny.json").write_text(json.dumps(settings))
    return path


def ensure_tiny_qwen3(path: str | Path, seed: int = 0, initializer_range: float = 0.02) -> Path:
    """Build the tiny model at ``path`` unless a complete one is already there (that one is
    used as it is, whatever its seed and initialisation)."""
    path = Path(path)
    if not (path / "spiral_tiny.json").exists():
        build_tiny_qwen3(path, seed=seed, initializer_range=initializer_range)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="artifacts/tiny-qwen3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--initializer-range", type=float, default=0.02)
    args = parser.parse_args()
    print(f"tiny Qwen3 written to {build_tiny_qwen3(args.path, seed=args.seed, initializer_range=args.initializer_range)}")


if __name__ == "__main__":
    main()
