"""rgb_array frames: board pictures, text frames, gymnasium.utils.play and RecordVideo."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

import spiral_envs
from spiral_envs import render

GAME_IDS = sorted(spiral_envs.GAMES)


def frame_after(game_id: str, moves: list, **kwargs) -> np.ndarray:
    env = spiral_envs.env(game_id, render_mode="rgb_array", **kwargs)
    env.reset(seed=0)
    for move in moves:
        env.step(move)
    return env.render()


def color_at(frame: np.ndarray, y: float, x: float) -> tuple[int, ...]:
    return tuple(int(c) for c in frame[int(y), int(x)])


def test_tictactoe_frame_draws_rings_crosses_and_free_cell_numbers() -> None:
    frame = frame_after("TicTacToe-v0", [4, 0])  # O in the centre, X top left
    cell = 64
    assert frame.shape == (192, 192, 3) and frame.dtype == np.uint8
    ring = 0.32 * cell - 3  # inside the ring's stroke
    assert color_at(frame, 1.5 * cell, 1.5 * cell + ring) == render.BLUE
    assert color_at(frame, 1.5 * cell, 1.5 * cell) == render.WHITE  # a ring, not a disc
    assert color_at(frame, 0.5 * cell, 0.5 * cell) == render.RED  # where the cross strokes meet
    free = frame[2 * cell : 3 * cell, 2 * cell : 3 * cell]  # cell 8: its number in grey
    assert (free == render.LIGHT_GREY).all(axis=-1).any()


def test_connect_four_frame_fills_columns_from_the_bottom() -> None:
    frame = frame_after("ConnectFour-v0", [3, 3])
    cell = 48
    assert frame.shape == (6 * cell, 7 * cell, 3)
    assert color_at(frame, 5.5 * cell, 3.5 * cell) == render.RED  # player 0's X
    assert color_at(frame, 4.5 * cell, 3.5 * cell) == render.YELLOW  # player 1's O on top
    assert color_at(frame, 3.5 * cell, 3.5 * cell) == render.WHITE
    assert color_at(frame, 2, 2) == render.BLUE


def test_connect_four_marks_the_winning_line() -> None:
    frame = frame_after("ConnectFour-v0", [0, 1, 0, 1, 0, 1, 0])
    cell = 48
    for row in (2, 3, 4, 5):
        assert color_at(frame, (row + 0.5) * cell, 0.5 * cell) == render.BLACK
    assert color_at(frame, 5.5 * cell, 1.5 * cell) == render.YELLOW


def test_snake_frame_shows_both_snakes_and_the_apples() -> None:
    env = spiral_envs.env("Snake-v0", render_mode="rgb_array")
    env.reset(seed=0)
    frame, cell = env.render(), 48
    (r0, c0), (r1, c1) = (snake[0] for snake in env.game_state.snakes)
    assert color_at(frame, (r0 + 0.5) * cell, (c0 + 0.5) * cell) == render.BLUE
    assert color_at(frame, (r1 + 0.5) * cell, (c1 + 0.5) * cell) == render.ORANGE
    for row, column in env.game_state.apples:
        assert color_at(frame, (row + 0.5) * cell, (column + 0.5) * cell) == render.RED


@pytest.mark.parametrize("game_id", GAME_IDS)
def test_every_game_renders_rgb_frames_of_one_size_through_gymnasium(game_id: str) -> None:
    env = gymnasium.make(f"spiral/{game_id}", render_mode="rgb_array", seat="random")
    env.reset(seed=0)
    first = env.render()
    assert first.ndim == 3 and first.shape[2] == 3 and first.dtype == np.uint8
    assert first.shape[0] % 16 == 0 and first.shape[1] % 16 == 0  # video encoders want this
    rng = np.random.default_rng(0)
    for _ in range(30):
        _, _, terminated, truncated, _ = env.step(env.unwrapped.aec.game_state.random_move(rng))
        assert env.render().shape == first.shape
        if terminated or truncated:
            env.reset()


def test_text_frame_wraps_clips_and_draws_unknown_characters_as_question_marks() -> None:
    frame = render.text_frame("ab\n" + "x" * 100 + "\n\u00e9", columns=40, rows=3)
    assert frame.shape == (3 * 16, 40 * 12, 3)
    question = render.text_frame("?", columns=1, rows=1)
    accented = render.text_frame("\u00e9", columns=1, rows=1)
    assert (question == accented).all() and not (question == render.WHITE).all()


def test_gymnasium_play_runs_on_the_rgb_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    import pygame
    from gymnasium.utils.play import play

    env = gymnasium.make("spiral/TicTacToe-v0", render_mode="rgb_array", with_text=False)
    steps = []

    def callback(obs_t, obs_tp1, action, reward, terminated, truncated, info) -> None:
        steps.append((action, reward, terminated))
        if len(steps) == 12:
            pygame.event.post(pygame.event.Event(pygame.QUIT))

    play(env, fps=1000, callback=callback, seed=0)  # keys from env.get_keys_to_action()
    assert len(steps) == 12 and any(terminated for _, _, terminated in steps)
    assert env.unwrapped.get_keys_to_action() == {str(i): i for i in range(9)}


def test_keys_to_action_say_why_they_are_missing() -> None:
    with pytest.raises(ValueError, match="61 actions"):
        spiral_envs.SingleAgentEnv("LiarsDice-v1").get_keys_to_action()
    with pytest.raises(TypeError, match="free-text"):
        spiral_envs.SingleAgentEnv("SimpleNegotiation-v1").get_keys_to_action()


def test_record_video_writes_an_episode(tmp_path) -> None:
    pytest.importorskip("moviepy")
    from gymnasium.wrappers import RecordVideo

    env = RecordVideo(
        gymnasium.make("spiral/ConnectFour-v0", render_mode="rgb_array"), str(tmp_path)
    )
    env.reset(seed=0)
    terminated = truncated = False
    while not (terminated or truncated):
        mask = env.unwrapped.action_masks()
        _, _, terminated, truncated, _ = env.step(int(np.flatnonzero(mask)[0]))
    env.close()
    assert list(tmp_path.glob("*.mp4"))
