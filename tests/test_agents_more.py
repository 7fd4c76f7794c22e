"""The Negotiation trader, the human agent and the Stable-Baselines3 pipeline."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import spiral_envs
from spiral_agents import HumanAgent, ValueTrader
from spiral_agents.arena import run_tournament, summarize


def standing_offer_observation(gets: list[int], pays: list[int]) -> dict:
    """Player 0 of SimpleNegotiation-v1 (values Wood 5, Gold 15) facing an offer."""
    obs = np.zeros(10, dtype=np.float32)
    obs[:2] = [10, 10]
    obs[2:4] = [5, 15]
    obs[4:6], obs[6:8], obs[8], obs[9] = gets, pays, 1.0, 5
    return {"observation": obs, "text": ""}


@pytest.mark.parametrize(
    "gets, pays, accept",
    [([0, 1], [2, 0], True), ([0, 1], [3, 0], False), ([0, 1], [4, 0], False),
     ([3, 0], [0, 1], False), ([0, 2], [11, 0], False), ([1, 1], [0, 0], True)],
)  # fmt: skip
def test_trader_accepts_exactly_the_offers_that_raise_its_value(gets, pays, accept) -> None:
    action = ValueTrader("SimpleNegotiation-v1").act(standing_offer_observation(gets, pays))
    assert ("[Accept]" in action) is accept


@pytest.mark.parametrize("game", ["SimpleNegotiation-v1", "SimpleNegotiation-v0"])
def test_trader_proposals_raise_its_own_value(game: str) -> None:
    env = spiral_envs.env(game)
    trader = ValueTrader(game)
    for seed in range(20):
        env.reset(seed=seed)
        text = trader.act(env.observe("player_0"))
        state = env.game_state
        parsed = state.parse(text)
        offer = parsed.move
        values = np.array(state.values[0])
        assert np.array(offer.ask) @ values > np.array(offer.give) @ values
        assert state.illegal_reason(offer) is None


def test_trader_beats_random_in_v0() -> None:
    records = run_tournament(["SimpleNegotiation-v0"], ["trader", "random"], 100, progress=False)
    (result,) = summarize(records)
    assert result.win_interval[0] > 0.6


def test_human_agent_re_asks_until_the_move_is_legal() -> None:
    answers = iter(["hello", "9", "[4]", "2"])
    shown: list[str] = []
    agent = HumanAgent("TicTacToe-v0", ask=lambda prompt: next(answers), show=shown.append)
    env = spiral_envs.env("TicTacToe-v0")
    env.reset(seed=0)
    env.step(4)
    move = agent.act(env.observe("player_1"))
    assert move == 2  # "hello", "9" (only 8 legal moves) and the taken "[4]" were refused
    assert sum("Not a legal move" in line for line in shown) == 3
    assert any("Board (you are X)" in line for line in shown)


def test_human_agent_accepts_move_text_and_free_text() -> None:
    env = spiral_envs.env("KuhnPoker-v1")
    env.reset(seed=0)
    agent = HumanAgent("KuhnPoker-v1", ask=lambda prompt: "BET", show=lambda text: None)
    assert agent.act(env.observe(env.agent_selection)) == 1
    chat = HumanAgent("SimpleNegotiation-v1", ask=lambda p: "hi [Deny]", show=lambda t: None)
    env = spiral_envs.env("SimpleNegotiation-v1")
    env.reset(seed=0)
    assert chat.act(env.observe("player_0")) == "hi [Deny]"


@pytest.mark.slow
def test_maskable_ppo_example_trains_saves_loads_and_plays(tmp_path) -> None:
    model = tmp_path / "ppo.zip"
    out = subprocess.run(
        [sys.executable, "examples/train_maskable_ppo.py", "--steps", "2048", "--out", str(model),
         "--eval-games", "40"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    assert model.exists()
    games = re.search(r"over (\d+) games: wins (\d+), draws (\d+), losses (\d+)", out.stdout)
    assert games and int(games[1]) == 40
    assert sum(int(games[i]) for i in (2, 3, 4)) == 40
