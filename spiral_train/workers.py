"""The two worker roles of a training run, plain classes that run in the controller's process or
as Ray actors unchanged (:mod:`spiral_train.cluster` places them).

- :class:`GeneratorWorker` owns one backend and plays the episodes it is given with the rollout
  engine (and the evaluation games). In asynchronous training its weights arrive while it plays
  (:meth:`GeneratorWorker.offer_weights`, from a second thread) and are loaded at the engine's
  next safe point between generate calls.
- :class:`LearnerWorker` is one learner rank: the trained model (sharded with FSDP2 when there
  are several ranks), its optimizer, the warm start and the exact Kuhn evaluation. Every rank
  is called with the same arguments; the collective methods must be called on all of them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from spiral_agents.arena import GameRecord
from spiral_agents.llm.prompts import PromptTemplate, make_template
from spiral_agents.llm.rollout import LLMPolicy, Matchup, RolloutEngine, TurnSample
from spiral_agents.registry import import_user_modules
from spiral_train import seeds
from spiral_train.backends import build_backend, shares_module
from spiral_train.config import TrainConfig
from spiral_train.learner import Learner, nonfinite_parameters
from spiral_train.model import FrozenReference, generator_weights, load_model, turn_stop_ids
from spiral_train.population import INITIAL, LEARNER, POPULATION, SELF, Entry, is_model_folder


@dataclass
class Played:
    """What a generator played of a step: its games' turns and records, and its backend calls."""

    samples: list[TurnSample]
    games: list[GameRecord]
    generation_calls: int
    seconds: float
    """Time the worker spent playing them."""
    idle_seconds: float = 0.0
    """Time the worker waited between its previous play call and this one."""


def training_matchups(config: TrainConfig, policy: LLMPolicy, plan: list[Entry] | None = None, opponents: dict[str, LLMPolicy] | None = None) -> list[Matchup]:
    """The training games with the run's reward settings: the policy against itself in every
    game, or the matchups of an opponent ``plan`` (frozen opponents from ``opponents``, agent
    specs as they are)."""
    kwargs = []
    for game in config.games:
        env_kwargs: dict[str, Any] = {"invalid_move": config.rewards.invalid_move}
        if config.rewards.max_turns is not None:
            env_kwargs["max_turns"] = config.rewards.max_turns
        env_kwargs.update(game.env_kwargs)
        kwargs.append(env_kwargs)
    if plan is None:
        return [Matchup(game.id, (policy, policy), game.weight, env) for game, env in zip(config.games, kwargs)]
    opponents = opponents or {}
    matchups = []
    for entry in plan:
        if entry.name in (INITIAL, *opponents) or entry.kind in (INITIAL, POPULATION) or is_model_folder(entry.name):
            if entry.name not in opponents:
                raise KeyError(f"the frozen opponent {entry.name!r} is not served by this generator (served: {', '.join(opponents) or 'none'})")
            other = opponents[entry.name]
        else:
            other = policy if entry.name == SELF else entry.name
        matchups.append(Matchup(config.games[entry.game].id, (policy, other), entry.weight, kwargs[entry.game]))
    return matchups


def policy_template(config: TrainConfig) -> PromptTemplate:
    return make_template(config.model.template, config.model.path)


class GeneratorWorker:
    """A backend and the rollout engine over the episodes the controller gives it.

    ``module`` is the learner's model when this worker runs in the learner's process: a
    transformers backend then generates with it directly (no weight copies at all).
    """

    def __init__(self, config: TrainConfig, module: torch.nn.Module | None = None, tokenizer: Any = None) -> None:
        import_user_modules(config.imports)
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(config.model.path)
        self.config = config
        self.backend = build_backend(config, module, tokenizer)
        self.shares_weights = shares_module(self.backend, module)
        """Whether the backend generates with the learner's own module (never synced)."""
        stops = sorted({*config.sampling.stop_token_ids, *turn_stop_ids(tokenizer)})
        sampling = replace(config.sampling, stop_token_ids=tuple(stops))
        version = 0 if config.max_staleness else None  # counted in asynchronous training
        self.policy = LLMPolicy(self.backend, policy_template(config), sampling, name=LEARNER, version=version)
        self.matchups = training_matchups(config, self.policy)
        self._offered: tuple[dict[str, torch.Tensor], int] | None = None
        """Weights and their version that arrived while playing, not loaded yet."""
        self._offer_lock = threading.Lock()
        self._last_play_end: float | None = None
        self.tokenizer = tokenizer
        self.opponents: dict[str, LLMPolicy] = {}
        """Frozen LLM opponents by name (model folders of the config, snapshots added later)."""
        for name in sorted(config.opponents()):
            if is_model_folder(name):
                self.add_frozen(name, Path(name))

    def ping(self) -> int:
        """This worker's process id (a cheap call that tells the worker is up)."""
        return os.getpid()

    def shares_learner_module(self) -> bool:
        return self.shares_weights

    def add_frozen(self, name: str, source: Path, sha256: str | None = None) -> None:
        """Serve a frozen opponent ``name`` from a snapshot file or a model folder
        (:func:`spiral_train.opponents.load_frozen`)."""
        from spiral_train.opponents import frozen_backend, load_frozen

        model = load_frozen(self.config, source, sha256)
        backend = frozen_backend(self.config, model, self.tokenizer)
        self.opponents[name] = LLMPolicy(backend, self.policy.template, self.policy.sampling, name=name)

    def remove_frozen(self, name: str) -> None:
        self.opponents.pop(name, None)

    def frozen(self) -> list[str]:
        """The names of the frozen opponents this worker serves."""
        return sorted(self.opponents)

    def play(self, step: int, episodes: list[int], plan: list[Entry] | None = None) -> Played:
        """Play ``episodes`` of ``step`` (their seeds come from the seed tree) to their ends:
        self-play, or the matchups of an opponent ``plan``."""
        start = time.perf_counter()
        idle = 0.0 if self._last_play_end is None else start - self._last_play_end
        matchups = self.matchups if plan is None else training_matchups(self.config, self.policy, plan, self.opponents)
        engine = RolloutEngine(
            matchups, concurrency=self.config.concurrency, seed=seeds.games_root(self.config.seed, step), safe_point=self.take_offered_weights
        )
        rollout = engine.run(episodes=episodes)
        self._last_play_end = time.perf_counter()
        return Played(rollout.samples, rollout.games, engine.generation_calls, self._last_play_end - start, idle)

    def update_weights(self, state: dict[str, torch.Tensor]) -> int:
        """Load the learner's weights (base names, LoRA merged); returns the bytes received."""
        if not self.shares_weights:
            self.backend.update_weights(state)
        return sum(t.numel() * t.element_size() for t in state.values())

    def offer_weights(self, state: dict[str, torch.Tensor], version: int) -> int:
        """Keep ``state`` (the weights of update ``version``) for the next safe point between
        generate calls; a newer offer replaces one not loaded yet. Runs beside :meth:`play`
        (Ray: the actor's ``weights`` concurrency group). Returns the bytes received."""
        with self._offer_lock:
            self._offered = (state, version)
        return sum(t.numel() * t.element_size() for t in state.values())

    def take_offered_weights(self) -> None:
        """Load the weights offered since the last safe point, if any, and count their version
        (called by the rollout engine between generate calls and before evaluations)."""
        if self._offered is None:
            return
        with self._offer_lock:
            state, version = self._offered
            self._offered = None
        self.update_weights(state)
        self.policy.version = version

    def sleeps(self) -> bool:
        """Whether the backend gives its memory back while the learners train."""
        return self.config.generator.sleep_while_learning and callable(getattr(self.backend, "sleep", None))

    def sleep(self) -> None:
        if self.sleeps():
            self.backend.sleep(level=self.config.generator.sleep_level)

    def wake_up(self, tags: list[str]) -> None:
        if self.sleeps():
            self.backend.wake_up(tags=tags)

    def evaluation_games(self) -> list[GameRecord]:
        """The policy against ``eval.opponents`` (seeded from the seed tree, every request
        seeded), each game in its training variant."""
        from spiral_agents.llm.agent import evaluate

        self.take_offered_weights()
        e = self.config.eval
        sampling = replace(self.policy.sampling, temperature=e.temperature, top_p=e.top_p)
        policy = LLMPolicy(self.backend, self.policy.template, sampling, name="policy")
        trained = {g.id: g.env_kwargs for g in self.config.games}
        seed = seeds.derived_seed(self.config.seed, seeds.EVALUATION)
        records: list[GameRecord] = []
        with seeded_requests(self.backend):
            for game_id in e.game_ids:
                records += evaluate(policy, e.opponents, [game_id], e.games, concurrency=self.config.concurrency, seed=seed, env_kwargs=trained.get(game_id))
        return records

    def evaluate_reasoning(self, problems: list[Any], folder: Path) -> dict[str, float]:
        """``eval.reasoning``'s protocol on ``problems``, outputs under ``folder``."""
        from spiral_train.reasoning import PRESETS, evaluate_reasoning

        self.take_offered_weights()
        settings = self.config.eval.reasoning
        protocol = PRESETS[settings.preset].with_overrides(max_tokens=settings.max_tokens, samples=settings.samples)
        with seeded_requests(self.backend):
            results = evaluate_reasoning(self.backend, self.policy.template, problems, protocol, output_dir=folder)
        return results.metrics("eval/reasoning")


@contextlib.contextmanager
def seeded_requests(backend: Any) -> Iterator[None]:
    """Within the block the backend seeds every request (reproducible evaluations), also
    where training generates without per-request seeds (``generator.request_seeds``)."""
    if not hasattr(backend, "request_seeds"):
        yield
        return
    training, backend.request_seeds = backend.request_seeds, True
    try:
        yield
    finally:
        backend.request_seeds = training


class LearnerWorker:
    """One learner rank. ``rank`` and ``world_size`` > 1 join the torch.distributed group at
    ``master`` (``host:port``: gloo on the CPU, NCCL on GPUs) and shard the model with FSDP2."""

    def __init__(self, config: TrainConfig, rank: int = 0, world_size: int = 1, master: str | None = None) -> None:
        import_user_modules(config.imports)
        self.config = config
        self.rank, self.world_size = rank, world_size
        if world_size > 1:
            init_process_group(rank, world_size, master)
        self.model, self.tokenizer = load_model(config)
        if world_size > 1:
            from spiral_train.sharding import shard_model

            self.model = shard_model(self.model, bf16=config.learner.bf16)
        self.learner = Learner(
            self.model,
            config.learner,
            pad_id=self.tokenizer.pad_token_id,
            reference=FrozenReference.of(config, self.model) if config.learner.kl_coef else None,
            seed=seeds.derived_seed(config.seed, seeds.LEARNER),
        )

    def ping(self) -> int:
        return os.getpid()

    def warm_start(self) -> float:
        """The supervised format pass of ``warm_start`` (fresh runs); the last batch's loss.
        Every rank trains on the same batches (their gradients are summed: each divides by
        the number of ranks)."""
        from spiral_train.warm_start import warm_start

        w, config = self.config.warm_start, self.config
        games = [g.id for g in config.games]
        seed = seeds.derived_seed(config.seed, seeds.WARM_START)
        loss = warm_start(self.model, self.tokenizer, policy_template(config), games, [g.env_kwargs for g in config.games], w.steps, w.batch_size, w.learning_rate, seed, ranks=self.world_size, dirichlet=w.dirichlet_alpha if w.targets == "random_policy" else None)
        self.reference_from_policy()  # KL toward the warm-started policy, not the untrained one
        return loss

    def reference_from_policy(self) -> None:
        """The KL reference becomes the current policy (a collective when sharded)."""
        if self.learner.reference is not None:
            self.learner.reference.start_from(self._full_state())

    def reference_from(self, path: Path, sha256: str) -> None:
        """A resumed run's KL reference: the warm-started policy from its snapshot file."""
        from safetensors.torch import load_file

        from spiral_train.opponents import OpponentError, sha256_of

        if sha256_of(path) != sha256:
            raise OpponentError(f"{path}: its sha256 is not the one the run recorded (damaged or replaced)")
        if self.learner.reference is not None:
            self.learner.reference.start_from(load_file(path))

    def _full_state(self) -> dict[str, torch.Tensor]:
        """The model's full state on every rank (a collective when sharded)."""
        if self.world_size == 1:
            return self.model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True))

    def update(self, samples: list[TurnSample], advantages: list[float]) -> dict[str, float]:
        """One PPO update on the step's samples (every rank gets all of them)."""
        return self.learner.update(samples, advantages)

    def nonfinite_weights(self) -> list[str]:
        """Names of weights holding NaN or infinity (the same answer on every rank)."""
        return nonfinite_parameters(self.model)

    def generator_state(self) -> dict[str, torch.Tensor] | None:
        """The full weights for a generator (base names, LoRA merged) on rank 0, else None;
        one rank hands over its own tensors where it can (no copy)."""
        if self.world_size == 1:
            return generator_weights(self.model)
        from spiral_train.sharding import generator_state

        state = generator_state(self.model)
        if state is not None and torch.cuda.is_available():  # GPU generators run bfloat16: half the bytes
            state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
        return state

    def free_memory(self) -> None:
        """Give the memory the allocator caches back to the GPU (for a generator to wake into)."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def snapshot(self, path: Path, kuhn: bool) -> tuple[str, dict[str, list[float]] | None]:
        """Write the generator weights to the snapshot file ``path`` (rank 0; a collective) and
        return its sha256 and, with ``kuhn``, the policy's Kuhn action probabilities."""
        from spiral_train.opponents import base_dtype, save_snapshot

        state = self.generator_state()
        sha256 = save_snapshot(state, path, base_dtype(self.config)) if state is not None else ""
        return sha256, self.kuhn_policy() if kuhn else None

    def kuhn_policy(self) -> dict[str, list[float]]:
        """The model's action probabilities at single-hand Kuhn Poker's 12 information sets."""
        from spiral_agents.exact import encode_policy, kuhn_policy

        return encode_policy(kuhn_policy(self._kuhn_scorer(), self._kuhn_env_kwargs()))

    def kuhn_exploitability(self) -> float:
        """Exact exploitability of the model's own action probabilities (every rank runs the
        same passes; sharded ones need that)."""
        from spiral_agents.exact import kuhn_exploitability

        return kuhn_exploitability(self._kuhn_scorer(), self._kuhn_env_kwargs())

    def _kuhn_scorer(self) -> Any:
        from spiral_agents.llm.scoring import ActionScorer

        return ActionScorer(self.model, self.tokenizer, policy_template(self.config))

    def _kuhn_env_kwargs(self) -> dict[str, Any]:
        """The run's Kuhn Poker env settings (who opens, brief texts): the policy is read on
        the observations it plays."""
        return next((dict(g.env_kwargs) for g in self.config.games if g.id == "KuhnPoker-v1"), {})

    def save(self, staging: Path) -> tuple[dict[str, Any], bytes]:
        """Write this rank's model and optimizer shards into the checkpoint being staged (a
        collective); the scheduler's and the shuffle generator's states back (every rank's
        are the same)."""
        from spiral_train.checkpoint import save_learner_state

        save_learner_state(staging, self.model, self.learner.optimizer)
        return self.learner.scheduler.state_dict(), self.learner.generator.get_state().numpy().tobytes()

    def load(self, path: Path, hashes: bool) -> None:
        """Restore this rank from the checkpoint at ``path``, resharded to this run's ranks."""
        from spiral_train.checkpoint import load_learner_state

        learner = self.learner
        load_learner_state(path, self.model, learner.optimizer, learner.scheduler, learner.generator, hashes)

    def apply_config(self, config: TrainConfig) -> None:
        """Use a resumed run's learner settings from here on."""
        self.config = config
        self.learner.apply_config(config.learner)


def init_process_group(rank: int, world_size: int, master: str | None) -> None:
    """Join the learners' torch.distributed group (NCCL where CUDA is, else gloo)."""
    import torch.distributed as dist

    if master is None:
        raise ValueError("several learner ranks need the group's master address host:port")
    host, port = master.rsplit(":", 1)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(0)  # Ray shows each rank only its own GPUs
    dist.init_process_group(backend, init_method=f"tcp://{host}:{port}", rank=rank, world_size=world_size)
