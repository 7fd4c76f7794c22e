"""PettingZoo conventions: the numeric view, max_cycles, state(), the Parallel registry,
human rendering, and PettingZoo's own SB3 Connect Four tutorial run as written."""

from __future__ import annotations

import functools
import glob
import os
import time
import types
import warnings

import gymnasium
import numpy as np
import pettingzoo
import pytest
import torch
from gymnasium.wrappers import TransformObservation
from pettingzoo.test import api_test, max_cycles_test, parallel_api_test
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

import spiral_envs


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.mark.parametrize("game_id", ["TicTacToe-v0", "SimpleNegotiation-v1"])
def test_numeric_view_on_the_aec_env(game_id: str) -> None:
    env = spiral_envs.env(game_id, with_text=False)
    env.reset(seed=0)
    obs = env.observe(env.agent_selection)
    assert "text" not in obs and "text" not in env.observation_space("player_0").spaces
    assert env.observation_space("player_0").contains(obs)
    api_test(env, num_cycles=100)


def test_numeric_view_on_the_parallel_env() -> None:
    env = pettingzoo.make("parallel", "spiral/Snake-v0", with_text=False)
    observations, _ = env.reset(seed=0)
    assert list(observations["player_0"]) == ["observation", "action_mask"]
    parallel_api_test(env, num_cycles=100)


def test_parallel_registry_serves_the_simultaneous_game() -> None:
    env = pettingzoo.make("parallel", "spiral/Snake-v0")
    parallel_api_test(env, num_cycles=100)
    assert isinstance(env, pettingzoo.ParallelEnv)


# --- max_cycles ---------------------------------------------------------------------------
def test_max_cycles_is_accepted_by_pettingzoo_make() -> None:
    env = pettingzoo.make("aec", "spiral/PigDice-v1", max_cycles=4)
    env.reset(seed=0)
    for _ in range(8):
        env.step(0)  # [roll] never ends a game in 8 moves (a 1 only passes the turn)
    assert all(env.truncations.values()) and env.infos["player_0"]["ended_by"] == "turn limit"


def test_max_cycles_and_max_turns_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        spiral_envs.env("TicTacToe-v0", max_cycles=3, max_turns=6)
    with pytest.raises(ValueError, match="max_cycles must be a positive int"):
        spiral_envs.env("TicTacToe-v0", max_cycles=0)


def test_pettingzoo_max_cycles_test() -> None:
    """PettingZoo's own test needs a game random moves cannot end within 4 cycles: Snake on a
    17x17 board with no apples (no wall, body or head is in reach)."""
    variant = {"size": 17, "apples": 0}
    module = types.SimpleNamespace(
        env=functools.partial(spiral_envs.env, "Snake-v0", **variant),
        parallel_env=functools.partial(spiral_envs.parallel_env, "Snake-v0", **variant),
    )
    max_cycles_test(module)


# --- state() ------------------------------------------------------------------------------
def test_no_attribute_shadows_pettingzoo_state_method() -> None:
    env = spiral_envs.env("TicTacToe-v0")
    env.reset(seed=0)
    assert "state" not in vars(env) and type(env).state is pettingzoo.AECEnv.state
    with pytest.raises(NotImplementedError):
        env.state()
    assert env.game_state.legal_actions() == list(range(9))
    parallel = spiral_envs.parallel_env("Snake-v0")
    parallel.reset(seed=0)
    with pytest.raises(NotImplementedError):
        parallel.state()


# --- human rendering ----------------------------------------------------------------------
def test_human_rendering_separates_frames_with_a_legend_and_a_result(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = spiral_envs.env("TicTacToe-v0", render_mode="human")
    env.reset(seed=0)
    for cell in (0, 3, 1, 4, 2):
        env.step(cell)
    out = capsys.readouterr().out
    frames = out.split("---- TicTacToe-v0, turn ")
    assert [frame.split(" ")[0] for frame in frames[1:]] == ["0", "1", "2", "3", "4", "5"]
    assert frames[1].count("Legend: O = Player 0 (player_0), X = Player 1") == 1
    assert "Legend" not in "".join(frames[2:])
    assert out.rstrip().endswith("Result: player_0 wins (game over).")
    assert env.render_mode == "human" and env.render() is None


def test_ansi_rendering_ends_with_the_result_line() -> None:
    env = spiral_envs.env("KuhnPoker-v1", rounds=1, render_mode="ansi")
    env.reset(seed=0)
    assert "Result" not in env.render()
    while not any(env.terminations.values()):
        env.step(int(np.flatnonzero(env.observe(env.agent_selection)["action_mask"])[-1]))
    assert env.render().splitlines()[-1].startswith("Result: player_")


# --- PettingZoo's SB3 Connect Four tutorial -----------------------------------------------
# The evaluation loop of tutorials/SB3/connect_four/sb3_connect_four_action_mask.py, as
# written but for the env. The tutorial's training half needs gymnasium <= 0.29 (since 1.0,
# sb3-contrib's ActionMasker refuses its PettingZoo wrapper), so the model it loads is trained
# on spiral's Gymnasium view: the numeric observation, the masks from action_masks().
def train_action_mask(steps: int, seed: int = 0) -> None:
    env = gymnasium.make("spiral/ConnectFour-v0", with_text=False, seat="random")
    env = TransformObservation(
        env, lambda obs: obs["observation"], env.observation_space["observation"]
    )
    model = MaskablePPO(MaskableActorCriticPolicy, env, verbose=0, n_steps=64, batch_size=64)
    model.set_random_seed(seed)
    model.learn(total_timesteps=steps)
    model.save(f"{env.unwrapped.aec.metadata['name']}_{time.strftime('%Y%m%d-%H%M%S')}")


def eval_action_mask(env_fn, num_games=100, render_mode=None, **env_kwargs):
    env = env_fn.env(render_mode=render_mode, **env_kwargs)
    latest_policy = max(glob.glob(f"{env.metadata['name']}*.zip"), key=os.path.getctime)
    model = MaskablePPO.load(latest_policy)
    scores = {agent: 0 for agent in env.possible_agents}
    total_rewards = {agent: 0 for agent in env.possible_agents}
    round_rewards = []
    for i in range(num_games):
        env.reset(seed=i)
        env.action_space(env.possible_agents[0]).seed(i)
        for agent in env.agent_iter():
            obs, _, termination, truncation, _ = env.last()
            # Separate observation and action mask
            observation, action_mask = obs.values()
            if termination or truncation:
                if env.rewards[env.possible_agents[0]] != env.rewards[env.possible_agents[1]]:
                    winner = max(env.rewards, key=env.rewards.get)
                    scores[winner] += env.rewards[winner]
                for a in env.possible_agents:
                    total_rewards[a] += env.rewards[a]
                round_rewards.append(env.rewards)
                break
            else:
                if agent == env.possible_agents[0]:
                    act = env.action_space(agent).sample(action_mask)
                else:
                    act = int(
                        model.predict(observation, action_masks=action_mask, deterministic=True)[0]
                    )
            env.step(act)
    env.close()
    return round_rewards, total_rewards, scores


def test_pettingzoo_sb3_connect_four_tutorial_runs_unchanged(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    env_fn = types.SimpleNamespace(
        env=functools.partial(spiral_envs.env, "ConnectFour-v0", with_text=False)
    )
    train_action_mask(steps=256)
    round_rewards, total_rewards, scores = eval_action_mask(env_fn, num_games=4)
    assert len(round_rewards) == 4 and sum(scores.values()) <= 4
    assert sum(total_rewards.values()) == pytest.approx(0.0)
