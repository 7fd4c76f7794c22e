"""The controller of a training run: the step loop over the workers, with metrics, evaluation
and checkpoints. It holds no model: the generators play (:class:`~spiral_train.workers.
GeneratorWorker`), the learner ranks train (:class:`~spiral_train.workers.LearnerWorker`), both
in this process or on Ray (:mod:`spiral_train.cluster`), and :mod:`spiral_train.weight_sync`
moves the weights between them.

Read top to bottom: :meth:`Trainer.step` is one policy update. With ``max_staleness`` >= 1
the updates overlap the next steps' games instead (:mod:`spiral_train.overlap`).
"""

from __future__ import annotations

import math
import shutil
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from spiral_agents.arena import GameRecord
from spiral_agents.llm.rollout import TurnSample
from spiral_agents.llm.vllm_server import WeightSyncError
from spiral_train import seeds
from spiral_train.checkpoint import (
    CheckpointError,
    CheckpointState,
    RNGState,
    TrainerState,
    begin_checkpoint,
    discard_checkpoint,
    finish_checkpoint,
    prune_checkpoints,
    read_state,
    step_name,
)
from spiral_train.cluster import WorkerFailure, start_workers
from spiral_train.config import TrainConfig
from spiral_train.evaluation import game_metrics
from spiral_train.learner import NonFiniteError
from spiral_train.metrics import MetricsLogger
from spiral_train.opponents import OpponentError, snapshot_path
from spiral_train.overlap import Overlap
from spiral_train.population import (
    INITIAL,
    LEARNER,
    POPULATION,
    REFERENCE_PREFIX,
    SELF,
    Entry,
    OpponentsState,
    Population,
    Ratings,
    Snapshot,
    kind_of,
    opponent_plan,
    reference_name,
    snapshot_name,
)
from spiral_train.rae import RoleBaselines
from spiral_train.run_folder import RunStart, plan_start
from spiral_train.weight_sync import SyncReport, WeightSync


@dataclass
class StepGames:
    """A step's games, as :meth:`Trainer._play` collects them from the generators."""

    samples: list[TurnSample]
    """Every LLM turn, in episode order."""
    games: list[GameRecord]
    lost: int
    """Games lost with a generator that died."""
    calls: int
    """Backend generate calls."""
    busiest: float
    """Seconds the busiest generator of each round played, summed over the rounds."""


class Trainer:
    """Self-play training of one policy over a weighted mix of games and opponents."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        if config.build_tiny_model:
            from spiral_agents.llm.tiny import ensure_tiny_qwen3

            ensure_tiny_qwen3(config.model.path, seed=config.seed, initializer_range=config.tiny_model_init)
        self.output = Path(config.output_dir)
        self.workers = start_workers(config)
        self.learners, self.generators = self.workers.learners, self.workers.generators
        self.weights = WeightSync(self.learners, self.generators, versioned=config.max_staleness > 0)
        self.overlap = Overlap(self, config.max_staleness) if config.max_staleness else None
        """The asynchronous step loop (``max_staleness`` >= 1), else None."""
        self.baselines = RoleBaselines(config.rae.alpha, config.rae.update_first)
        self.step_index = 0
        self.samples_seen = 0
        self.games_seen = 0
        self.turns_per_game = seeds.FIRST_TURNS_PER_GAME
        """LLM turns per game of the last step: how many games a step's first round plays."""
        self.generator_failures = 0
        self._reasoning_problems: list[Any] | None = None
        self.mixes = [game.mix for game in config.games]
        p = config.population
        self.population = Population(p.size, p.every, p.replacement, p.sampling, p.power, p.floor) if POPULATION in config.opponents() else None
        self.ratings = Ratings(k=p.elo_k)
        """Elo ratings of the learner and every opponent it played (self-play games aside)."""
        self.frozen: dict[str, str] = {}
        """The run's snapshot files (frozen opponents, the KL reference): name -> sha256."""

    def close(self) -> None:
        """Stop the workers (and Ray, if this run started it)."""
        self.workers.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one policy update -----------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One policy update: :meth:`step`, or with ``max_staleness`` >= 1 one that overlaps
        the next steps' games (:meth:`spiral_train.overlap.Overlap.step`)."""
        return self.overlap.step() if self.overlap is not None else self.step()

    def step(self) -> dict[str, float]:
        start = time.perf_counter()
        rollout = self._play(self._plan())
        samples, games = rollout.samples, rollout.games
        generated = time.perf_counter()
        self.generators.call("sleep")  # first: a WeightSyncError here leaves the step as it was

        void, played = self._learner_turns(samples)
        trained, advantages, metrics = self._batch(played, [s for s in played if s.response_token_ids])
        if trained:
            metrics.update(self.learners.first_result("update", trained, advantages))
        learned = time.perf_counter()
        self._count_step(rollout)
        finished = len(games) - len(void)
        if finished:
            self.turns_per_game = max(1.0, len(played) / finished)
        sync = self._wake_and_sync()  # last: a WeightSyncError leaves a finished step to checkpoint
        self._snapshot_if_due()
        synced = time.perf_counter()

        metrics.update(self._step_metrics(rollout, void, trained, sync, (start, generated, learned, synced), generated - start))
        metrics["time_waiting"] = (generated - start - rollout.busiest) + (learned - generated - metrics.get("learner_seconds", 0.0))
        return metrics

    def _count_step(self, rollout: StepGames) -> None:
        """One more update, and its games and turns, in the run's counters."""
        self.step_index += 1
        self.samples_seen += len(rollout.samples)
        self.games_seen += len(rollout.games)

    def _step_metrics(
        self, rollout: StepGames, void: set[int], trained: list[TurnSample], sync: SyncReport, times: tuple[float, float, float, float], generating_seconds: float
    ) -> dict[str, float]:
        """A step's counts, times (``times``: its start, games done, update done, weights sent)
        and opponent metrics; the generation rate is over ``generating_seconds``."""
        start, generated, learned, synced = times
        return {
            "samples": len(rollout.samples),
            "trained_samples": len(trained),
            "games": len(rollout.games),
            "void_games": len(void) + rollout.lost,
            "generator_failures": self.generator_failures,
            "generation_calls": rollout.calls,
            "time_generation": generated - start,
            "time_learning": learned - generated,
            "time_weight_sync": synced - learned,
            "weight_sync_seconds": sync.seconds,
            "weight_sync_bytes": sync.bytes,
            "generation_tokens_per_second": sum(len(s.response_token_ids) for s in rollout.samples) / max(generating_seconds, 1e-9),
            **self._opponent_metrics(),
        }

    def _learner_turns(self, samples: list[TurnSample]) -> tuple[set[int], list[TurnSample]]:
        """The void episodes, and the learner's turns in the others.

        A game whose generation failed (the server, not the model) is void: its forfeit is
        neither trained on nor counted in the game statistics; so are the games of a generator
        that died (they never came back). A frozen opponent's turns are not the learner's."""
        void = {s.episode for s in samples if s.finish_reason == "error"}
        return void, [s for s in samples if s.episode not in void and s.policy == LEARNER]

    def _batch(self, played: list[TurnSample], trainable: list[TurnSample]) -> tuple[list[TurnSample], list[float], dict[str, float]]:
        """What the update trains on out of ``trainable`` (of the learner's turns ``played``),
        with the advantages and the game metrics: every finished game moves its RAE baseline
        (per opponent kind) and the ratings; then the draw of ``samples_per_step`` turns and
        the zero advantages dropped."""
        advantages = self.baselines.advantages(trainable, opponent=lambda s: kind_of(s.opponent))
        self._rate(played)
        metrics = self._game_metrics(played, trainable, advantages)
        trained = trainable
        if not self.config.train_all_turns:
            trained, advantages = self._draw(trained, advantages)
        if self.config.rae.drop_zero_advantage:
            kept = [(s, a) for s, a in zip(trained, advantages) if a != 0.0]
            trained, advantages = [s for s, _ in kept], [a for _, a in kept]
        return trained, advantages, metrics

    def _play(self, plan: list[Entry] | None = None) -> StepGames:
        """This step's games: episodes 0, 1, 2, ... in rounds (at most ``concurrency`` games,
        as many as the last step's turns per game say are needed) until ``samples_per_step``
        turns of the learner are taken, each round's episodes shared between the generators. Which
        episodes a step plays therefore depends on the games alone, never on the number of
        generators."""
        target = self.config.samples_per_step
        samples: list[TurnSample] = []
        games: list[GameRecord] = []
        lost = calls = first = 0
        busiest = 0.0
        taken = 0  # the learner's turns (a frozen opponent's are not counted)
        while taken < target:
            count = min(self.config.concurrency, max(1, math.ceil((target - taken) / self.turns_per_game)))
            episodes = list(range(first, first + count))
            first += count
            shares = [episodes[i :: len(self.generators)] for i in range(len(self.generators))]
            results = self.generators.call_each("play", [(self.step_index, share, plan) for share in shares])
            before = taken
            busiest += max((r.seconds for r in results if not isinstance(r, BaseException)), default=0.0)
            for index, (share, result) in enumerate(zip(shares, results)):
                if isinstance(result, WorkerFailure):
                    lost += len(share)
                    self._revive(index)
                    continue
                if isinstance(result, BaseException):
                    raise result
                samples += result.samples
                taken += sum(s.policy == LEARNER for s in result.samples)
                games += result.games
                calls += result.generation_calls
            if taken == before and not lost:
                break  # no LLM seat to move: more rounds would not add turns
        samples.sort(key=lambda s: (s.episode, s.turn))
        return StepGames(samples, games, lost, calls, busiest)

    def _revive(self, index: int) -> None:
        """Generator ``index`` died: wait until Ray has restarted it and give it the current
        weights and frozen opponents before it plays again."""
        self.generator_failures += 1
        self.generators.revive(index)
        self.weights.resend(index)
        for name, sha256 in self.frozen.items():
            if self._served(name):
                self.generators.call_one(index, "add_frozen", name, snapshot_path(self.output, name), sha256)

    # --- opponents -------------------------------------------------------------------------
    def _plan(self) -> list[Entry] | None:
        """This step's matchups (None: self-play in every game, the plain path)."""
        if all(mix == {SELF: 1.0} for mix in self.mixes):
            return None
        pool = self.population.weights(self.ratings) if self.population is not None else {}
        return opponent_plan(self.mixes, [g.weight for g in self.config.games], pool)

    def _served(self, name: str) -> bool:
        """Whether the generators serve snapshot ``name`` (``initial`` may be only the KL
        reference; a moved reference is only that)."""
        if name.startswith(REFERENCE_PREFIX):
            return False
        return name != INITIAL or INITIAL in self.config.opponents()

    def _initial_reference(self) -> bool:
        """Whether the KL reference is the warm-started policy, kept as the ``initial``
        snapshot so that a resumed run gets it back (LoRA's reference is the plain base)."""
        return bool(self.config.learner.kl_coef and self.config.warm_start.steps and not self.config.model.lora_rank)

    def _start_opponents(self) -> None:
        """A fresh run's step-0 snapshots: ``initial`` and the population's first member."""
        if INITIAL in self.config.opponents() or self._initial_reference():
            self._snapshot(INITIAL)
        if self.population is not None:
            self._add_to_pool()

    def _snapshot(self, name: str, kuhn: bool = False) -> Snapshot:
        """The learners write the policy to a snapshot file (with ``kuhn``, its Kuhn action
        probabilities too); the generators serve it."""
        path = snapshot_path(self.output, name)
        sha256, table = self.learners.first_result("snapshot", path, kuhn)
        if self._served(name):
            self.generators.call("add_frozen", name, path, sha256)
        self.frozen[name] = sha256
        return Snapshot(name, self.step_index, sha256, table)

    def _snapshot_if_due(self) -> None:
        """After an update: the pool's next member and the KL reference's move, when due."""
        if self.population is not None and self.population.due(self.step_index):
            self._add_to_pool()
        every = self.config.learner.kl_reference_every
        if every and self.step_index % every == 0:
            self._move_reference()

    def _move_reference(self) -> None:
        """The current policy becomes the KL reference (in memory), kept as a snapshot file for
        resume; the reference before it is no longer the live run's (pruned once no checkpoint
        names it)."""
        name = reference_name(self.step_index)
        self._snapshot(name)
        self.learners.call("reference_from_policy")
        for old in [n for n in self.frozen if n != name and (n.startswith(REFERENCE_PREFIX) or (n == INITIAL and not self._served(n)))]:
            del self.frozen[old]

    def _add_to_pool(self) -> None:
        assert self.population is not None
        snapshot = self._snapshot(snapshot_name(self.step_index), kuhn=self.config.eval.kuhn_exploitability)
        self.ratings.add(snapshot.name)  # it is the learner now
        out = self.population.add(snapshot, seeds.population_rng(self.config.seed, self.step_index))
        if out is not None:
            self.generators.call("remove_frozen", out.name)
            self.frozen.pop(out.name, None)
            self.ratings.values.pop(out.name, None)

    def _rate(self, learner_turns: list[TurnSample]) -> None:
        """Elo updates from this step's games against anything but the learner itself, in
        episode order (one per game)."""
        rated: set[int] = set()
        for sample in learner_turns:
            if sample.opponent != LEARNER and sample.episode not in rated and sample.reward is not None:
                rated.add(sample.episode)
                self.ratings.update(sample.opponent, sample.reward)

    def _opponent_metrics(self) -> dict[str, float]:
        if self.ratings.values == {} and self.population is None:
            return {}
        metrics = {f"rating/{name}": value for name, value in sorted(self.ratings.values.items())}
        if self.population is not None:
            metrics["population/size"] = len(self.population.members)
            weights = self.population.weights(self.ratings)
            metrics.update({f"population/weight/{name}": w for name, w in weights.items()})
        return metrics

    def _opponents_state(self) -> dict[str, Any]:
        if not self.frozen and not self.ratings.values:
            return {}
        return {
            "population": self.population.state_dict() if self.population is not None else None,
            "ratings": self.ratings.state_dict(),
            "frozen": dict(self.frozen),
        }

    def _restore_opponents(self, path: Path, saved: dict[str, Any]) -> None:
        """Load a checkpoint's pool and ratings, and serve its frozen opponents again (their
        snapshot files checked against the recorded sha256)."""
        from pydantic import ValidationError

        if not saved:
            if self.population is not None or INITIAL in self.config.opponents():
                self._start_opponents()  # a checkpoint of a run without opponents
            return
        try:
            state = OpponentsState.model_validate(saved)
        except ValidationError as error:
            raise CheckpointError(f"{path / 'state.json'}: unreadable opponents ({error.errors()[0]['msg']})") from None
        self.ratings.load_state_dict(state.ratings.model_dump())
        if self.population is not None and state.population is not None:
            self.population.load_state_dict(state.population.model_dump())
        moved = [name for name in state.frozen if name.startswith(REFERENCE_PREFIX)]
        reference = moved[-1] if moved else INITIAL if self._initial_reference() else None
        for name, sha256 in state.frozen.items():
            file = snapshot_path(self.output, name)
            try:
                if self._served(name):
                    self.generators.call("add_frozen", name, file, sha256)
                if name == reference and self.config.learner.kl_coef:
                    self.learners.call("reference_from", file, sha256)
            except OpponentError as error:
                raise CheckpointError(f"{path}: its frozen opponent {name}: {error}") from None
            self.frozen[name] = sha256
        if self.population is not None and state.population is None:
            self._add_to_pool()  # population opponents added on resume: the pool starts here

    def _prune_snapshots(self) -> None:
        """Delete snapshot files that neither the live run nor a kept checkpoint names."""
        import json

        keep = set(self.frozen)
        for state in (self.output / "checkpoints").glob("step-*/state.json"):
            try:
                keep |= set(json.loads(state.read_text(encoding="utf-8")).get("opponents", {}).get("frozen", {}))
            except (OSError, ValueError, AttributeError):
                return  # an unreadable checkpoint might need any of them
        for file in (self.output / "opponents").glob("*.safetensors"):
            if file.name.removesuffix(".safetensors") not in keep:
                file.unlink(missing_ok=True)

    def _draw(self, samples: list[TurnSample], advantages: list[float]) -> tuple[list[TurnSample], list[float]]:
        """``samples_per_step`` of the turns, drawn uniformly without replacement (all of them
        when there are fewer), in their order; the draw depends only on the seed and the step."""
        count = self.config.samples_per_step
        if len(samples) <= count:
            return samples, advantages
        rng = seeds.draw_rng(self.config.seed, self.step_index)
        chosen = np.sort(rng.choice(len(samples), size=count, replace=False))
        return [samples[i] for i in chosen], [advantages[i] for i in chosen]

    def _game_metrics(self, all_samples: list[TurnSample], trained: list[TurnSample], advantages: list[float]) -> dict[str, float]:
        """Per game, opponent kind and role (self-play's without the kind: ``game/role0/...``):
        return, result rates, invalid moves, response length, baseline and advantages."""
        metrics: dict[str, float] = {}
        groups: dict[tuple[str, str, int], list[TurnSample]] = defaultdict(list)
        for sample in all_samples:
            groups[(sample.game, kind_of(sample.opponent), sample.role)].append(sample)
        advantage_of = defaultdict(list)
        for sample, advantage in zip(trained, advantages):
            advantage_of[(sample.game, kind_of(sample.opponent), sample.role)].append(advantage)
        for (game, kind, role), group in sorted(groups.items()):
            prefix = f"{game}/role{role}/" if kind == SELF else f"{game}/{kind}/role{role}/"
            returns = {s.episode: s.reward for s in group}.values()
            metrics[prefix + "return"] = statistics.fmean(returns)
            metrics[prefix + "win_rate"] = statistics.fmean(r > 0 for r in returns)
            metrics[prefix + "draw_rate"] = statistics.fmean(r == 0 for r in returns)
            metrics[prefix + "loss_rate"] = statistics.fmean(r < 0 for r in returns)
            metrics[prefix + "invalid_rate"] = statistics.fmean(s.invalid for s in group)
            metrics[prefix + "response_tokens"] = statistics.fmean(len(s.response_token_ids) for s in group)
            metrics[prefix + "baseline"] = self.baselines.baseline(game, role, kind)
            values = advantage_of[(game, kind, role)]
            if values:
                metrics[prefix + "advantage_mean"] = statistics.fmean(values)
                metrics[prefix + "advantage_std"] = statistics.pstdev(values)
        metrics["invalid_rate"] = statistics.fmean(s.invalid for s in all_samples) if all_samples else 0.0
        return metrics

    # --- evaluation ------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Win rates (Wilson 95 %) against fixed opponents; Kuhn exploitability of the policy."""
        e = self.config.eval
        metrics: dict[str, float] = {}
        if e.games and e.opponents and e.game_ids:
            metrics.update(game_metrics(self.generators.call_one(0, "evaluation_games")))
        if e.kuhn_exploitability:
            metrics["eval/kuhn_exploitability"] = self.learners.first_result("kuhn_exploitability")
            metrics.update(self._population_exploitability())
        return metrics

    def _population_exploitability(self) -> dict[str, float]:
        """Exact Kuhn exploitability of the pool's average policy (each hand played by one
        member drawn uniformly) and of the average over every snapshot taken (fictitious
        play's average strategy)."""
        from spiral_agents.exact import decode_policy, kuhn_mixture, kuhn_nash_conv

        if self.population is None:
            return {}
        metrics = {}
        for key, snapshots in (("population", self.population.members), ("average", self.population.history)):
            tables = [decode_policy(s.kuhn_policy) for s in snapshots if s.kuhn_policy is not None]
            if tables:
                metrics[f"eval/kuhn_exploitability_{key}"] = float(kuhn_nash_conv(kuhn_mixture(tables)) / 2)
        return metrics

    def evaluate_reasoning(self) -> dict[str, float]:
        """``eval.reasoning``'s benchmark subset on the live policy, through generator 0."""
        from spiral_train.reasoning import load_benchmark

        settings = self.config.eval.reasoning
        if self._reasoning_problems is None:
            self._reasoning_problems = [
                problem
                for name in settings.benchmarks
                for problem in load_benchmark(name, settings.data.get(name), limit=settings.limit).problems
            ]
        folder = self.output / "reasoning" / f"step-{self.step_index:06d}"
        if folder.exists():  # left by a killed run after its last checkpoint, as its metrics
            shutil.rmtree(folder)
        return self.generators.call_one(0, "evaluate_reasoning", self._reasoning_problems, folder)

    # --- weights and checkpoints -------------------------------------------------------------
    def _wake_and_sync(self) -> SyncReport:
        """After an update, in the order that needs least memory: the learners' freed memory
        goes back to the GPU, the generators' weights wake and get the new ones, the cache is
        emptied again, and only then the generators' KV caches wake."""
        self.learners.call("free_memory")
        self.generators.call("wake_up", ["weights"])
        report = self._sync_weights()
        self.learners.call("free_memory")
        self.generators.call("wake_up", ["kv_cache"])
        return report

    def _sync_weights(self) -> SyncReport:
        """Give every generator the learners' weights (checked finite first)."""
        self._check_weights()
        report, dead = self.weights.push(self.step_index)
        for index in dead:  # a generator that died on the way gets them once it is back
            self._revive(index)
        return report

    def _check_weights(self) -> None:
        """Non-finite weights are never checkpointed or sent to a generator."""
        bad = self.learners.first_result("nonfinite_weights")
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise NonFiniteError(
                f"after step {self.step_index} the weights hold NaN or infinity ({shown}); they "
                f"were not saved or sent to the generator (checkpoints: {self.output / 'checkpoints'})"
            )

    def save(self) -> Path:
        """Checkpoint this step (the learner ranks write their shards into the staged folder,
        the controller its own state), then delete checkpoints beyond ``checkpoint.keep_last``."""
        self._check_weights()
        root = self.output / "checkpoints"
        staging = begin_checkpoint(root, self.step_index)
        try:
            scheduler, generator = self.learners.first_result("save", staging)
            trainer = TrainerState(
                self.step_index, self.samples_seen, self.games_seen, self.baselines.state_dict(), self.config.to_dict(), self.turns_per_game, self.generator_failures, self._opponents_state()
            )
            state = CheckpointState(trainer, scheduler, generator, RNGState.capture(), learner_ranks=len(self.learners))
            path = finish_checkpoint(staging, state)
        except BaseException:
            discard_checkpoint(staging)
            raise
        prune_checkpoints(root, self.config.checkpoint.keep_last)
        self._prune_snapshots()
        return path

    def _saved_step(self) -> Path:
        """This step's checkpoint: the one on disk, else a new one."""
        saved = self.output / "checkpoints" / step_name(self.step_index)
        return saved if saved.is_dir() else self.save()

    def resume(self, path: Path, hashes: bool = True) -> None:
        """Continue from the checkpoint at ``path`` (written by any number of learner ranks)
        with this run's settings (a changed learning rate, schedule or RAE setting takes effect
        from here)."""
        saved = read_state(path, hashes)
        self.learners.call("load", path, False)  # read_state has verified every file
        state = saved.trainer
        try:
            self.baselines.load_state_dict(state.baselines)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path / 'state.json'}: unreadable RAE baselines ({error!r})") from None
        self.baselines.alpha, self.baselines.update_first = self.config.rae.alpha, self.config.rae.update_first
        self.step_index, self.samples_seen, self.games_seen = state.step, state.samples, state.games
        self.turns_per_game, self.generator_failures = state.turns_per_game, state.generator_failures
        saved.rng.restore()
        self.learners.call("apply_config", self.config)
        self._sync_weights()
        self._restore_opponents(path, state.opponents)

    # --- the whole run ----------------------------------------------------------------------
    def train(
        self,
        resume: bool = False,
        progress: bool = True,
        *,
        resume_from: str | None = None,
        overwrite: bool = False,
        start: RunStart | None = None,
        log: Any = print,
    ) -> list[dict[str, float]]:
        """Warm start (fresh runs), then self-play steps with evaluation and checkpoints.

        ``start`` is where the run begins (:func:`spiral_train.run_folder.plan_start`, from
        ``resume``, ``resume_from`` and ``overwrite`` when not given); ``log`` gets the
        "starting fresh" / "resumed from step N" line and the changed settings.
        """
        from tqdm.auto import tqdm

        config = self.config
        start = start or plan_start(config, resume, resume_from, overwrite)
        log(start.message)
        for change in start.changes:
            log(f"  changed since the checkpoint: {change}")
        resumed = start.checkpoint is not None
        if resumed:
            self.resume(start.checkpoint, hashes=False)  # plan_start verified it
        logger = MetricsLogger(
            self.output,
            tensorboard=config.tensorboard,
            wandb_project=config.wandb_project,
            config=config.to_dict(),
            resume_step=self.step_index if resumed else None,
        )
        history: list[dict[str, float]] = []
        try:
            if not resumed and config.warm_start.steps:
                loss = self.learners.first_result("warm_start")
                self._sync_weights()
                logger.log(0, {"warm_start/loss": loss})
            if not resumed:
                self._start_opponents()
            if not resumed and (config.eval.every or config.eval.reasoning.every):
                first = {"step": 0, **(self.evaluate() if config.eval.every else {})}
                if config.eval.reasoning.every:
                    first.update(self.evaluate_reasoning())
                logger.log(0, first)
                history.append(first)
            bar = tqdm(total=config.steps, initial=self.step_index, desc="self-play", disable=not progress)
            while self.step_index < config.steps:
                try:
                    metrics = self.train_step()
                except WeightSyncError as error:
                    saved = self._saved_step()
                    raise WeightSyncError(
                        f"{error}\nStep {self.step_index} is saved in {saved}; with the server "
                        "back, continue with --resume (it sends these weights first)."
                    ) from error
                except WorkerFailure as error:
                    raise WorkerFailure(
                        f"{error}\nStep {self.step_index + 1} was not applied; continue with --resume "
                        f"(from the last checkpoint in {self.output / 'checkpoints'})."
                    ) from error
                if config.eval.every and self.step_index % config.eval.every == 0:
                    metrics.update(self.evaluate())
                if config.eval.reasoning.every and self.step_index % config.eval.reasoning.every == 0:
                    metrics.update(self.evaluate_reasoning())
                logger.log(self.step_index, metrics)
                history.append({"step": self.step_index, **metrics})
                if self.step_index % config.checkpoint.every == 0 or self.step_index == config.steps:
                    self.save()
                bar.update(1)
                bar.set_postfix(_postfix(metrics))
            bar.close()
        finally:
            logger.close()
        return history


def _postfix(metrics: dict[str, float]) -> dict[str, str]:
    shown = {"loss": "loss", "invalid_rate": "invalid", "eval/kuhn_exploitability": "exploit"}
    return {label: f"{metrics[key]:.3f}" for key, label in shown.items() if key in metrics}

