"""Asynchronous self-play (``max_staleness`` = k >= 1): the generators play the next steps'
games while the learners train, on Ray workers of their own.

One policy update u (:meth:`Overlap.step`):

1. wait for step u's games (the first step submits its own), with more rounds where the
   synchronous trainer would play them (:meth:`spiral_train.trainer.Trainer._play`: the same
   episodes of the seed tree);
2. submit the games of each step up to u + k not submitted yet (as many as the last step's
   turns per game say are needed, in rounds of ``concurrency``); a generator plays its calls
   one after the other;
3. train update u on step u's turns, except those played by weights more than k updates behind
   the learner (lag = u - the turn's ``policy_version``, counted as ``stale_samples_dropped``);
4. offer the new weights (version u + 1) to every generator: it loads them at its next safe
   point between generate calls (:meth:`~spiral_train.workers.GeneratorWorker.offer_weights`),
   so the games in play continue on them, and each turn records the version that played it.

A step's games are submitted after the weights of version u - k were offered, so every
turn trained at update u has lag <= k by construction (with k = 1: step u + 1 is played during
update u, by version u and, once it is offered, u + 1); the filter is the bound's guard, and its
count is expected to stay 0. The truncated importance weight toward the sampler's log-probs
(``learner.importance_cap``) corrects the off-policy turns.

RAE baselines move in the order the controller takes the games: step by step, and within a step
in episode order, as in synchronous training (not in the order generators finish them, which
would make the advantages depend on timing). The seed tree still decides which games a step
plays (episodes, deals, each turn's generation seed); which weights play each turn depends on
when an update lands, so an asynchronous run does not reproduce exactly.

Checkpoints are written between updates like synchronous ones; the games in flight are not in
them. A resumed run replays them from their seeds (steps u, u + 1, ...: the same episodes and
generation seeds) with the checkpoint's weights: what the killed run's generators had played of
them, on the weights they had, is lost.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spiral_agents.llm.rollout import TurnSample
from spiral_train.cluster import WorkerFailure
from spiral_train.population import LEARNER

if TYPE_CHECKING:
    from spiral_train.trainer import StepGames, Trainer


def split_stale(samples: Sequence[TurnSample], update: int, max_staleness: int) -> tuple[list[TurnSample], list[TurnSample]]:
    """``samples`` (in order) whose policy version is at most ``max_staleness`` updates behind
    ``update``, and the others."""
    kept, stale = [], []
    for sample in samples:
        if sample.policy_version is None:
            raise ValueError(f"turn {sample.turn} of episode {sample.episode} records no policy version")
        (kept if update - sample.policy_version <= max_staleness else stale).append(sample)
    return kept, stale


@dataclass
class _Round:
    shares: list[list[int]]
    """Each generator's episodes."""
    refs: list[Any]
    number: int
    """Rounds submitted before this one (of all steps)."""


@dataclass
class _Step:
    """A step whose games were asked for and are not all taken."""

    step: int
    next_episode: int = 0
    rounds: deque[_Round] = field(default_factory=deque)


class Overlap:
    """The asynchronous step loop over ``trainer``'s workers (Ray), with ``depth`` steps played
    ahead of the learner (``max_staleness``; 0 plays each step after the last update, as the
    synchronous trainer does)."""

    def __init__(self, trainer: Trainer, depth: int) -> None:
        self.trainer = trainer
        self.depth = depth
        self.queue: deque[_Step] = deque()
        """Submitted steps from ``trainer.step_index`` on, in order."""
        self.rounds_submitted = 0
        self.revived: dict[int, int] = {}
        """Generator index -> rounds submitted when it was last revived (the calls before then
        died with it)."""

    def step(self) -> dict[str, float]:
        """One policy update, with the next steps' games in play meanwhile."""
        t, config = self.trainer, self.trainer.config
        start = time.perf_counter()
        if not self.queue:
            self.queue.append(self._submit(t.step_index))
        rollout, generator_idle = self._collect(self.queue.popleft())
        generated = time.perf_counter()
        samples, games = rollout.samples, rollout.games
        void, played = t._learner_turns(samples)
        finished = len(games) - len(void)
        if finished:
            t.turns_per_game = max(1.0, len(played) / finished)  # sizes the steps submitted next
        for step in range(t.step_index + 1 + len(self.queue), min(t.step_index + self.depth, config.steps - 1) + 1):
            self.queue.append(self._submit(step))

        update = t.step_index
        fresh, stale = split_stale([s for s in played if s.response_token_ids], update, self.depth)
        trained, advantages, metrics = t._batch(played, fresh)
        if trained:
            metrics.update(t.learners.first_result("update", trained, advantages))
        learned = time.perf_counter()
        t._count_step(rollout)
        sync = self._push()
        t._snapshot_if_due()  # queued behind the plays already submitted, before later ones
        synced = time.perf_counter()

        lags = [update - s.policy_version for s in trained]
        metrics.update(t._step_metrics(rollout, void, trained, sync, (start, generated, learned, synced), rollout.busiest))
        metrics.update(
            policy_lag_max=max(lags, default=0),
            policy_lag_mean=sum(lags) / len(lags) if lags else 0.0,
            stale_samples_dropped=len(stale),
            generator_idle_seconds=generator_idle,
            learner_idle_seconds=synced - start - metrics.get("learner_seconds", 0.0),
        )
        return metrics

    # --- games ------------------------------------------------------------------------------
    def _submit(self, step: int) -> _Step:
        """Ask for ``step``'s games: as many as ``samples_per_step`` turns need at the last
        step's turns per game, in rounds of at most ``concurrency`` (all submitted now, so
        that they are played ahead too)."""
        t = self.trainer
        pending = _Step(step)
        needed = max(1, math.ceil(t.config.samples_per_step / t.turns_per_game))
        while pending.next_episode < needed:
            pending.rounds.append(self._round(pending, min(t.config.concurrency, needed - pending.next_episode)))
        return pending

    def _round(self, pending: _Step, count: int) -> _Round:
        """Submit the next ``count`` episodes of ``pending``, shared between the generators."""
        t = self.trainer
        episodes = list(range(pending.next_episode, pending.next_episode + count))
        pending.next_episode += count
        shares = [episodes[i :: len(t.generators)] for i in range(len(t.generators))]
        plan = t._plan()  # the pool as it is now: the generators serve its members by then
        refs = t.generators.submit_each("play", [(pending.step, share, plan) for share in shares])
        self.rounds_submitted += 1
        return _Round(shares, refs, self.rounds_submitted - 1)

    def _collect(self, pending: _Step) -> tuple[StepGames, float]:
        """All of ``pending``'s games (rounds added until ``samples_per_step`` turns are in, as
        in :meth:`~spiral_train.trainer.Trainer._play`) and the generators' idle seconds before
        its calls."""
        from spiral_train.trainer import StepGames

        target = self.trainer.config.samples_per_step
        games = StepGames([], [], 0, 0, 0.0)
        idle = 0.0
        taken = 0  # the learner's turns
        while pending.rounds:
            round_ = pending.rounds.popleft()
            results = self.trainer.generators.results(round_.refs, "play")
            before = taken
            games.busiest += max((r.seconds for r in results if not isinstance(r, BaseException)), default=0.0)
            for index, (share, result) in enumerate(zip(round_.shares, results)):
                if isinstance(result, WorkerFailure):
                    games.lost += len(share)
                    self._generator_died(index, round_.number)
                    continue
                if isinstance(result, BaseException):
                    raise result
                games.samples += result.samples
                taken += sum(s.policy == LEARNER for s in result.samples)
                games.games += result.games
                games.calls += result.generation_calls
                idle += result.idle_seconds
            if taken == before and not games.lost:
                break  # no LLM seat to move: more rounds would not add turns
            if not pending.rounds and taken < target:
                turns_per_game = self.trainer.turns_per_game
                count = min(self.trainer.config.concurrency, max(1, math.ceil((target - taken) / turns_per_game)))
                pending.rounds.append(self._round(pending, count))
        games.samples.sort(key=lambda s: (s.episode, s.turn))
        return games, idle

    # --- weights and failures ---------------------------------------------------------------
    def _push(self) -> Any:
        """Offer the learners' weights (checked finite) as version ``step_index``."""
        t = self.trainer
        t._check_weights()
        report, dead = t.weights.push(t.step_index)
        for index in dead:
            self._generator_died(index, None)
        return report

    def _generator_died(self, index: int, round_number: int | None) -> None:
        """Generator ``index`` failed a play of round ``round_number`` (None: a weight offer):
        wait for Ray to restart it and resend the weights, unless the call was submitted before
        its last revival (it died with the generator that was revived)."""
        if round_number is not None and round_number < self.revived.get(index, 0):
            return
        self.trainer._revive(index)
        self.revived[index] = self.rounds_submitted
