"""Calls out of order get the errors of PettingZoo's OrderEnforcingWrapper and Gymnasium's
OrderEnforcing, checked against those wrappers themselves, for every game.

The AEC attributes before reset raise AttributeError as the wrapper does, with Python's own
message: the wrapper's would need a ``__getattr__``, which turns off CPython's specialized
attribute loads and cost a fifth of the env's speed when measured."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
import pettingzoo
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.wrappers import OrderEnforcing
from pettingzoo.utils.env_logger import EnvLogger
from pettingzoo.utils.wrappers import OrderEnforcingWrapper

import spiral_envs
from tests.helpers import play_random

GAME_IDS = sorted(spiral_envs.GAMES)
SIMULTANEOUS_IDS = [g for g in GAME_IDS if spiral_envs.GAMES[g].simultaneous]
AFTER_DONE = (
    "[WARNING]: step() called after all agents are terminated or truncated. Should reset() first."
)

CALLS_BEFORE_RESET: dict[str, Callable[[Any], Any]] = {
    "step": lambda env: env.step("[0]"),
    "observe": lambda env: env.observe("player_0"),
    "last": lambda env: env.last(),
    "agent_iter": lambda env: env.agent_iter(),
    "render": lambda env: env.render(),
}
ATTRIBUTES_BEFORE_RESET: dict[str, Callable[[Any], Any]] = {
    "rewards": lambda env: env.rewards,
    "terminations": lambda env: env.terminations,
    "truncations": lambda env: env.truncations,
    "infos": lambda env: env.infos,
    "agent_selection": lambda env: env.agent_selection,
    "agents": lambda env: env.agents,
    "num_agents": lambda env: env.num_agents,
}


def raised(call: Callable[[], Any]) -> tuple[type[BaseException], str]:
    with pytest.raises(Exception) as caught:
        call()
    return caught.type, str(caught.value)


@pytest.mark.parametrize("game_id", GAME_IDS)
@pytest.mark.parametrize("call", sorted(CALLS_BEFORE_RESET))
def test_aec_calls_before_reset_raise_what_order_enforcing_raises(game_id: str, call: str) -> None:
    ours = pettingzoo.make("aec", f"spiral/{game_id}")
    reference = OrderEnforcingWrapper(spiral_envs.env(game_id))
    expected = raised(lambda: CALLS_BEFORE_RESET[call](reference))
    assert raised(lambda: CALLS_BEFORE_RESET[call](ours)) == expected
    ours.reset(seed=0)  # and nothing of it sticks
    CALLS_BEFORE_RESET[call](ours)


@pytest.mark.parametrize("name", sorted(ATTRIBUTES_BEFORE_RESET))
def test_aec_attributes_before_reset_raise_attribute_error(name: str) -> None:
    reference = OrderEnforcingWrapper(spiral_envs.env("TicTacToe-v0"))
    assert raised(lambda: ATTRIBUTES_BEFORE_RESET[name](reference))[0] is AttributeError
    with pytest.raises(AttributeError, match=name.removeprefix("num_")):
        ATTRIBUTES_BEFORE_RESET[name](spiral_envs.env("TicTacToe-v0"))


def warnings_of(call: Callable[[], Any]) -> list[str]:
    EnvLogger.flush()
    EnvLogger.suppress_output()
    try:
        call()
        return list(EnvLogger.mqueue)
    finally:
        EnvLogger.unsuppress_output()
        EnvLogger.flush()


@pytest.mark.parametrize("game_id", GAME_IDS)
def test_aec_step_after_both_agents_are_done_warns_like_order_enforcing(game_id: str) -> None:
    ours = spiral_envs.env(game_id)
    reference = OrderEnforcingWrapper(spiral_envs.env(game_id))
    reference.reset(seed=4)
    for action in play_random(ours, seed=4):
        reference.step(action)
    expected = warnings_of(lambda: reference.step(None))
    assert AFTER_DONE in expected
    infos = dict(ours.infos)
    assert warnings_of(lambda: ours.step(None)) == expected
    assert warnings_of(lambda: ours.step(0)) == expected  # any action: nothing is played
    assert ours.agents == [] and ours.infos == infos


@pytest.mark.parametrize("game_id", SIMULTANEOUS_IDS)
def test_parallel_step_before_reset_and_after_the_end(game_id: str) -> None:
    env = pettingzoo.make("parallel", f"spiral/{game_id}")
    with pytest.raises(AssertionError, match=r"^reset\(\) needs to be called before step\.$"):
        env.step({"player_0": 0, "player_1": 0})
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    while env.agents:
        env.step({agent: int(rng.integers(4)) for agent in env.agents})
    result: list[Any] = []
    assert set(warnings_of(lambda: result.append(env.step({})))) == {AFTER_DONE}
    assert result == [({}, {}, {}, {}, {})]
    env.reset(seed=1)
    assert env.agents == ["player_0", "player_1"]


@pytest.mark.parametrize("game_id", GAME_IDS)
def test_gymnasium_view_before_reset_raises_reset_needed(game_id: str) -> None:
    reference = OrderEnforcing(spiral_envs.SingleAgentEnv(game_id))
    ours = spiral_envs.SingleAgentEnv(game_id, render_mode="ansi")
    expected = raised(lambda: reference.step(0))
    assert expected[0] is ResetNeeded
    assert raised(lambda: ours.step(0)) == expected
    assert raised(lambda: ours.render())[0] is ResetNeeded
    ours.reset(seed=0)
    assert ours.render()


def test_gymnasium_view_step_after_the_end_still_says_to_reset() -> None:
    env = gymnasium.make("spiral/TicTacToe-v0", opponent=lambda obs: "no move")
    env.reset(seed=0)
    _, _, terminated, _, _ = env.step(0)  # the opponent's invalid move ends the game
    assert terminated
    with pytest.raises(RuntimeError, match="episode is over: call reset"):
        env.step(1)
