"""Stable-Baselines3 and sb3-contrib train on the Gymnasium view through their own helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.env_util import make_vec_env

import spiral_envs  # noqa: F401  (registers the spiral/ ids)

ROOT = Path(__file__).resolve().parent.parent
STEPS = 256


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def numeric_envs():
    return make_vec_env("spiral/TicTacToe-v0", n_envs=4, env_kwargs={"with_text": False}, seed=0)


@pytest.mark.parametrize(
    ("algorithm", "kwargs"),
    [
        (PPO, {"n_steps": 32, "batch_size": 64, "n_epochs": 2}),
        (A2C, {"n_steps": 5}),
        (DQN, {"learning_starts": 64, "buffer_size": 1_000, "train_freq": 4}),
        (MaskablePPO, {"n_steps": 32, "batch_size": 64, "n_epochs": 2}),
    ],
    ids=["PPO", "A2C", "DQN", "MaskablePPO"],
)
def test_sb3_trains_through_make_vec_env(algorithm: type, kwargs: dict) -> None:
    envs = numeric_envs()
    model = algorithm("MultiInputPolicy", envs, seed=0, device="cpu", **kwargs)
    model.learn(total_timesteps=STEPS)
    assert model.num_timesteps >= STEPS
    obs = envs.reset()
    masks = np.stack(envs.env_method("action_masks"))
    if algorithm is MaskablePPO:
        actions, _ = model.predict(obs, action_masks=masks, deterministic=True)
        assert masks[np.arange(4), actions].all()  # a masked policy picks legal cells
    else:
        actions, _ = model.predict(obs, deterministic=True)
    envs.step(actions)
    envs.close()


def test_sb3s_default_rgb_array_render_mode_is_accepted() -> None:
    envs = numeric_envs()
    assert envs.get_attr("render_mode") == ["rgb_array"] * 4
    envs.reset()
    frames = envs.get_images()
    assert all(frame.shape == (192, 192, 3) and frame.dtype == np.uint8 for frame in frames)
    envs.close()


def test_sb3_on_the_text_view_is_told_what_to_pass_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"with_text=False") as error:
        make_vec_env("spiral/TicTacToe-v0", n_envs=2)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"with_text=False"):
        PPO("MultiInputPolicy", gymnasium.make("spiral/TicTacToe-v0"), device="cpu")
    assert "text" in gymnasium.make("spiral/TicTacToe-v0").observation_space.spaces


class DropText(gymnasium.ObservationWrapper):
    """A user's own way of feeding SB3: the text removed by a wrapper."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        kept = {k: v for k, v in env.observation_space.spaces.items() if k != "text"}
        self.observation_space = gymnasium.spaces.Dict(kept)

    def observation(self, observation: dict) -> dict:
        return {k: v for k, v in observation.items() if k != "text"}


def test_an_explicit_text_view_is_left_to_the_caller() -> None:
    envs = make_vec_env(
        "spiral/TicTacToe-v0", n_envs=2, env_kwargs={"with_text": True}, wrapper_class=DropText
    )
    PPO("MultiInputPolicy", envs, n_steps=16, batch_size=32, device="cpu").learn(32)
    envs.close()


@pytest.mark.slow
def test_maskable_ppo_example_trains_and_evaluates(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_maskable_ppo.py"), "--steps", "512",
         "--out", str(tmp_path / "ttt.zip"), "--eval-games", "6"],
        capture_output=True, text=True, cwd=ROOT, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "non-loss rate" in out.stdout
