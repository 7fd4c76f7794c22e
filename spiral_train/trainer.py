"""The self-play loop: actor (rollout engine, current policy in both seats) -> RAE -> learner
-> weights to the generator, with metrics, evaluation and checkpoints.

Read top to bottom: :meth:`Trainer.step` is one policy update.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spiral_agents.arena import summarize
from spiral_agents.llm.agent import evaluate
from spiral_agents.llm.prompts import make_template
from spiral_agents.llm.rollout import LLMPolicy, Matchup, RolloutEngine, TurnSample
from spiral_agents.llm.scoring import ActionScorer
from spiral_agents.llm.vllm_server import WeightSyncError
from spiral_train.checkpoint import (
    CheckpointError,
    TrainerState,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    step_name,
)
from spiral_train.config import TrainConfig
from spiral_train.learner import Learner, NonFiniteError, nonfinite_parameters
from spiral_train.metrics import MetricsLogger
from spiral_train.model import FrozenReference, generator_weights, load_model, turn_stop_ids
from spiral_train.rae import RoleBaselines
from spiral_train.run_folder import RunStart, plan_start
from spiral_train.warm_start import warm_start


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Self-play training of one policy over a weighted mix of games."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        seed_everything(config.seed)
        if config.build_tiny_model:
            from spiral_agents.llm.tiny import ensure_tiny_qwen3

            ensure_tiny_qwen3(config.model.path, seed=config.seed)
        self.output = Path(config.output_dir)
        self.model, self.tokenizer = load_model(config)
        self.backend = self._generator()
        template = make_template(config.model.template, config.model.path)
        stops = sorted({*config.sampling.stop_token_ids, *turn_stop_ids(self.tokenizer)})
        sampling = replace(config.sampling, stop_token_ids=tuple(stops))
        self.policy = LLMPolicy(self.backend, template, sampling, name="policy")
        self.matchups = []
        for game in config.games:
            env_kwargs: dict[str, Any] = {"invalid_move": config.rewards.invalid_move}
            if config.rewards.max_turns is not None:
                env_kwargs["max_turns"] = config.rewards.max_turns
            env_kwargs.update(game.env_kwargs)
            self.matchups.append(Matchup(game.id, (self.policy, self.policy), game.weight, env_kwargs))
        self.learner = Learner(
            self.model,
            config.learner,
            pad_id=self.tokenizer.pad_token_id,
            reference=FrozenReference.of(config, self.model) if config.learner.kl_coef else None,
            seed=config.seed,
        )
        self.baselines = RoleBaselines(config.rae.alpha, config.rae.update_first)
        self.step_index = 0
        self.samples_seen = 0
        self.games_seen = 0
        self._reasoning_problems: list[Any] | None = None

    def _generator(self) -> Any:
        g = self.config.generator
        if g.backend == "transformers":
            from spiral_agents.llm.hf_backend import TransformersBackend

            return TransformersBackend(self.model, tokenizer=self.tokenizer, max_batch_tokens=g.max_batch_tokens)
        if g.backend == "vllm-server":
            from spiral_agents.llm.vllm_server import VLLMServerBackend

            return VLLMServerBackend(
                g.base_url,
                g.served_model_name or self.config.model.path,
                self.tokenizer,
                g.weights_dir or self.output / "served-weights",
                concurrency=self.config.concurrency,
                timeout=g.request_timeout,
                reload_timeout=g.request_timeout,
                vocab_size=self.model.get_input_embeddings().weight.shape[0],
            )
        from spiral_agents.llm.vllm_backend import VLLMBackend

        return VLLMBackend(
            self.config.model.path,
            gpu_memory_utilization=g.gpu_memory_utilization,
            max_model_len=g.max_model_len,
            seed=self.config.seed,
            enable_sleep_mode=g.sleep_while_learning,
            request_seeds=g.request_seeds,
        )

    def _sync_weights(self) -> None:
        """Give the generator the learner's weights (the transformers backend shares them)."""
        self._check_weights()
        if self.config.generator.backend != "transformers":
            self.backend.update_weights(generator_weights(self.model))

    def _sleeps(self) -> bool:
        """Whether the generator gives its memory back while the learner trains."""
        return self.config.generator.sleep_while_learning and callable(getattr(self.backend, "sleep", None))

    def _wake_and_sync(self) -> None:
        """After an update, in the order that needs least memory: the learner's freed memory
        goes back to the GPU, the generator's weights wake and get the new ones, the cache is
        emptied again, and only then the generator's KV cache wakes."""
        sleeps = self._sleeps()
        free_cached_memory()
        if sleeps:
            self.backend.wake_up(tags=["weights"])
        self._sync_weights()
        free_cached_memory()
        if sleeps:
            self.backend.wake_up(tags=["kv_cache"])

    # --- one policy update -----------------------------------------------------------------
    def step(self) -> dict[str, float]:
        config = self.config
        start = time.perf_counter()
        engine = RolloutEngine(self.matchups, concurrency=config.concurrency, seed=config.seed * 100_003 + self.step_index)
        rollout = engine.run(turns=config.samples_per_step)
        generated = time.perf_counter()
        if self._sleeps():  # first: a WeightSyncError here leaves the step as it was
            self.backend.sleep(level=config.generator.sleep_level)

        # A game whose generation failed (the server, not the model) is void: its forfeit
        # is neither trained on nor counted in the game statistics.
        void = {s.episode for s in rollout.samples if s.finish_reason == "error"}
        played = [s for s in rollout.samples if s.episode not in void]
        samples = [s for s in played if s.response_token_ids]
        advantages = self.baselines.advantages(samples)  # every finished game moves the baselines
        metrics = self._game_metrics(played, samples, advantages)
        if not config.train_all_turns:
            samples, advantages = self._draw(samples, advantages)
        if config.rae.drop_zero_advantage:
            kept = [(s, a) for s, a in zip(samples, advantages) if a != 0.0]
            samples, advantages = [s for s, _ in kept], [a for _, a in kept]
        if samples:
            metrics.update(self.learner.update(samples, advantages))
        learned = time.perf_counter()
        self.step_index += 1
        self.samples_seen += len(rollout.samples)
        self.games_seen += len(rollout.games)
        self._wake_and_sync()  # last: a WeightSyncError leaves a finished step to checkpoint
        synced = time.perf_counter()

        generated_tokens = sum(len(s.response_token_ids) for s in rollout.samples)
        metrics.update(
            samples=len(rollout.samples),
            trained_samples=len(samples),
            games=len(rollout.games),
            void_games=len(void),
            generation_calls=engine.generation_calls,
            time_generation=generated - start,
            time_learning=learned - generated,
            time_weight_sync=synced - learned,
            generation_tokens_per_second=generated_tokens / max(generated - start, 1e-9),
        )
        return metrics

    def _draw(self, samples: list[TurnSample], advantages: list[float]) -> tuple[list[TurnSample], list[float]]:
        """``samples_per_step`` of the turns, drawn uniformly without replacement (all of them
        when there are fewer), in their order; the draw depends only on the seed and the step."""
        count = self.config.samples_per_step
        if len(samples) <= count:
            return samples, advantages
        rng = np.random.default_rng([self.config.seed, 3, self.step_index])
        chosen = np.sort(rng.choice(len(samples), size=count, replace=False))
        return [samples[i] for i in chosen], [advantages[i] for i in chosen]

    def _game_metrics(self, all_samples: list[TurnSample], trained: list[TurnSample], advantages: list[float]) -> dict[str, float]:
        metrics: dict[str, float] = {}
        groups: dict[tuple[str, int], list[TurnSample]] = defaultdict(list)
        for sample in all_samples:
            groups[(sample.game, sample.role)].append(sample)
        advantage_of = defaultdict(list)
        for sample, advantage in zip(trained, advantages):
            advantage_of[(sample.game, sample.role)].append(advantage)
        for (game, role), group in sorted(groups.items()):
            prefix = f"{game}/role{role}/"
            returns = {s.episode: s.reward for s in group}.values()
            metrics[prefix + "return"] = statistics.fmean(returns)
            metrics[prefix + "win_rate"] = statistics.fmean(r > 0 for r in returns)
            metrics[prefix + "draw_rate"] = statistics.fmean(r == 0 for r in returns)
            metrics[prefix + "loss_rate"] = statistics.fmean(r < 0 for r in returns)
            metrics[prefix + "invalid_rate"] = statistics.fmean(s.invalid for s in group)
            metrics[prefix + "response_tokens"] = statistics.fmean(len(s.response_token_ids) for s in group)
            metrics[prefix + "baseline"] = self.baselines.baseline(game, role)
            values = advantage_of[(game, role)]
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
            sampling = replace(self.policy.sampling, temperature=e.temperature, top_p=e.top_p)
            policy = LLMPolicy(self.backend, self.policy.template, sampling, name="policy")
            trained = {g.id: g.env_kwargs for g in self.config.games}
            records = []
            with self._seeded_requests():
                for game_id in e.game_ids:  # a training game is evaluated in its training variant
                    records += evaluate(policy, e.opponents, [game_id], e.games, concurrency=self.config.concurrency, seed=10_000 + self.config.seed, env_kwargs=trained.get(game_id))
            for result in summarize(records):
                low, high = result.win_interval
                prefix = f"eval/{result.game}/vs_{result.b}/"
                metrics[prefix + "win_rate"] = result.win_rate
                metrics[prefix + "win_rate_low"] = low
                metrics[prefix + "win_rate_high"] = high
                metrics[prefix + "non_loss_rate"] = (result.wins + result.draws) / result.games
                metrics[prefix + "invalid_rate"] = result.a_invalid / max(result.a_moves, 1)
                metrics[prefix + "mean_reward"] = result.mean_reward  # chips in Kuhn Poker
                if result.reward_interval is not None:
                    metrics[prefix + "mean_reward_low"], metrics[prefix + "mean_reward_high"] = result.reward_interval
        if e.kuhn_exploitability:
            from spiral_agents.exact import kuhn_exploitability

            scorer = ActionScorer(self.model, self.tokenizer, self.policy.template)
            metrics["eval/kuhn_exploitability"] = kuhn_exploitability(scorer)
        return metrics

    def evaluate_reasoning(self) -> dict[str, float]:
        """``eval.reasoning``'s benchmark subset on the live policy, through the generator."""
        from spiral_train.reasoning import PRESETS, evaluate_reasoning, load_benchmark

        settings = self.config.eval.reasoning
        if self._reasoning_problems is None:
            self._reasoning_problems = [
                problem
                for name in settings.benchmarks
                for problem in load_benchmark(name, settings.data.get(name), limit=settings.limit).problems
            ]
        protocol = PRESETS[settings.preset].with_overrides(max_tokens=settings.max_tokens, samples=settings.samples)
        folder = self.output / "reasoning" / f"step-{self.step_index:06d}"
        if folder.exists():  # left by a killed run after its last checkpoint, as its metrics
            shutil.rmtree(folder)
        with self._seeded_requests():
            results = evaluate_reasoning(self.backend, self.policy.template, self._reasoning_problems, protocol, output_dir=folder)
        return results.metrics("eval/reasoning")

    @contextlib.contextmanager
    def _seeded_requests(self) -> Iterator[None]:
        """Evaluation seeds every request (reproducible win rates), also where training
        generates without per-request seeds (``generator.request_seeds``)."""
        if not hasattr(self.backend, "request_seeds"):
            yield
            return
        training, self.backend.request_seeds = self.backend.request_seeds, True
        try:
            yield
        finally:
            self.backend.request_seeds = training

    # --- checkpoints -------------------------------------------------------------------------
    def _check_weights(self) -> None:
        """Non-finite weights are never checkpointed or sent to a generator."""
        bad = nonfinite_parameters(self.model)
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise NonFiniteError(
                f"after step {self.step_index} the weights hold NaN or infinity ({shown}); they "
                f"were not saved or sent to the generator (checkpoints: {self.output / 'checkpoints'})"
            )

    def save(self) -> Path:
        """Checkpoint this step, then delete checkpoints beyond ``checkpoint.keep_last``."""
        self._check_weights()
        state = TrainerState(
            self.step_index, self.samples_seen, self.games_seen, self.baselines.state_dict(), self.config.to_dict()
        )
        root = self.output / "checkpoints"
        learner = self.learner
        path = save_checkpoint(root, state, self.model, learner.optimizer, learner.scheduler, learner.generator)
        prune_checkpoints(root, self.config.checkpoint.keep_last)
        return path

    def _saved_step(self) -> Path:
        """This step's checkpoint: the one on disk, else a new one."""
        saved = self.output / "checkpoints" / step_name(self.step_index)
        return saved if saved.is_dir() else self.save()

    def resume(self, path: Path, hashes: bool = True) -> None:
        """Continue from the checkpoint at ``path`` with this run's settings (a changed
        learning rate, schedule or RAE setting takes effect from here)."""
        learner = self.learner
        state = load_checkpoint(path, self.model, learner.optimizer, learner.scheduler, learner.generator, hashes)
        try:
            self.baselines.load_state_dict(state.baselines)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path / 'state.json'}: unreadable RAE baselines ({error!r})") from None
        self.baselines.alpha, self.baselines.update_first = self.config.rae.alpha, self.config.rae.update_first
        self.step_index, self.samples_seen, self.games_seen = state.step, state.samples, state.games
        learner.apply_config(self.config.learner)
        self._sync_weights()

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
                w = config.warm_start
                loss = warm_start(self.model, self.tokenizer, self.policy.template, [g.id for g in config.games], [g.env_kwargs for g in config.games], w.steps, w.batch_size, w.learning_rate, config.seed)
                self._sync_weights()
                logger.log(0, {"warm_start/loss": loss})
            if not resumed and (config.eval.every or config.eval.reasoning.every):
                first = {"step": 0, **(self.evaluate() if config.eval.every else {})}
                if config.eval.reasoning.every:
                    first.update(self.evaluate_reasoning())
                logger.log(0, first)
                history.append(first)
            bar = tqdm(total=config.steps, initial=self.step_index, desc="self-play", disable=not progress)
            while self.step_index < config.steps:
                try:
                    metrics = self.step()
                except WeightSyncError as error:
                    saved = self._saved_step()
                    raise WeightSyncError(
                        f"{error}\nStep {self.step_index} is saved in {saved}; with the server "
                        "back, continue with --resume (it sends these weights first)."
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


def free_cached_memory() -> None:
    """Give the memory PyTorch's allocator holds but no tensor uses back to the GPU (for the
    generator to wake into)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _postfix(metrics: dict[str, float]) -> dict[str, str]:
    shown = {"loss": "loss", "invalid_rate": "invalid", "eval/kuhn_exploitability": "exploit"}
    return {label: f"{metrics[key]:.3f}" for key, label in shown.items() if key in metrics}

