"""Getting the learners' weights to the generators after every update, through one interface.

The channel follows from where the workers are:

- a generator in the learner's process whose backend generates with the learner's module
  (transformers, the CPU demo) needs nothing;
- a generator in the learner's process with its own engine (in-process vLLM; a vLLM server,
  which reloads a checkpoint the backend writes) gets the merged weights directly;
- generators on Ray get the full state that learner rank 0 gathers once (LoRA merged, on the
  CPU), through Ray's object store: one put, one get per generator.

vLLM's native NCCL/IPC weight transfer between GPUs is not one of them yet (see the README).
A generator that was restarted gets the latest weights again before it plays (:meth:`resend`).
Seconds and bytes of each sync are reported.

In asynchronous training (``versioned``) the generators are playing when the weights come: each
keeps them (``offer_weights``, on its actor's second thread) and loads them at its next safe
point between generate calls, counting their version (the number of updates behind them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from spiral_train.cluster import WEIGHTS_GROUP, InProcess, RayWorkers, WorkerFailure


@dataclass(frozen=True)
class SyncReport:
    seconds: float
    bytes: int
    """Bytes each generator received (0 where it shares the learner's module)."""


class WeightSync:
    def __init__(self, learners: InProcess | RayWorkers, generators: InProcess | RayWorkers, versioned: bool = False) -> None:
        self.learners, self.generators = learners, generators
        self.needed = not all(generators.call("shares_learner_module"))
        self.versioned = versioned
        """Asynchronous training: weights are offered with their version, loaded at a safe point."""
        self.latest: Any = None
        """The last weights sent (an object reference on Ray), for restarted generators."""
        self.latest_version = 0

    def push(self, version: int = 0) -> tuple[SyncReport, list[int]]:
        """Send the learners' weights (those of update ``version``) to every generator; returns
        the report and the indices of generators that died on the way (they get the weights
        again once back)."""
        if not self.needed:
            return SyncReport(0.0, 0), []
        start = time.perf_counter()
        self.latest = None  # free the old weights before gathering the new
        self.latest = self.learners.first_ref("generator_state")
        self.latest_version = version
        results = self._send(list(range(len(self.generators))))
        dead = [i for i, result in enumerate(results) if isinstance(result, WorkerFailure)]
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, WorkerFailure):
                raise result
        sizes = [r for r in results if isinstance(r, int)]
        return SyncReport(time.perf_counter() - start, max(sizes, default=0)), dead

    def resend(self, index: int) -> None:
        """Give generator ``index`` (restarted) the latest weights, if any were sent."""
        if self.needed and self.latest is not None:
            result = self._send([index])[index]
            if isinstance(result, BaseException):
                raise result

    def _send(self, indices: list[int]) -> list[Any]:
        """The latest weights to the generators ``indices`` (their results or failures; None
        for the others)."""
        if not self.versioned:
            return self.generators.call_each("update_weights", [(self.latest,) if i in indices else None for i in range(len(self.generators))])
        offers = [(self.latest, self.latest_version) if i in indices else None for i in range(len(self.generators))]
        return self.generators.call_each("offer_weights", offers, concurrency_group=WEIGHTS_GROUP)
