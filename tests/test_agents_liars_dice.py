"""liars-dice-prob: exact bid probabilities, legal play, the calling rule, and wins over random."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

import spiral_envs
from spiral_agents import LiarsDiceBidder, RandomAgent, make_agent
from spiral_agents.arena import play_game
from spiral_agents.liars_dice import at_least, bid_probability
from spiral_envs.games.liars_dice import bid_index, bid_of

CALL = 60  # [Call] in LiarsDice-v1 (5 dice each)


class DealtHands:
    """Replaces the state's generator: each ``integers(1, 7, size=n)`` deals the next hand."""

    def __init__(self, *hands: list[int]) -> None:
        self.hands = [np.array(hand) for hand in hands]

    def integers(self, low: int, high: int, size: int) -> np.ndarray:
        return self.hands.pop(0)


def dealt_env(hand_0: list[int], hand_1: list[int]) -> spiral_envs.SpiralAECEnv:
    env = spiral_envs.env("LiarsDice-v1", dice=len(hand_0))
    env.reset(seed=0)
    env.game_state = env.game.new_state(DealtHands(hand_0, hand_1))
    return env


def win_rate(agent: Any, opponent: Any, games: int, **variant: int) -> float:
    """``agent``'s share of wins over seeded games (seeds 0..games-1), alternating seats; every
    move of ``agent`` is checked against the action mask and the env's verdict."""
    env = spiral_envs.env("LiarsDice-v1", **variant)
    wins = 0
    for seed in range(games):
        seat = ("player_0", "player_1")[seed % 2]
        players = {seat: agent, ("player_1" if seat == "player_0" else "player_0"): opponent}
        env.reset(seed=seed)
        while not env.terminations[env.agent_selection]:
            mover = env.agent_selection
            observation = env.observe(mover)
            action = players[mover].act(observation)
            assert observation["action_mask"][action] == 1
            env.step(action)
            assert not env.infos[mover].get("invalid_move")
        wins += env.infos[seat]["outcome"] == "win"
    return wins / games


def test_bid_probabilities_match_enumeration() -> None:
    for unseen in range(5):
        hands = list(itertools.product(range(1, 7), repeat=unseen))
        for needed in range(-1, unseen + 2):
            share = sum(hand.count(3) >= needed for hand in hands) / len(hands)
            assert at_least(unseen, needed) == pytest.approx(share, abs=1e-12)
    own = (2, 0, 1, 0, 0, 2)  # faces 1-6 of a five-die hand
    assert bid_probability(own, 5, 2, 1) == 1.0
    assert bid_probability(own, 5, 8, 2) == 0.0
    assert bid_probability(own, 5, 3, 6) == pytest.approx(1 - (5 / 6) ** 5)


def test_opens_with_the_lowest_bid_its_own_dice_make_certain() -> None:
    env = dealt_env([2, 2, 3, 5, 5], [1, 1, 4, 6, 6])
    assert LiarsDiceBidder().act(env.observe("player_0")) == bid_index(1, 2)
    # seeded random tie-breaking draws among the five certain bids: 1 or 2 twos or fives, 1 three
    agent = LiarsDiceBidder(seed=3, tie_break="random")
    certain = {bid_index(q, f) for q, f in ((1, 2), (2, 2), (1, 3), (1, 5), (2, 5))}
    probabilities = agent.action_probabilities(env.observe("player_0"))
    assert set(np.flatnonzero(probabilities)) == certain and probabilities.sum() == pytest.approx(1)
    picks = {agent.act(env.observe("player_0")) for _ in range(100)}
    assert picks == certain


def test_calls_below_the_threshold_and_otherwise_makes_the_likeliest_raise() -> None:
    env = dealt_env([6, 6, 6, 6, 1], [2, 3, 4, 5, 1])
    env.step(bid_index(5, 6))  # player 1 holds no 6: all five unseen dice must show 6
    assert make_agent("liars-dice-prob", "LiarsDice-v1").act(env.observe("player_1")) == CALL
    env = dealt_env([2, 3, 4, 5, 1], [6, 6, 6, 6, 1])
    env.step(bid_index(5, 6))  # player 1 holds four 6s: true with 1 - (5/6)**5 = 0.598
    observation = env.observe("player_1")
    # likeliest raise: [Bid: 6, 6], true with P(two or more 6s among 5 dice) = 0.196
    assert LiarsDiceBidder(threshold=0.5).act(observation) == bid_index(6, 6)
    assert LiarsDiceBidder(threshold=0.7).act(observation) == CALL


@pytest.mark.parametrize("dice", [5, 2])
@pytest.mark.parametrize("threshold", [0.5, 1.0, 0.01])
def test_calls_every_impossible_bid_and_never_a_certain_one(dice: int, threshold: float) -> None:
    """Over 20 seeded deals, every opening bid of player 0: player 1's agent calls each bid that
    needs more of a face than its own count plus the opponent's dice, and calls no bid its own
    dice already make true."""
    env = spiral_envs.env("LiarsDice-v1", dice=dice)
    agent = LiarsDiceBidder(threshold=threshold, seed=0, tie_break="random")
    impossible = certain = 0
    for seed in range(20):
        env.reset(seed=seed)
        own = env.game_state.face_counts[1]
        for bid in range(12 * dice):
            quantity, face = bid_of(bid)
            if own[face - 1] < quantity <= own[face - 1] + dice:
                continue
            env.reset(seed=seed)
            env.step(bid)
            action = agent.act(env.observe("player_1"))
            if quantity > own[face - 1] + dice:
                impossible += 1
                assert action == 12 * dice, (seed, quantity, face)
            else:
                certain += 1
                assert action != 12 * dice, (seed, quantity, face)
    assert impossible > 100 and certain > 20


def test_every_raise_is_a_likeliest_one_and_the_lowest_on_ties() -> None:
    """At every decision in 100 seeded games against random, a raise is the lowest legal raise
    of the highest probability, and a call happens exactly below the threshold (or with no
    raise left)."""
    env = spiral_envs.env("LiarsDice-v1")
    agent, opponent = LiarsDiceBidder(), RandomAgent(seed=5)
    decisions = 0
    for seed in range(100):
        env.reset(seed=seed)
        while not env.terminations[env.agent_selection]:
            mover = env.agent_selection
            observation = env.observe(mover)
            if mover == "player_1":
                env.step(opponent.act(observation))
                continue
            state = env.game_state
            own, unseen = tuple(state.face_counts[0]), state.dice_left[1]
            raises = [a for a in np.flatnonzero(observation["action_mask"]) if a != CALL]
            action = agent.act(observation)
            if action == CALL:
                standing = bid_probability(own, unseen, *bid_of(state.bid))
                assert standing < 0.5 or not raises
            else:
                chances = [bid_probability(own, unseen, *bid_of(a)) for a in raises]
                assert action == raises[int(np.argmax(chances))]
                if state.bid >= 0:
                    assert bid_probability(own, unseen, *bid_of(state.bid)) >= 0.5
            decisions += 1
            env.step(action)
    assert decisions > 500


@pytest.mark.parametrize("tie_break", ["lowest", "random"])
def test_beats_random_by_a_wide_margin(tie_break: str) -> None:
    """1000 seeded games of LiarsDice-v1, seats alternating, every move legal: 99.9% (lowest)
    and 100% (random ties) wins; 400 games with 2 dice each: 96.75% and 97.0%."""
    agent = LiarsDiceBidder(seed=0, tie_break=tie_break)
    assert win_rate(agent, RandomAgent(seed=1), 1000) >= 0.98
    assert win_rate(agent, RandomAgent(seed=1), 400, dice=2) >= 0.95


def test_self_play_is_legal_and_the_registry_builds_it() -> None:
    agents = {
        "player_0": make_agent("liars-dice-prob@threshold=0.3", "LiarsDice-v1", seed=1),
        "player_1": make_agent("liars-dice-prob@tie_break='random'", "LiarsDice-v1", seed=2),
    }
    for seed in range(20):
        record = play_game("LiarsDice-v1", agents, seed, env_kwargs={"dice": 3})
        assert record.error is None and not any(move["invalid"] for move in record.moves)


def test_rejects_bad_options_and_observations() -> None:
    bad = ({"threshold": 0}, {"threshold": 1.5}, {"threshold": "high"}, {"tie_break": "up"})
    for options in bad:
        with pytest.raises(ValueError):
            LiarsDiceBidder(**options)
    with pytest.raises(ValueError, match="plays LiarsDice-v1"):
        LiarsDiceBidder("PigDice-v1")
    env = dealt_env([2, 2, 3, 5, 5], [1, 1, 4, 6, 6])
    with pytest.raises(ValueError, match="off-turn"):
        LiarsDiceBidder().act(env.observe("player_1"))
    with pytest.raises(ValueError, match="not a Liar's Dice observation"):
        LiarsDiceBidder().act({"observation": np.zeros(4), "action_mask": np.ones(2)})
