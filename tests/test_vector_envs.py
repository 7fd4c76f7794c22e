"""Gymnasium's vector envs and space utilities on every game, text kept."""

from __future__ import annotations

import copy
import io
import time
from contextlib import redirect_stdout

import gymnasium
import numpy as np
import pytest
from gymnasium.spaces.utils import flatten, flatten_space, unflatten
from gymnasium.vector.utils import (
    create_shared_memory,
    read_from_shared_memory,
    write_to_shared_memory,
)
from gymnasium.wrappers import FlattenObservation
from hypothesis import given, settings
from hypothesis import strategies as st
from pettingzoo.test import performance_benchmark

import spiral_envs
from spiral_envs import testing
from spiral_envs.spaces import SAMPLE_MAX_LENGTH, TextSpace

GAME_IDS = sorted(spiral_envs.GAMES)
MODES = {
    "sync": ("sync", {}),
    "async-shared-memory": ("async", {"shared_memory": True}),
    "async-no-shared-memory": ("async", {"shared_memory": False}),
}


def random_actions(game: spiral_envs.Game, obs: dict, rng: np.random.Generator) -> list:
    """A random legal move for each env of a batch (free text from the game's own helper)."""
    if game.actions is not None:
        return [int(rng.choice(np.flatnonzero(mask))) if mask.any() else 0 for mask in obs["action_mask"]]
    return [
        game.random_text_move({"observation": row}, rng) for row in obs["observation"]
    ]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("game_id", GAME_IDS)
def test_vector_env_plays_every_game_with_text(game_id: str, mode: str) -> None:
    """Many episodes end in one step in different envs (wins next to draws: int next to
    int winners, never None), and the text travels through shared memory."""
    vectorization_mode, vector_kwargs = MODES[mode]
    envs = gymnasium.make_vec(
        f"spiral/{game_id}", num_envs=4, vectorization_mode=vectorization_mode,
        vector_kwargs=vector_kwargs,
    )  # fmt: skip
    game = spiral_envs.make_game(game_id)
    rng = np.random.default_rng(0)
    try:
        obs, _ = envs.reset(seed=0)
        finished = 0
        for _ in range(150):
            obs, _, terminated, truncated, infos = envs.step(random_actions(game, obs, rng))
            finished += int(np.sum(terminated | truncated))
            if "winner" in infos:  # one int array, whoever won (or -1) in each env
                assert infos["winner"].dtype.kind == "i"
            assert all(isinstance(text, str) and "History:" in text for text in obs["text"])
        assert finished > 0
        assert envs.single_observation_space.contains(
            {key: value[0] for key, value in obs.items()}
        )
    finally:
        envs.close()


@pytest.mark.parametrize("game_id", GAME_IDS)
def test_info_values_keep_one_type(game_id: str) -> None:
    testing.check_info_types(game_id)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_flattens_and_goes_through_shared_memory(text: str) -> None:
    space = TextSpace(300)
    assert space.contains(text)
    flat = flatten(space, text)
    assert flat.shape == (300,) and flatten_space(space).contains(flat)
    assert unflatten(space, flat) == text
    memory = create_shared_memory(space, n=3)
    write_to_shared_memory(space, 1, text, memory)
    write_to_shared_memory(space, 2, text[::-1], memory)
    texts = read_from_shared_memory(space, memory, n=3)
    assert texts == ("", text, text[::-1]) and copy.deepcopy(texts) == ("", text, text[::-1])
    write_to_shared_memory(space, 0, text, memory)
    assert texts[0] == text  # a view: later writes show


def test_too_long_text_for_shared_memory_says_so() -> None:
    space = TextSpace(5)
    with pytest.raises(ValueError, match="6 characters does not fit"):
        write_to_shared_memory(space, 0, "abcdef", create_shared_memory(space))


def test_flatten_observation_keeps_the_text() -> None:
    env = FlattenObservation(gymnasium.make("spiral/TicTacToe-v0"))
    flat, _ = env.reset(seed=0)
    flat, *_ = env.step(4)
    assert env.observation_space.contains(flat)
    obs = unflatten(env.unwrapped.observation_space, flat)
    assert "Player 0 (O) claimed cell 4." in obs["text"]


def test_free_text_action_sample_is_short_and_fast() -> None:
    space = spiral_envs.env("SimpleNegotiation-v1").action_space("player_0")
    start = time.perf_counter()
    samples = [space.sample() for _ in range(1000)]
    assert time.perf_counter() - start < 1.0
    assert max(map(len, samples)) <= SAMPLE_MAX_LENGTH and space.contains(samples[0])
    assert len(space.sample(mask=(100, None))) == 100


@pytest.mark.slow
def test_pettingzoo_performance_benchmark_on_a_free_text_game() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        performance_benchmark(spiral_envs.env("SimpleNegotiation-v1"))
    turns_per_second = float(out.getvalue().split(" turns per second")[0].split()[-1])
    assert turns_per_second > 1000
