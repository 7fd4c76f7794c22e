"""Training configuration: typed sections, YAML/TOML files, ``key.sub=value`` overrides.

Every field has SPIRAL's default (the paper's recipe for Qwen3-4B-Base); ``configs/`` holds
the paper recipe, a LoRA recipe and the CPU demo. Unknown keys and bad values are errors that
name the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ModelConfig:
    path: str = "Qwen/Qwen3-4B-Base"
    """Model id or local directory (weights in safetensors)."""
    template: str | None = None
    """Prompt template: None (default for the model id), spiral-base, chat, chat-thinking,
    chat-no-thinking, or a format string with {observation}."""
    dtype: str = "auto"
    lora_rank: int = 0
    """0 trains all weights; > 0 trains LoRA adapters of this rank (peft)."""
    lora_alpha: int = 64
    lora_dropout: float = 0.0


GENERATOR_BACKENDS = ("vllm", "transformers", "vllm-server")


@dataclass
class GeneratorConfig:
    backend: str = "vllm"
    """vllm (in-process, weights updated in place), transformers (shares the learner's
    module), or vllm-server (a running vLLM server that reloads each update's weights from a
    saved checkpoint; start it with VLLM_SERVER_DEV_MODE=1)."""
    base_url: str | None = None
    """vllm-server: the server's API root, e.g. http://127.0.0.1:8000/v1."""
    served_model_name: str | None = None
    """vllm-server: the model name the server answers to (default: model.path)."""
    weights_dir: str | None = None
    """vllm-server: where weight checkpoints for the server are written (default:
    <output_dir>/served-weights); the server must see the same path."""
    request_timeout: float = 600.0
    """vllm-server: seconds one generation request (or one weight reload) may take."""
    gpu_memory_utilization: float = 0.5
    max_model_len: int = 12800
    sleep_while_learning: bool = True


@dataclass
class GameConfig:
    id: str
    weight: float = 1.0
    env_kwargs: dict[str, Any] = field(default_factory=dict)


def _default_games() -> list[GameConfig]:
    return [GameConfig("TicTacToe-v0"), GameConfig("KuhnPoker-v1"), GameConfig("SimpleNegotiation-v1")]


@dataclass
class SamplingSection:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 4096


@dataclass
class RewardConfig:
    invalid_retries: int = 0
    invalid_offender: float = -1.5
    invalid_opponent: float = 0.5
    max_turns: int | None = 50
    """Turn cap (a draw); None keeps each game's own cap."""


@dataclass
class RAEConfig:
    alpha: float = 0.95
    update_first: bool = False
    drop_zero_advantage: bool = True


@dataclass
class LearnerSection:
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    epochs: int = 2
    minibatches: int = 1
    micro_batch_size: int = 4
    max_grad_norm: float = 1.0
    clip: float = 0.2
    normaliser: float = 4096.0
    importance_cap: float | None = None
    kl_coef: float = 0.0
    bf16: bool = True
    gradient_checkpointing: bool = True


@dataclass
class EvalConfig:
    every: int = 25
    games: int = 64
    opponents: list[str] = field(default_factory=lambda: ["random"])
    game_ids: list[str] = field(default_factory=lambda: ["TicTacToe-v0", "KuhnPoker-v1"])
    temperature: float = 0.6
    top_p: float = 0.95
    kuhn_exploitability: bool = True


@dataclass
class WarmStartConfig:
    """A short supervised pass that teaches the answer format before self-play (0 = off)."""

    steps: int = 0
    learning_rate: float = 1e-3
    batch_size: int = 32


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    games: list[GameConfig] = field(default_factory=_default_games)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    rae: RAEConfig = field(default_factory=RAEConfig)
    learner: LearnerSection = field(default_factory=LearnerSection)
    eval: EvalConfig = field(default_factory=EvalConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    steps: int = 400
    samples_per_step: int = 128
    """Turn samples gathered for each policy update."""
    concurrency: int = 128
    checkpoint_every: int = 50
    output_dir: str = "runs/spiral"
    seed: int = 0
    tensorboard: bool = True
    wandb_project: str | None = None
    build_tiny_model: bool = False
    """Build the tiny offline Qwen3 at ``model.path`` first if it is not there (CPU demo)."""

    def validate(self) -> TrainConfig:
        """Raise ValueError naming the first bad value."""
        checks = [
            (self.steps >= 1, "steps must be at least 1"),
            (self.samples_per_step >= 1, "samples_per_step must be at least 1"),
            (self.concurrency >= 1, "concurrency must be at least 1"),
            (self.checkpoint_every >= 1, "checkpoint_every must be at least 1"),
            (self.generator.backend in GENERATOR_BACKENDS, f"generator.backend must be one of {', '.join(GENERATOR_BACKENDS)}"),
            (self.generator.backend != "vllm-server" or (self.generator.base_url or "").startswith(("http://", "https://")), "generator.base_url must be an http(s) URL for the vllm-server backend"),
            (self.generator.request_timeout > 0, "generator.request_timeout must be positive"),
            (self.learner.learning_rate > 0, "learner.learning_rate must be positive"),
            (self.learner.epochs >= 1, "learner.epochs must be at least 1"),
            (self.learner.micro_batch_size >= 1, "learner.micro_batch_size must be at least 1"),
            (0 < self.learner.clip < 1, "learner.clip must lie in (0, 1)"),
            (self.learner.normaliser > 0, "learner.normaliser must be positive"),
            (0 <= self.rae.alpha < 1, "rae.alpha must lie in [0, 1)"),
            (self.sampling.temperature >= 0, "sampling.temperature must be >= 0"),
            (0 < self.sampling.top_p <= 1, "sampling.top_p must lie in (0, 1]"),
            (self.sampling.max_tokens >= 1, "sampling.max_tokens must be at least 1"),
            (bool(self.games), "games must list at least one game"),
            (self.model.lora_rank >= 0, "model.lora_rank must be >= 0"),
            (self.rewards.invalid_retries >= 0, "rewards.invalid_retries must be >= 0"),
            (self.eval.every >= 0 and self.eval.games >= 0, "eval.every and eval.games must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        import spiral_envs

        for game in self.games:
            if game.weight < 0:
                raise ValueError(f"games: weight of {game.id} must be >= 0")
            spiral_envs.make_game(game.id, **{k: v for k, v in game.env_kwargs.items() if k not in ("max_turns", "invalid_move", "render_mode")})
        return self


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Convert a parsed config value to the annotated type, or raise naming ``key``."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ValueError:
                continue
        raise ValueError(f"{key}: {value!r} is not a valid {kind}")
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a table of settings, got {value!r}")
        return _build(kind, value, key)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a table, got {value!r}")
        return dict(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{key}: expected a number, got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{key}: expected a string, got {value!r}")
    if kind is typing.Any:
        return value
    raise ValueError(f"{key}: unsupported setting type {kind}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ValueError(f"unknown setting(s){where}: {', '.join(sorted(unknown))}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def _parse_scalar(text: str) -> Any:
    """A command-line value: TOML scalar/array syntax where it parses, else a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply ``section.key=value`` to a nested settings dict."""
    key, eq, value = override.partition("=")
    if not eq or not key.strip():
        raise ValueError(f"override {override!r} must look like section.key=value")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {override!r}: {part} is not a section")
    node[parts[-1]] = _parse_scalar(value.strip())


def read_file(path: str | Path) -> dict[str, Any]:
    """Settings from a YAML (.yaml/.yml) or TOML (.toml) file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        return tomllib.loads(text)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: the top level must be a mapping of settings")
        return loaded
    raise ValueError(f"{path}: config files must be .yaml, .yml or .toml")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the file's settings, then ``overrides``; validated."""
    data = read_file(path) if path else {}
    for override in overrides or []:
        apply_override(data, override)
    return _build(TrainConfig, data).validate()


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
