"""Nim rules: taking from one pile, empty piles, last object wins, syntax, custom piles."""

from __future__ import annotations

from functools import reduce
from operator import xor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spiral_envs
from spiral_envs.core import Invalid, Parsed
from spiral_envs.games.nim import Nim
from tests.helpers import play_random, transcript


def play(moves: list, **kwargs) -> spiral_envs.SpiralAECEnv:
    env = spiral_envs.env("Nim-v0", **kwargs)
    env.reset(seed=0)
    for move in moves:
        env.step(move)
    return env


def test_default_piles_and_action_set() -> None:
    game = Nim()
    assert game.piles == (3, 4, 5)
    assert game.actions == (
        "[0 1]", "[0 2]", "[0 3]",
        "[1 1]", "[1 2]", "[1 3]", "[1 4]",
        "[2 1]", "[2 2]", "[2 3]", "[2 4]", "[2 5]",
    )  # fmt: skip
    assert game.max_turns > sum(game.piles)
    env = play([])
    assert env.agent_selection == "player_0"
    obs = env.observe("player_0")
    assert obs["observation"].dtype == np.float32
    assert obs["observation"].tolist() == pytest.approx([3 / 5, 4 / 5, 1.0])
    assert obs["action_mask"].tolist() == [1] * 12
    assert "pile 0: 3 |||\npile 1: 4 ||||\npile 2: 5 |||||" in obs["text"]


def test_a_move_takes_from_one_pile_and_passes_the_turn() -> None:
    env = play(["I take two from the middle pile: [1 2]"])
    assert env.game_state.piles == [3, 2, 5] and env.agent_selection == "player_1"
    obs = env.observe("player_1")
    assert obs["observation"].tolist() == pytest.approx([3 / 5, 2 / 5, 1.0])
    assert env.observe("player_0")["observation"].tolist() == obs["observation"].tolist()
    assert obs["action_mask"].tolist() == [1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1]
    assert "[Game] Player 0 took 2 from pile 1 (2 left)." in obs["text"]
    assert "take 1 to 2 from pile 1 ([1 1] to [1 2])" in obs["text"]


@pytest.mark.parametrize(
    "moves, winner",
    [
        (["[2 5]", "[1 4]", "[0 3]"], "player_0"),
        (["[2 5]", "[1 4]", "[0 2]", "[0 1]"], "player_1"),
        (["[0 3]", "[1 4]", "[2 4]", "[2 1]"], "player_1"),
    ],
)
def test_whoever_takes_the_last_object_wins(moves: list[str], winner: str) -> None:
    env = play(moves)
    loser = "player_1" if winner == "player_0" else "player_0"
    assert all(env.terminations.values())
    assert env.rewards == {winner: 1.0, loser: -1.0}
    assert env.infos[winner]["outcome"] == "win" and env.infos[winner]["piles"] == [0, 0, 0]
    assert f"Player {winner[-1]} took the last object and wins." in env.observe(loser)["text"]


def test_taking_from_an_empty_pile_is_illegal() -> None:
    env = play(["[0 3]"], invalid_move={"retries": 2})
    assert env.observe("player_1")["action_mask"][:3].tolist() == [0, 0, 0]
    assert "from pile 0" not in env.game_state.moves_text()
    env.step("[0 1]")
    assert env.infos["player_1"]["invalid_move"] is True
    assert "pile 0 is empty" in env.infos["player_1"]["reason"]
    env.step("[0 7]")  # beyond the pile's starting size too
    assert "pile 0 is empty" in env.infos["player_1"]["reason"]
    env.step(0)  # the action index of [0 1]
    assert "pile 0 is empty" in env.infos["player_1"]["reason"]
    assert env.rewards == {"player_0": 1.0, "player_1": -1.0}


@pytest.mark.parametrize("text", ["[1 3]", "[1 4]", "[1 9]", "[1 99999999999999999999999]"])
def test_taking_more_than_a_pile_holds_is_illegal(text: str) -> None:
    env = play(["[1 2]", text])
    assert env.infos["player_1"]["invalid_move"] is True
    assert "pile 1 holds only 2 object(s)" in env.infos["player_1"]["reason"]
    assert env.rewards == {"player_0": 1.0, "player_1": -1.0}


@pytest.mark.parametrize(
    "text, reason",
    [
        ("no brackets", "no move found"),
        ("[3]", "no move found"),
        ("[0 -1]", "no move found"),
        ("[0 1 2]", "no move found"),
        ("[0 0]", "you must take at least 1 object"),
        ("[3 1]", "pile 3 does not exist; piles are 0 to 2"),
        ("[99999999999999999999 1]", "does not exist"),
    ],
)
def test_unreadable_text_and_impossible_moves_are_invalid(text: str, reason: str) -> None:
    env = play([text])
    assert env.infos["player_0"]["invalid_move"] is True
    assert reason in env.infos["player_0"]["reason"]


@pytest.mark.parametrize(
    "text, pile, quantity",
    [
        ("[0 3]", 0, 3),
        ("[0, 3]", 0, 3),
        ("[0,3]", 0, 3),
        ("[  2 ,  5 ]", 2, 5),
        ("[1\t\t4]", 1, 4),
        ("[01 002]", 1, 2),
        ("hmm [x] [7] then [1, 2] or [0 1]", 1, 2),
    ],
)
def test_move_syntax_is_tolerant_and_the_first_pair_wins(
    text: str, pile: int, quantity: int
) -> None:
    game = Nim()
    state = game.new_state(np.random.default_rng(0))
    assert state.parse(text) == Parsed(game.actions.index(f"[{pile} {quantity}]"))


def test_custom_piles() -> None:
    game = Nim(piles=[0, 2, 7])
    assert game.actions == ("[1 1]", "[1 2]", *(f"[2 {q}]" for q in range(1, 8)))
    assert game.observation_shape == (3,)
    assert "pile 0: 0, pile 1: 2, pile 2: 7" in game.rules(0)
    env = play(["[0 1]"], piles=[0, 2, 7], invalid_move={"retries": 1})
    assert "pile 0 is empty" in env.infos["player_0"]["reason"]
    env.step("[2 7]")
    obs = env.observe("player_1")
    assert env.observation_space("player_1").contains(obs)
    assert obs["observation"].tolist() == pytest.approx([0.0, 2 / 7, 0.0])
    env.step("[1, 2]")
    assert env.rewards == {"player_0": -1.0, "player_1": 1.0}
    single = play(["[0 1]"], piles=(1,))
    assert single.rewards == {"player_0": 1.0, "player_1": -1.0}


@pytest.mark.parametrize(
    "piles",
    [[], [0, 0], [-1, 2], "345", [1.5], [True, 2], [101], [1] * 21, 5, None, {1: 2}],
)
def test_bad_piles_are_rejected(piles: object) -> None:
    with pytest.raises(ValueError):
        Nim(piles=piles)  # type: ignore[arg-type]


def test_the_nim_sum_strategy_beats_random_play() -> None:
    """From (3, 4, 5), nim-sum 2, the first player wins by always moving to nim-sum 0."""
    game = Nim()
    rng = np.random.default_rng(7)
    for _ in range(50):
        state = game.new_state(rng)
        while not state.terminal:
            if state.current_player == 0:
                total = reduce(xor, state.piles)
                pile = next(i for i, size in enumerate(state.piles) if size ^ total < size)
                quantity = state.piles[pile] - (state.piles[pile] ^ total)
                move = game.actions.index(f"[{pile} {quantity}]")
            else:
                move = state.random_move(rng)
            assert state.illegal_reason(move) is None
            state.apply(move)
        assert state.returns() == (1.0, -1.0)


def test_seeded_play_is_reproducible() -> None:
    env = spiral_envs.env("Nim-v0", piles=[2, 6, 1])
    actions = play_random(env, seed=9)
    other = spiral_envs.env("Nim-v0", piles=[2, 6, 1])
    assert play_random(other, seed=9) == actions
    assert transcript(env, actions, 9) == transcript(other, actions, 9)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("[]0123456789 ,-\n\tx"), max_size=60)
    | st.text(max_size=200),
    prefix=st.lists(st.integers(0, 11), max_size=6),
)
def test_arbitrary_text_never_raises(text: str, prefix: list[int]) -> None:
    state = Nim().new_state(np.random.default_rng(0))
    for move in prefix:
        if state.terminal:
            break
        if state.illegal_reason(move) is None:
            state.apply(move)
    parsed = state.parse(text)
    assert isinstance(parsed, (Parsed, Invalid))
    if isinstance(parsed, Parsed):
        assert parsed.move in range(12)
        reason = state.illegal_reason(parsed.move)
        assert (reason is None) == (parsed.move in state.legal_actions())
    else:
        assert parsed.reason
