"""A user game (imported by a run's ``imports``) that kills the process dealing it once: the first
deal after the file named by ``$SPIRAL_TEST_CRASH_MARKER`` appears removes the file and exits at
once, as a worker dies of a segfault or the OOM killer mid-step."""

from __future__ import annotations

import os

import numpy as np

import spiral_envs
from spiral_envs.games.kuhn_poker import KuhnPoker, KuhnPokerState


class CrashingKuhnPoker(KuhnPoker):
    id = "CrashingKuhnPoker-v1"

    def new_state(self, rng: np.random.Generator) -> KuhnPokerState:
        marker = os.environ.get("SPIRAL_TEST_CRASH_MARKER")
        if marker:
            try:
                os.remove(marker)  # one process wins the removal, and dies
            except FileNotFoundError:
                pass
            else:
                os._exit(1)
        return super().new_state(rng)


spiral_envs.register_game(CrashingKuhnPoker)
