"""Role-conditioned Advantage Estimation (RAE), SPIRAL's variance reduction for self-play.

One baseline per (game, role): an exponential moving average of that role's returns,
``b <- alpha * b + (1 - alpha) * R`` with ``alpha = 0.95``, starting at 0. Every turn a role
played in a finished game gets the advantage ``A = R - b``. By default ``b`` is read *before*
this return updates it (SPIRAL's public code; the estimate is then unbiased); ``update_first``
reads it after (the paper's formula).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Scored(Protocol):
    game: str
    episode: int
    role: int
    reward: float | None


class RoleBaselines:
    """EMA baselines keyed by (game id, role), and the advantages they give."""

    def __init__(self, alpha: float = 0.95, update_first: bool = False) -> None:
        if not 0 <= alpha < 1:
            raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
        self.alpha = alpha
        self.update_first = update_first
        self.values: dict[tuple[str, int], float] = {}

    def baseline(self, game: str, role: int) -> float:
        return self.values.get((game, role), 0.0)

    def observe(self, game: str, role: int, ret: float) -> float:
        """Fold one game's return of ``role`` into its baseline; return that game's advantage."""
        before = self.baseline(game, role)
        after = self.alpha * before + (1 - self.alpha) * ret
        self.values[(game, role)] = after
        return ret - (after if self.update_first else before)

    def advantages(self, samples: Iterable[Scored]) -> list[float]:
        """Advantage of every sample: one baseline update per (episode, role), in order of
        first appearance, and that game's advantage on each of the role's turns."""
        samples = list(samples)
        per_game: dict[tuple[int, int], float] = {}
        for sample in samples:
            key = (sample.episode, sample.role)
            if key not in per_game:
                if sample.reward is None:
                    raise ValueError(f"sample of episode {sample.episode} has no final reward")
                per_game[key] = self.observe(sample.game, sample.role, sample.reward)
        return [per_game[(s.episode, s.role)] for s in samples]

    def state_dict(self) -> dict:
        return {
            "alpha": self.alpha,
            "update_first": self.update_first,
            "values": [[game, role, value] for (game, role), value in self.values.items()],
        }

    def load_state_dict(self, state: dict) -> None:
        self.alpha = state["alpha"]
        self.update_first = state["update_first"]
        self.values = {(game, int(role)): float(value) for game, role, value in state["values"]}
