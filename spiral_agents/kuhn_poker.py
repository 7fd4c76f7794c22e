"""The Kuhn Poker equilibrium family, played hand by hand (single-hand strategy each hand)."""

from __future__ import annotations

import numpy as np

from spiral_agents.base import Observation, sample_from
from spiral_envs.games.kuhn_poker import BET, CALL, CHECK, FOLD

J, Q, K = range(3)


def read_information_set(observation: Observation) -> tuple[bool, int, tuple[int, ...]]:
    """(am I the opener, my card, this hand's betting so far) from a Kuhn observation."""
    obs = np.asarray(observation["observation"])
    card = int(np.argmax(obs[:3]))
    history = tuple(int(np.argmax(obs[8 + 4 * i : 12 + 4 * i])) for i in range(3) if obs[8 + 4 * i : 12 + 4 * i].any())
    return bool(obs[3]), card, history


def equilibrium_probabilities(opener: bool, card: int, history: tuple[int, ...], alpha: float) -> np.ndarray:
    """Action distribution of the Nash equilibrium with parameter ``alpha`` in [0, 1/3].

    Opener: bets J with probability alpha, never bets Q first, bets K with 3 * alpha; after
    check-bet it folds J, calls Q with alpha + 1/3 and always calls K. The other player:
    facing a bet folds J, calls Q with 1/3, calls K; after a check bets J with 1/3, checks Q,
    bets K.
    """
    p = np.zeros(4)
    if opener and history == ():
        bet = (alpha, 0.0, 3 * alpha)[card]
        p[BET], p[CHECK] = bet, 1 - bet
    elif opener and history == (CHECK, BET):
        call = (0.0, alpha + 1 / 3, 1.0)[card]
        p[CALL], p[FOLD] = call, 1 - call
    elif not opener and history == (BET,):
        call = (0.0, 1 / 3, 1.0)[card]
        p[CALL], p[FOLD] = call, 1 - call
    elif not opener and history == (CHECK,):
        bet = (1 / 3, 0.0, 1.0)[card]
        p[BET], p[CHECK] = bet, 1 - bet
    else:
        raise ValueError(f"not a decision point: opener={opener}, history={history}")
    return p


class KuhnNashAgent:
    """Plays the Kuhn Poker equilibrium with parameter ``alpha`` (default 1/6)."""

    name = "kuhn-nash"

    def __init__(self, game: str | None = None, seed: int | None = None, alpha: float = 1 / 6) -> None:
        if not 0 <= alpha <= 1 / 3:
            raise ValueError(f"alpha must lie in [0, 1/3], got {alpha}")
        self.alpha = alpha
        self.rng = np.random.default_rng(seed)

    def action_probabilities(self, observation: Observation) -> np.ndarray:
        return equilibrium_probabilities(*read_information_set(observation), self.alpha)

    def act(self, observation: Observation) -> int:
        return sample_from(self.action_probabilities(observation), self.rng)
