"""A Simple Negotiation trader: accepts exactly the offers that raise its own inventory value."""

from __future__ import annotations

import numpy as np

import spiral_envs
from spiral_agents.base import Observation


class ValueTrader:
    """Accepts an offer if and only if it raises its own value (and it holds what is asked);
    otherwise proposes a trade that would: some of its least valued resource for one unit of
    its most valued one, sized so that its own value rises."""

    name = "trader"

    def __init__(self, game: str = "SimpleNegotiation-v1", seed: int | None = None) -> None:
        self.resources = spiral_envs.make_game(game).resources
        self.rng = np.random.default_rng(seed)

    def act(self, observation: Observation) -> str:
        n = len(self.resources)
        obs = np.asarray(observation["observation"])
        held, values = obs[:n].astype(int), obs[n : 2 * n].astype(int)
        if obs[4 * n]:  # an offer stands for me: I would receive `gets` and give `pays`
            gets, pays = obs[2 * n : 3 * n].astype(int), obs[3 * n : 4 * n].astype(int)
            if (pays <= held).all() and int(gets @ values) > int(pays @ values):
                return "That works for me. [Accept]"
            return "That does not help me. [Deny]"
        return self._proposal(held, values)

    def _proposal(self, held: np.ndarray, values: np.ndarray) -> str:
        order = np.argsort(values, kind="stable")
        cheap = next((int(i) for i in order if held[i] > 0), None)
        dear = int(order[-1])
        if cheap is None or values[dear] <= values[cheap]:
            return "I am happy with what I have."
        give = max(1, min(int(held[cheap]), int((values[dear] - 1) // values[cheap])))
        return (
            f"My {self.resources[cheap]} for your {self.resources[dear]}? "
            f"[Offer: {give} {self.resources[cheap]} -> 1 {self.resources[dear]}]"
        )
