"""Role-conditioned Advantage Estimation (RAE), SPIRAL's variance reduction for self-play.

One baseline per (game, role, opponent kind): an exponential moving average of that role's
returns against that kind of opponent (self-play's kind is ``self``; see the README for why
opponents get their own),
``b <- alpha * b + (1 - alpha) * R`` with ``alpha = 0.95``, starting at 0. Every turn a role
played in a finished game gets the advantage ``A = R - b``. By default ``b`` is read *before*
this return updates it (SPIRAL's public code; the estimate is then unbiased); ``update_first``
reads it after (the paper's formula).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

SELF_PLAY = "self"


class Scored(Protocol):
    game: str
    episode: int
    role: int
    reward: float | None


class RoleBaselines:
    """EMA baselines keyed by (game id, role, opponent kind), and the advantages they give."""

    def __init__(self, alpha: float = 0.95, update_first: bool = False) -> None:
        if not 0 <= alpha < 1:
            raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
        self.alpha = alpha
        self.update_first = update_first
        self.values: dict[tuple[str, int, str], float] = {}

    def baseline(self, game: str, role: int, opponent: str = SELF_PLAY) -> float:
        return self.values.get((game, role, opponent), 0.0)

    def observe(self, game: str, role: int, ret: float, opponent: str = SELF_PLAY) -> float:
        """Fold one game's return of ``role`` into its baseline; return that game's advantage."""
        before = self.baseline(game, role, opponent)
        after = self.alpha * before + (1 - self.alpha) * ret
        self.values[(game, role, opponent)] = after
        return ret - (after if self.update_first else before)

    def advantages(self, samples: Iterable[Scored], opponent: Callable[[Scored], str] | None = None) -> list[float]:
        """Advantage of every sample: one baseline update per (episode, role), in order of
        first appearance, and that game's advantage on each of the role's turns. ``opponent``
        gives a sample's opponent kind (default: every game is self-play)."""
        samples = list(samples)
        per_game: dict[tuple[int, int], float] = {}
        for sample in samples:
            key = (sample.episode, sample.role)
            if key not in per_game:
                if sample.reward is None:
                    raise ValueError(f"sample of episode {sample.episode} has no final reward")
                kind = SELF_PLAY if opponent is None else opponent(sample)
                per_game[key] = self.observe(sample.game, sample.role, sample.reward, kind)
        return [per_game[(s.episode, s.role)] for s in samples]

    def state_dict(self) -> dict:
        return {
            "alpha": self.alpha,
            "update_first": self.update_first,
            "values": [[game, role, value, opponent] for (game, role, opponent), value in self.values.items()],
        }

    def load_state_dict(self, state: dict) -> None:
        """Load a :meth:`state_dict` (entries saved before opponents existed are self-play's)."""
        self.alpha = state["alpha"]
        self.update_first = state["update_first"]
        self.values = {
            (str(game), int(role), str(rest[0]) if rest else SELF_PLAY): float(value)
            for game, role, value, *rest in state["values"]
        }
