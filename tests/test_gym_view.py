"""The single-agent Gymnasium view: seats, the opponent inside step, the learner's own reward."""

from __future__ import annotations

import subprocess
import sys

import gymnasium
import numpy as np
import pytest

import spiral_envs


class ScriptedOpponent:
    """Plays a fixed list of cells and counts resets."""

    def __init__(self, cells: list[int]) -> None:
        self.cells, self.resets = cells, 0

    def reset(self) -> None:
        self.resets += 1
        self.queue = list(self.cells)

    def act(self, observation: dict) -> int:
        assert observation["action_mask"].any()
        return self.queue.pop(0)


def test_learner_in_seat_1_sees_the_opponent_move_first() -> None:
    env = gymnasium.make("spiral/TicTacToe-v0", seat="player_1", opponent=ScriptedOpponent([4, 0, 8]))
    obs, info = env.reset(seed=0)
    assert info["seat"] == "player_1"
    assert obs["action_mask"].tolist() == [1, 1, 1, 1, 0, 1, 1, 1, 1]
    assert "Player 0 (O) claimed cell 4." in obs["text"]


def test_learner_gets_its_own_reward_on_the_opponents_winning_move() -> None:
    opponent = ScriptedOpponent([0, 1, 2])
    env = gymnasium.make("spiral/TicTacToe-v0", seat="player_1", opponent=opponent)
    env.reset(seed=0)
    _, r1, term1, _, _ = env.step(3)
    _, r2, term2, _, info = env.step(5)  # the opponent then completes the top row
    assert (r1, term1) == (0.0, False)
    assert (r2, term2) == (-1.0, True)
    assert info["outcome"] == "loss" and opponent.resets == 1


def test_learner_win_reward() -> None:
    env = gymnasium.make("spiral/TicTacToe-v0", opponent=ScriptedOpponent([3, 4]))
    env.reset(seed=0)
    env.step(0)
    env.step(1)
    _, reward, terminated, _, _ = env.step("[2]")
    assert reward == 1.0 and terminated


def test_random_seat_and_seeded_default_opponent() -> None:
    env = gymnasium.make("spiral/TicTacToe-v0", seat="random")
    seats = {env.reset(seed=s)[1]["seat"] for s in range(20)}
    assert seats == {"player_0", "player_1"}
    a = [env.reset(seed=5)[0]["text"] for _ in range(2)]
    assert a[0] == a[1]


def test_action_masks_match_observation_and_support_maskable_ppo_calls() -> None:
    env = gymnasium.make("spiral/KuhnPoker-v1", with_text=False)
    obs, _ = env.reset(seed=0)
    assert "text" not in obs
    mask = env.unwrapped.action_masks()
    assert mask.dtype == bool and mask.tolist() == obs["action_mask"].astype(bool).tolist()


def test_callable_opponent_and_free_text_game() -> None:
    calls = []

    def opponent(observation: dict) -> str:
        calls.append(observation["text"])
        return "No thanks. [Deny]" if "Standing offer" in observation["text"] else "hello"

    env = gymnasium.make("spiral/SimpleNegotiation-v1", opponent=opponent)
    env.reset(seed=0)
    obs, _, terminated, _, _ = env.step("[Offer: 1 Wood -> 1 Gold]")
    assert "[Game] Player 1 turns the offer down." in obs["text"]
    assert calls and not terminated
    with pytest.raises(TypeError):
        env.unwrapped.action_masks()


def test_step_after_episode_end_raises() -> None:
    env = spiral_envs.SingleAgentEnv("TicTacToe-v0", opponent=ScriptedOpponent([3, 4]))
    env.reset(seed=0)
    for cell in (0, 1, 2):
        env.step(cell)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(5)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        spiral_envs.SingleAgentEnv("TicTacToe-v0", seat="player_2")
    with pytest.raises(TypeError):
        spiral_envs.SingleAgentEnv("TicTacToe-v0", opponent=42)


def test_game_variants_pass_through_gymnasium_make() -> None:
    env = gymnasium.make("spiral/KuhnPoker-v1", rounds=1, seat="player_1")
    env.reset(seed=0)
    assert env.unwrapped.aec.game.rounds == 1


def test_make_with_module_prefix_needs_no_import() -> None:
    code = (
        "import gymnasium, sys\n"
        "assert 'spiral_envs' not in sys.modules\n"
        "env = gymnasium.make('spiral_envs:spiral/TicTacToe-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(obs['action_mask'].sum())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "9"


def test_opponent_invalid_move_ends_game_in_learners_favour() -> None:
    env = gymnasium.make("spiral/TicTacToe-v0", opponent=lambda obs: "I refuse")
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(0)
    assert reward == 1.0 and terminated and info["outcome"] == "win"
    assert np.all(env.unwrapped.action_masks() == 0)


def test_numeric_view_still_shows_the_opponent_the_text() -> None:
    seen = []

    def opponent(observation: dict) -> int:
        seen.append(observation["text"])
        return int(observation["action_mask"].argmax())

    env = gymnasium.make(
        "spiral/TicTacToe-v0", with_text=False, seat="player_1", opponent=opponent
    )
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"observation", "action_mask"} and "Your legal moves" in seen[0]
    assert set(env.observation_space.spaces) == {"observation", "action_mask"}


def test_max_cycles_and_rgb_array_pass_through_gymnasium_make() -> None:
    env = gymnasium.make("spiral/PigDice-v1", max_cycles=2, render_mode="rgb_array")
    env.reset(seed=0)
    assert env.unwrapped.aec.max_turns == 4
    assert env.render().dtype == np.uint8
