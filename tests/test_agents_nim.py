"""NimSumAgent: proved to win every winnable Nim position, against every opponent reply."""

from __future__ import annotations

import itertools
from functools import cache, reduce
from operator import xor

import numpy as np
import pytest

import spiral_envs
from spiral_agents import NimSumAgent, RandomAgent, make_agent
from spiral_agents.arena import play_game

Position = tuple[int, ...]


def env_at(start: Position, position: Position) -> spiral_envs.SpiralAECEnv:
    """A Nim env with piles ``start``, played down to ``position`` (one move per pile)."""
    env = spiral_envs.env("Nim-v0", piles=start)
    env.reset(seed=0)
    offsets = np.cumsum((0, *start))
    for i, (before, after) in enumerate(zip(start, position)):
        if before > after:
            env.step(int(offsets[i] + before - after - 1))
    assert list(env.game_state.piles) == list(position) and not any(env.terminations.values())
    return env


@pytest.mark.parametrize("start", [(3, 4, 5), (1, 2, 3, 7)])
@pytest.mark.parametrize("with_piles_option", [False, True])
def test_wins_every_winnable_position_against_every_reply(
    start: Position, with_piles_option: bool
) -> None:
    """Exhaustive: from every reachable position with a non-zero nim-sum, every move the agent
    may choose (all ties) leads, whatever the opponent replies, to the agent taking the last
    object. The agent sees only the env's real observations."""
    agent = NimSumAgent(seed=0, piles=start if with_piles_option else None)

    @cache
    def agent_wins(position: Position) -> bool:
        env = env_at(start, position)
        observation = env.observe(env.agent_selection)
        choices = np.flatnonzero(agent.action_probabilities(observation)).tolist()
        assert agent.act(observation) in choices
        for move in choices:
            env = env_at(start, position)
            mover = env.agent_selection
            env.step(move)
            if env.terminations[mover]:
                assert env.infos[mover]["outcome"] == "win"
                continue
            after = tuple(env.game_state.piles)
            for pile, size in enumerate(after):
                for take in range(1, size + 1):
                    reply = after[:pile] + (size - take,) + after[pile + 1 :]
                    if not any(reply) or not agent_wins(reply):
                        return False
        return True

    positions = [p for p in itertools.product(*(range(s + 1) for s in start)) if any(p)]
    winnable = [p for p in positions if reduce(xor, p) != 0]
    assert len(winnable) == {(3, 4, 5): 102, (1, 2, 3, 7): 168}[start]
    assert all(agent_wins(p) for p in winnable)


def test_beats_random_in_every_seeded_game_as_first_player() -> None:
    wins = 0
    for seed in range(100):
        agents = {"player_0": NimSumAgent(seed=seed), "player_1": RandomAgent(seed=1000 + seed)}
        record = play_game("Nim-v0", agents, seed)
        wins += record.outcome["player_0"] == "win"
    assert wins == 100


def test_plays_a_variant_through_the_registry() -> None:
    agents = {
        "player_0": make_agent("nim-optimal", "Nim-v0", seed=1, piles=(1, 2, 3, 7)),
        "player_1": make_agent("random", "Nim-v0", seed=2),
    }
    for seed in range(20):
        record = play_game("Nim-v0", agents, seed, env_kwargs={"piles": (1, 2, 3, 7)})
        assert record.outcome["player_0"] == "win" and record.error is None


def test_lost_position_takes_one_from_a_largest_pile() -> None:
    env = env_at((3, 4, 5), (1, 4, 5))  # 1 ^ 4 ^ 5 == 0
    observation = env.observe(env.agent_selection)
    probabilities = NimSumAgent().action_probabilities(observation)
    assert probabilities[3 + 4 + 0] == 1.0  # [2 1]: one object from pile 2 (5 objects)
    env = env_at((3, 4, 5), (3, 3, 0))
    probabilities = NimSumAgent().action_probabilities(env.observe(env.agent_selection))
    assert probabilities[0] == probabilities[3] == 0.5  # [0 1] or [1 1], the seed decides


def test_rejects_bad_options_and_mismatched_variants() -> None:
    with pytest.raises(ValueError, match="piles"):
        NimSumAgent(piles="345")
    with pytest.raises(ValueError, match="pile sizes"):
        NimSumAgent(piles=(3, -1))
    with pytest.raises(ValueError, match="plays Nim-v0"):
        NimSumAgent("TicTacToe-v0")
    observation = env_at((1, 2, 3, 7), (1, 2, 3, 7)).observe("player_0")
    with pytest.raises(ValueError, match="does not come from Nim"):
        NimSumAgent(piles=(3, 4, 5)).act(observation)
    observation = env_at((5, 4, 3), (5, 4, 3)).observe("player_0")
    with pytest.raises(ValueError, match="does not fit"):
        NimSumAgent(piles=(3, 4, 5)).act(observation)
