"""Training configuration: one validated tree, YAML/TOML files, ``key.sub=value`` overrides.

The tree is pydantic: sections of the trainer are models here, and the sections that configure a
runtime object *are* that object's type, declared once where it is used: ``sampling`` is the
backends' :class:`~spiral_agents.llm.backend.SamplingConfig`, ``learner`` the learner's
:class:`~spiral_train.learner.LearnerConfig` (optimizer and loss settings), and
``rewards.invalid_move`` the envs' :class:`~spiral_envs.InvalidMovePolicy`. pydantic rather than
OmegaConf because it validates those plain dataclasses (running their own checks), has strict
types (an integer setting is not ``2.5``, ``true`` or ``"3"``), rejects NaN and infinity, and
reports the place of every error.

Everything is checked when the config is built, before any model loads: game ids and their
keyword arguments, agent specs, sampling settings, seeds, dtype names, and the range of every
number. Every field has SPIRAL's default (the paper's recipe for Qwen3-4B-Base); ``configs/``
holds the paper recipe, a LoRA recipe and the CPU demo.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import spiral_envs
from spiral_agents.arena import check_env_kwargs
from spiral_agents.llm.backend import SamplingConfig
from spiral_agents.registry import import_user_modules, make_agent, supports, unsupported_reason
from spiral_envs.registry import GAMES
from spiral_train.learner import LearnerConfig
from spiral_train.population import KINDS, SELF, is_model_folder, opponent_mix

GENERATOR_BACKENDS = ("vllm", "transformers", "vllm-server")
ASYNC_IMPORTANCE_CAP = 2.0
"""``learner.importance_cap`` where it is null and ``max_staleness`` >= 1 (TRL's default cap)."""
MAX_SEED = 2**63 - 1

RENAMED = {
    "checkpoint_every": "checkpoint.every",
    "rewards.invalid_retries": "rewards.invalid_move.retries",
    "rewards.invalid_offender": "rewards.invalid_move.offender_reward",
    "rewards.invalid_opponent": "rewards.invalid_move.opponent_reward",
}
"""Settings of earlier releases, so that an old config file gets a pointer to the new key."""


class ConfigError(ValueError):
    """A bad setting; ``str(error)`` is one line per problem, each ``<key>: <why>``."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ModelConfig(Section):
    path: str = "Qwen/Qwen3-4B-Base"
    """Model id or local directory (weights in safetensors)."""
    template: str | None = None
    """Prompt template: None (default for the model id), spiral-base, chat, chat-thinking,
    chat-no-thinking, or a format string with {observation}."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto: float32 (the learner keeps trained weights in float32 and computes in bfloat16 on
    CUDA), bfloat16 for a LoRA run's frozen base; the same on every device, so checkpoints
    load anywhere."""
    lora_rank: int = Field(0, ge=0)
    """0 trains all weights; > 0 trains LoRA adapters of this rank (peft)."""
    lora_alpha: int = Field(64, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)


class GeneratorConfig(Section):
    backend: Literal["vllm", "transformers", "vllm-server"] = "vllm"
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
    request_timeout: float = Field(600.0, gt=0)
    """vllm-server: seconds one generation request (or one weight reload) may take."""
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    max_model_len: int = Field(12800, ge=1)
    sleep_while_learning: bool = True
    sleep_level: Literal[1, 2] = 2
    """vllm, vllm-server: 2 drops the generator's weights while the learner trains (each update
    overwrites them anyway); 1 keeps a host copy of them (and copies it back on waking)."""
    request_seeds: bool = True
    """vllm: seed every generation request from the run's seed tree, so that rollouts
    reproduce; off, the engine's own random stream samples, which spares vLLM's sampler a loop
    over seeded requests at every token (faster on a GPU, where bfloat16 batches do not
    reproduce exactly anyway). The other backends always seed."""
    max_batch_tokens: int = Field(65536, ge=1)
    """transformers: most tokens (each row's prompt plus its new tokens, padded to the longest
    row) decoded together: the KV cache preallocated for one batch."""

    @model_validator(mode="after")
    def _server_needs_url(self) -> GeneratorConfig:
        if self.backend == "vllm-server" and not (self.base_url or "").startswith(
            ("http://", "https://")
        ):
            raise ValueError("base_url: must be an http(s) URL for the vllm-server backend")
        return self


class GameConfig(Section):
    id: str
    weight: float = Field(1.0, ge=0)
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of ``spiral_envs.env``: the game's variant (e.g. ``rounds``) or the
    adapter's (``max_turns``, ``invalid_move``), which win over the ``rewards`` section."""
    opponent: str | dict[str, float] = SELF
    """Who the learner plays (:mod:`spiral_train.population`): ``self``, ``initial``,
    ``population``, a model folder (exported or a checkpoint), an agent spec, or a weighted mix
    of these (``{self: 0.8, population: 0.2}``). Seats alternate."""

    @field_validator("id")
    @classmethod
    def _registered(cls, game_id: str) -> str:
        name = game_id.removeprefix("spiral/")
        if name not in GAMES:
            raise ValueError(f"unknown game {game_id!r}; registered games: {', '.join(sorted(GAMES))}")
        return name

    @model_validator(mode="after")
    def _kwargs_accepted(self) -> GameConfig:
        try:
            check_env_kwargs(self.id, self.env_kwargs)
        except ValueError as error:
            raise ValueError(f"env_kwargs: {error}") from None
        return self

    @model_validator(mode="after")
    def _opponents_known(self) -> GameConfig:
        try:
            mix = opponent_mix(self.opponent)
        except ValueError as error:
            raise ValueError(f"opponent: {error}") from None
        folders = {name: str(Path(name).expanduser().resolve()) for name in mix if name not in KINDS and is_model_folder(name)}
        if folders:  # the same folder from any worker's working directory
            opponent = self.opponent
            self.opponent = folders.get(opponent, opponent) if isinstance(opponent, str) else {folders.get(k, k): w for k, w in opponent.items()}
        for name in mix:
            if name in KINDS or name in folders:
                continue
            try:
                if not supports(name, self.id):
                    raise ValueError(unsupported_reason(name, self.id) or f"does not play {self.id}")
                make_agent(name, self.id, seed=0)
            except Exception as error:  # noqa: BLE001 - any failure to build is a bad spec
                message = error.args[0] if isinstance(error, KeyError) and error.args else error
                raise ValueError(
                    f"opponent: {name!r} is not self, initial, population, a model folder (with "
                    f"config.json or a checkpoint's state.json) or a usable agent spec: {message}"
                ) from None
        return self

    @property
    def mix(self) -> dict[str, float]:
        """The opponent setting as normalised weights."""
        return opponent_mix(self.opponent)


def _default_games() -> list[GameConfig]:
    return [GameConfig(id=g) for g in ("TicTacToe-v0", "KuhnPoker-v1", "SimpleNegotiation-v1")]


class RewardConfig(Section):
    invalid_move: spiral_envs.InvalidMovePolicy = spiral_envs.InvalidMovePolicy.spiral_training()
    """What an invalid move costs (SPIRAL: the game ends at -1.5 for the offender, +0.5)."""
    max_turns: int | None = Field(50, ge=1)
    """Turn cap (a draw); None keeps each game's own cap."""


class RAEConfig(Section):
    alpha: float = Field(0.95, ge=0, lt=1)
    update_first: bool = False
    drop_zero_advantage: bool = True


class ReasoningEvalConfig(Section):
    """A fixed subset of reasoning benchmarks run on the live policy every ``every`` steps
    (and before the first; 0 = off), through the generator (needs the ``eval`` extra)."""

    every: int = Field(0, ge=0)
    benchmarks: list[str] = Field(default_factory=lambda: ["smoke-math"], min_length=1)
    """Benchmark names of ``spiral-eval list`` (``smoke-math`` ships with the package)."""
    data: dict[str, str] = Field(default_factory=dict)
    """Local JSONL file per benchmark name, instead of the Hugging Face Hub."""
    limit: int | None = Field(None, ge=1)
    """The first this many problems of each benchmark (the same subset every time)."""
    preset: Literal["spiral", "greedy"] = "greedy"
    max_tokens: int | None = Field(None, ge=1)
    samples: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _benchmarks_known(self) -> ReasoningEvalConfig:
        if not self.every:
            return self
        try:
            from spiral_train.reasoning import BENCHMARKS
        except ImportError as error:
            raise ValueError(f"every: needs the eval extra (pip install 'spiral-selfplay[eval]'): {error}") from None
        unknown = [name for name in self.benchmarks if name not in BENCHMARKS and name not in self.data]
        if unknown:
            raise ValueError(f"benchmarks: unknown {', '.join(unknown)}; use {', '.join(BENCHMARKS)} or give data")
        return self


class EvalConfig(Section):
    every: int = Field(25, ge=0)
    """Evaluate every this many steps (and before the first); 0 = never."""
    games: int = Field(64, ge=0)
    opponents: list[str] = Field(default_factory=lambda: ["random"])
    game_ids: list[str] = Field(default_factory=lambda: ["TicTacToe-v0", "KuhnPoker-v1"])
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    kuhn_exploitability: bool = True
    reasoning: ReasoningEvalConfig = Field(default_factory=ReasoningEvalConfig)

    @field_validator("game_ids")
    @classmethod
    def _registered(cls, game_ids: list[str]) -> list[str]:
        return [GameConfig._registered(game_id) for game_id in game_ids]

    @model_validator(mode="after")
    def _opponents_resolve(self) -> EvalConfig:
        """Each opponent is built for the eval games it plays (it must play one of them)."""
        for opponent in self.opponents:
            try:
                playable = [g for g in self.game_ids if supports(opponent, g)]
                if self.game_ids and not playable:
                    raise ValueError(f"plays none of eval.game_ids ({', '.join(self.game_ids)})")
                for game_id in playable:
                    make_agent(opponent, game_id, seed=0)
            except Exception as error:  # noqa: BLE001 - any failure to build is a bad spec
                message = error.args[0] if isinstance(error, KeyError) and error.args else error
                raise ValueError(f"opponents: {opponent!r}: {message}") from None
        return self


class WarmStartConfig(Section):
    """A short supervised pass that teaches the answer format before self-play (0 = off)."""

    steps: int = Field(0, ge=0)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    targets: Literal["uniform", "random_policy"] = "uniform"
    """uniform: every target move uniformly random; random_policy: each observation its own
    random answer distribution (teaches reading the observation, no strategy)."""
    dirichlet_alpha: float = Field(3.0, gt=0)
    """random_policy: the Dirichlet concentration of each observation's distribution."""


class CheckpointConfig(Section):
    every: int = Field(50, ge=1)
    """Save every this many steps (and after the last)."""
    keep_last: int = Field(3, ge=1)
    """Checkpoints kept on disk; older ones are deleted (never the newest or ``latest``)."""


class PopulationConfig(Section):
    """The pool of past snapshots that ``population`` opponents are drawn from (used when a
    game's ``opponent`` names ``population``; see :class:`spiral_train.population.Population`)."""

    every: int = Field(5, ge=1)
    """Snapshot the policy every this many steps (and at step 0, after the warm start)."""
    size: int = Field(8, ge=1)
    """Most snapshots in the pool; each costs a copy of the weights on every generator (and
    on disk under ``<output_dir>/opponents``)."""
    replacement: Literal["fifo", "reservoir"] = "fifo"
    sampling: Literal["uniform", "latest", "rating"] = "uniform"
    """uniform; latest (weights by age rank, newest highest); rating (prioritized fictitious
    self-play: ``(1 - p) ** power``, p the learner's Elo win probability)."""
    power: float = Field(2.0, gt=0)
    floor: float = Field(0.05, ge=0, le=1)
    """rating: the least weight a member gets before normalising."""
    elo_k: float = Field(16.0, gt=0)
    """Elo's K factor for the ratings of the learner and its opponents (in the metrics)."""


class ClusterConfig(Section):
    """Where the workers run. With one learner, one generator and no ``address`` everything runs
    in this process (no Ray); otherwise on Ray (the ``distributed`` extra): ``learners`` ranks of
    one torch.distributed group with the model sharded by FSDP2, and ``generators`` rollout
    workers, each owning a backend."""

    learners: int = Field(1, ge=1)
    """Learner ranks (torch.distributed over NCCL on GPUs, gloo on the CPU)."""
    generators: int = Field(1, ge=1)
    """Generator workers; a step's games are shared between them (the same games whatever
    their number, see :mod:`spiral_train.seeds`)."""
    address: str | None = None
    """An existing Ray cluster to join (``host:port`` of its head, or ``auto``); ``local``
    starts a Ray for this run (also for one learner and one generator); None runs in this
    process, or starts a local Ray when there are several workers."""
    colocate: bool = False
    """Each learner rank and one generator share a placement bundle (a GPU: SPIRAL's layout; the
    generator sleeps while the learners train); needs ``generators == learners``. False puts
    generators and learners on separate bundles (GPUs)."""
    gpus_per_learner: float = Field(1.0, ge=0)
    """GPUs each learner rank takes (0 on a CPU-only cluster)."""
    gpus_per_generator: float = Field(1.0, ge=0)
    """GPUs each generator takes; above 1, vLLM's tensor parallelism over that many (a whole
    number)."""
    cpus_per_worker: float = Field(1.0, gt=0)
    """CPUs Ray reserves for each worker."""
    generator_restarts: int = Field(3, ge=0)
    """Times Ray restarts a generator worker that died (its games of that step are void)."""

    @property
    def uses_ray(self) -> bool:
        """Whether the workers run on Ray (else in this process)."""
        return self.learners > 1 or self.generators > 1 or self.address is not None

    @model_validator(mode="after")
    def _placeable(self) -> ClusterConfig:
        if self.colocate and self.generators != self.learners:
            raise ValueError(
                f"colocate: each learner rank shares its bundle with one generator, so generators "
                f"({self.generators}) must equal learners ({self.learners})"
            )
        if self.gpus_per_generator > 1 and not float(self.gpus_per_generator).is_integer():
            raise ValueError(
                f"gpus_per_generator: above 1 it is vLLM's tensor-parallel size, a whole number; got {self.gpus_per_generator}"
            )
        if self.colocate and self.gpus_per_generator > self.gpus_per_learner:
            raise ValueError("gpus_per_generator: a colocated generator uses its learner's GPUs; set it <= gpus_per_learner")
        return self


class TrainConfig(Section):
    imports: list[str] = Field(default_factory=list)
    """Your modules to import first, so the games and agents they register can be named
    (checked before ``games``: pydantic validates fields in order)."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    games: list[GameConfig] = Field(default_factory=_default_games, min_length=1)
    sampling: SamplingConfig = SamplingConfig()
    """How the policy samples its moves in self-play (one sample per prompt)."""
    rewards: RewardConfig = Field(default_factory=RewardConfig)
    rae: RAEConfig = Field(default_factory=RAEConfig)
    learner: LearnerConfig = LearnerConfig()
    eval: EvalConfig = Field(default_factory=EvalConfig)
    warm_start: WarmStartConfig = Field(default_factory=WarmStartConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    population: PopulationConfig = Field(default_factory=PopulationConfig)
    steps: int = Field(400, ge=1)
    samples_per_step: int = Field(128, ge=1)
    """Turn samples each policy update trains on: the rollout plays until this many turns are
    taken and the games then live are over, and this many of their turns are drawn uniformly
    (SPIRAL); turns with zero advantage are then dropped (``rae.drop_zero_advantage``)."""
    max_staleness: int = Field(0, ge=0)
    """0: synchronous (the generators wait while the learners train and the other way round).
    k >= 1: generation and learning overlap (on Ray, generators on their own workers): the
    generators play up to k steps ahead and take each update's weights between generate calls;
    a turn played by weights more than k updates behind the learner is not trained on. Turns
    are then weighted toward the learner by the truncated importance weight of
    ``learner.importance_cap`` (``ASYNC_IMPORTANCE_CAP`` where null), and the generators never
    sleep (``generator.sleep_while_learning`` is set false)."""
    train_all_turns: bool = False
    """Train on every turn of the step's games instead of drawing ``samples_per_step`` of them
    (the behaviour before: 2-10 times as many turns per update)."""
    concurrency: int = Field(128, ge=1)
    output_dir: str = Field("runs/spiral", min_length=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    tensorboard: bool = True
    wandb_project: str | None = None
    build_tiny_model: bool = False
    """Build the tiny offline Qwen3 at ``model.path`` first if it is not there (CPU demo)."""
    tiny_model_init: float = Field(0.02, gt=0, le=1)
    """With ``build_tiny_model``: the standard deviation of its initial weights (Qwen3's 0.02;
    the CPU demo's 0.1 lets the 64-wide model learn to read its card in its warm start)."""

    @field_validator("imports")
    @classmethod
    def _import(cls, names: list[str]) -> list[str]:
        import_user_modules(names)
        return names

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.sampling.n != 1:
            raise ValueError("sampling.n: self-play samples one move per prompt; set 1")
        try:
            replace(self.sampling, temperature=self.eval.temperature, top_p=self.eval.top_p)
        except ValueError as error:
            raise ValueError(f"eval: {error}") from None
        if self.generator.backend == "vllm-server" and self.cluster.generators > 1:
            raise ValueError("cluster.generators: a vllm-server generator is the one running server; set 1")
        if self.learner.kl_reference_every and not self.learner.kl_coef:
            raise ValueError("learner.kl_reference_every: it moves the KL penalty's reference; set learner.kl_coef > 0 (or 0 here)")
        if self.learner.kl_reference_every and self.model.lora_rank:
            raise ValueError(
                "learner.kl_reference_every: with LoRA the KL reference is the base model with the "
                "adapters off, which cannot move; train all weights (model.lora_rank=0) or set 0"
            )
        if self.max_staleness:
            self._overlapped()
        return self

    def opponents(self) -> set[str]:
        """Every opponent name the games' mixes use."""
        return {name for game in self.games for name in game.mix}

    def _overlapped(self) -> None:
        """``max_staleness`` >= 1: the placements that cannot overlap are errors; the
        importance weight and no sleeping are the defaults."""
        if self.cluster.colocate:
            raise ValueError(
                "max_staleness: colocated placement cannot overlap generation and learning (each "
                "generator shares its learner's GPU and sleeps while it trains); set "
                "cluster.colocate=false or max_staleness=0"
            )
        if not self.cluster.uses_ray:
            raise ValueError(
                "max_staleness: in one process the generator plays with the learner's own model, "
                "so the two cannot overlap; put them on Ray workers (cluster.address=local on "
                "this machine) or set max_staleness=0"
            )
        if self.learner.importance_cap is None:
            self.learner = replace(self.learner, importance_cap=ASYNC_IMPORTANCE_CAP)
        if self.generator.sleep_while_learning:
            self.generator = self.generator.model_copy(update={"sleep_while_learning": False})

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON data (what checkpoints and ``--print-config`` show)."""
        return self.model_dump(mode="json")


# --- files and overrides ------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.1 with YAML 1.2 numbers: ``1e-3`` is a float (PyYAML reads it as a string)."""


_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$")
_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def read_file(path: str | Path) -> dict[str, Any]:
    """Settings from a YAML (.yaml/.yml) or TOML (.toml) file; ConfigError when unreadable."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config: {path} is a directory, not a config file")
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"config: {path}: config files must be .yaml, .yml or .toml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config: cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    try:
        loaded = tomllib.loads(text) if path.suffix == ".toml" else _yaml(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config: {path}: TOML syntax error: {error}") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(error, "problem", None) or error
        raise ConfigError(f"config: {path}: YAML syntax error{line}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config: {path}: the top level must be a mapping of settings")
    return loaded


def _merge(base: Any, update: Any) -> Any:
    """``update`` over ``base``: mappings merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(update, dict):
        merged = dict(base)
        for key, value in update.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return update


def _parse_value(text: str) -> Any:
    """A command-line value: TOML where it parses (``nan``, inline tables), else YAML
    (``[random, minimax]``, ``null``), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return _yaml(text)
    except yaml.YAMLError:
        return text


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply ``key.sub=value`` to nested settings; a number in the path indexes a list
    (``games.0.id=Nim-v0``). The value is read as YAML (``[random, minimax]`` is a list)."""
    key, eq, text = override.partition("=")
    parts = key.strip().split(".")
    if not eq or not all(part.strip() for part in parts):
        raise ConfigError(f"override {override!r}: must look like section.key=value")
    value = _parse_value(text.strip())
    node: Any = data
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) > len(node):
                raise ConfigError(f"{where}: no item {part} in a list of {len(node)}")
            if int(part) == len(node):
                node.append({})
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"{'.'.join(parts[:depth])}: is a single value, not a section")


_INNER_KEY = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*): (.*)$", re.DOTALL)


def _key(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location) or "config"


def _problems(error: ValidationError) -> list[str]:
    lines = []
    for problem in error.errors():
        key = _key(tuple(problem["loc"]))
        message = problem["msg"].removeprefix("Value error, ")
        inner = _INNER_KEY.match(message)  # a validator's "field: why" names a deeper key
        if inner and problem["type"] == "value_error":
            key = inner[1] if key == "config" else f"{key}.{inner[1]}"
            message = inner[2]
        if problem["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            message = "unknown setting"
            if key in RENAMED:
                message += f" (now {RENAMED[key]})"
        elif problem["type"] in ("model_type", "dataclass_type", "model_attributes_type", "dataclass_args_type"):
            message = f"expected a table of settings, got {problem['input']!r}"
        elif "input" in problem and problem["type"] not in ("value_error", "assertion_error"):
            message += f", got {problem['input']!r}"
        lines.append(f"{key}: {message}")
    return lines


def build_config(data: dict[str, Any]) -> TrainConfig:
    """Validate plain settings into a :class:`TrainConfig`, or raise :class:`ConfigError`."""
    try:
        text = json.dumps(data)
    except (TypeError, ValueError) as error:  # e.g. a YAML date: not a setting's type
        raise ConfigError(f"config: not plain data: {error}") from None
    try:
        return TrainConfig.model_validate_json(text)
    except ValidationError as error:
        raise ConfigError("\n".join(_problems(error))) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the file's settings, then ``overrides``; validated."""
    data = _merge(TrainConfig().to_dict(), read_file(path)) if path else TrainConfig().to_dict()
    for override in overrides or []:
        apply_override(data, override)
    return build_config(data)
