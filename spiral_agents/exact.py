"""Exact evaluation on small games: Kuhn Poker exploitability and TicTacToe move optimality.

Both score an agent through the env's real observations (text included), so any agent that
reports ``action_probabilities`` can be scored, an LLM agent included.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import numpy as np

import spiral_envs
from spiral_agents.base import RandomAgent, as_agent, reset_agent
from spiral_agents.tictactoe import board_from_observation, move_values
from spiral_envs.games.kuhn_poker import BET, CALL, CHECK, FOLD

DEALS = tuple(itertools.permutations(range(3), 2))  # (opener's card, other's card)
# Decision points of one hand: (opener acts?, betting so far).
DECISIONS = ((True, ()), (False, (CHECK,)), (False, (BET,)), (True, (CHECK, BET)))
InfoSet = tuple[bool, int, tuple[int, ...]]  # (opener?, own card, betting so far)
Policy = dict[InfoSet, np.ndarray]


def _terminal_payoff(opener_card: int, other_card: int, history: tuple[int, ...]) -> int | None:
    """Chips the opener wins when ``history`` ends the hand (ante 1), else None."""
    showdown = 1 if opener_card > other_card else -1
    return {
        (CHECK, CHECK): showdown,
        (BET, CALL): 2 * showdown,
        (BET, FOLD): 1,
        (CHECK, BET, CALL): 2 * showdown,
        (CHECK, BET, FOLD): -1,
    }.get(history)


@cache
def _seed_for_deal(deal: tuple[int, int], first_opener: int) -> int:
    """A reset seed whose deal (to the opener, to the other player) is ``deal``."""
    env = spiral_envs.env("KuhnPoker-v1", rounds=1, first_opener=first_opener)
    for seed in itertools.count():
        env.reset(seed=seed)
        cards = env.game_state.cards
        if (cards[first_opener], cards[1 - first_opener]) == deal:
            return seed
    raise AssertionError("unreachable")


def kuhn_policy(agent: Any, env_kwargs: Mapping[str, Any] | None = None) -> Policy:
    """Read an agent's action probabilities at all 12 information sets of single-hand Kuhn.

    Observations come from ``KuhnPoker-v1`` with ``rounds=1`` and ``env_kwargs`` (pass those
    the agent plays with: an LLM trained where Player 1 opens, the env's default, has never
    seen a text in which Player 0 does, nor a brief text a full one); probabilities on illegal
    actions are an error.
    """
    agent = as_agent(agent)
    env = spiral_envs.env("KuhnPoker-v1", **{**(env_kwargs or {}), "rounds": 1})
    first_opener = env.game.first_opener
    policy: Policy = {}
    for (opener_card, other_card), (opener_acts, history) in itertools.product(DEALS, DECISIONS):
        card = opener_card if opener_acts else other_card
        if (opener_acts, card, history) in policy:
            continue
        env.reset(seed=_seed_for_deal((opener_card, other_card), first_opener))
        for action in history:
            env.step(action)
        observation = env.observe(env.agent_selection)
        p = np.asarray(agent.action_probabilities(observation), dtype=np.float64)
        if p.shape != (4,) or (p < 0).any() or p[observation["action_mask"] == 0].sum() > 1e-9:
            raise ValueError(f"agent gave {p} for legal mask {observation['action_mask']}")
        policy[(opener_acts, card, history)] = p / p.sum()
    return policy


def _opener_value(policy_of: Callable[[InfoSet], np.ndarray]) -> float:
    """Expected chips of the opener when both seats follow ``policy_of``."""

    def value(deal: tuple[int, int], history: tuple[int, ...]) -> float:
        payoff = _terminal_payoff(*deal, history)
        if payoff is not None:
            return payoff
        opener_acts = len(history) % 2 == 0
        probs = policy_of((opener_acts, deal[0] if opener_acts else deal[1], history))
        return sum(p * value(deal, history + (a,)) for a, p in enumerate(probs) if p > 0)

    return sum(value(deal, ()) for deal in DEALS) / len(DEALS)


def _pure_strategies(opener: bool) -> list[Policy]:
    points = [h for acts, h in DECISIONS if acts == opener]
    infosets = [(opener, card, h) for card in range(3) for h in points]
    options = {(): (CHECK, BET), (CHECK,): (CHECK, BET), (BET,): (CALL, FOLD), (CHECK, BET): (CALL, FOLD)}
    strategies = []
    for choice in itertools.product(*(options[h] for _, _, h in infosets)):
        strategies.append({infoset: np.eye(4)[a] for infoset, a in zip(infosets, choice)})
    return strategies


def kuhn_nash_conv(policy: Policy) -> float:
    """NashConv: the sum over seats of what a best response gains against ``policy``."""
    value = _opener_value(policy.__getitem__)
    gains = 0.0
    for opener in (True, False):
        best = max(
            _opener_value(lambda i, s=strategy, o=opener: s[i] if i[0] == o else policy[i])
            * (1 if opener else -1)
            for strategy in _pure_strategies(opener)
        )
        gains += best - (value if opener else -value)
    return gains


def kuhn_mixture(policies: list[Policy], weights: list[float] | None = None) -> Policy:
    """The behaviour policy of a mixture: each hand, one of ``policies`` is drawn (by
    ``weights``, default uniform) and plays the whole hand. At an information set a policy's
    vote counts in proportion to its weight times the probability that its own earlier
    actions led there (chance and the other seat reach it alike under every policy): the
    average strategy fictitious play drives to the equilibrium, not the plain mean of the
    action probabilities."""
    if not policies:
        raise ValueError("a mixture needs at least one policy")
    weights = [1.0] * len(policies) if weights is None else list(weights)
    if len(weights) != len(policies) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"need one non-negative weight per policy with a positive sum, got {weights}")
    mixed: Policy = {}
    for infoset in policies[0]:
        opener, card, history = infoset
        total, votes = 0.0, np.zeros(4)
        for policy, weight in zip(policies, weights):
            reach = weight
            for position, action in enumerate(history):
                if (position % 2 == 0) == opener:  # this seat's own earlier action
                    reach *= policy[(opener, card, history[:position])][action]
            total += reach
            votes += reach * policy[infoset]
        mixed[infoset] = votes / total if total > 0 else np.mean([p[infoset] for p in policies], axis=0)
    return mixed


def encode_policy(policy: Policy) -> dict[str, list[float]]:
    """A Kuhn policy as JSON data: ``"<opener 0|1>:<card>:<betting>"`` -> probabilities."""
    return {f"{int(o)}:{c}:{''.join(map(str, h))}": [float(x) for x in p] for (o, c, h), p in policy.items()}


def decode_policy(table: dict[str, list[float]]) -> Policy:
    """The inverse of :func:`encode_policy`; ValueError unless it names the 12 information
    sets, each with 4 probabilities that sum to 1."""
    policy: Policy = {}
    for key, probabilities in table.items():
        opener, card, betting = key.split(":")
        infoset = (opener == "1", int(card), tuple(int(a) for a in betting))
        p = np.asarray(probabilities, dtype=np.float64)
        if p.shape != (4,) or not np.isfinite(p).all() or (p < 0).any() or abs(p.sum() - 1) > 1e-6:
            raise ValueError(f"{key}: not 4 probabilities summing to 1: {probabilities}")
        policy[infoset] = p
    expected = {(acts, card, h) for card in range(3) for acts, h in DECISIONS}
    if set(policy) != expected:
        raise ValueError("a Kuhn policy names the 12 information sets of single-hand Kuhn Poker")
    return policy


def kuhn_exploitability(agent: Any, env_kwargs: Mapping[str, Any] | None = None) -> float:
    """Exploitability (NashConv / 2) of an agent in single-hand Kuhn Poker, in chips per hand,
    read on the observations of ``env_kwargs`` (:func:`kuhn_policy`).

    Uniformly random play scores 0.4583...; every member of the equilibrium family scores 0.
    """
    return kuhn_nash_conv(kuhn_policy(agent, env_kwargs)) / 2


def tictactoe_optimal_move_share(
    agent: Any, opponent: Any | None = None, games: int = 200, seed: int = 0
) -> dict[str, float]:
    """Share of the agent's TicTacToe moves that are game-theoretically optimal.

    Plays ``games`` games (seats alternating) against ``opponent`` (random by default) and
    scores every move the agent makes against the full minimax table (an invalid move is
    not optimal).
    """
    agent = as_agent(agent)
    opponent = as_agent(opponent or RandomAgent(seed=seed + 1))
    env = spiral_envs.env("TicTacToe-v0")
    optimal = moves = 0
    for game in range(games):
        env.reset(seed=seed + game)
        seat = f"player_{game % 2}"
        for a in (agent, opponent):
            reset_agent(a)
        while not (env.terminations[env.agent_selection] or env.truncations[env.agent_selection]):
            observation = env.observe(env.agent_selection)
            if env.agent_selection == seat:
                action = agent.act(observation)
                values = move_values(board_from_observation(observation))
                if isinstance(action, (int, np.integer)):
                    move = int(action)
                elif isinstance(action, str):  # a text move: what the game reads from it
                    move = getattr(env.game_state.parse(action), "move", None)
                else:  # Invalid(reason): no move at all
                    move = None
                moves += 1
                optimal += move in values and values[move] == max(values.values())
            else:
                action = opponent.act(observation)
            env.step(action)
    return {"optimal_share": optimal / moves if moves else float("nan"), "moves": moves}
