"""TicTacToe rules and the invalid-move policy, through the public AEC API."""

from __future__ import annotations

import pytest

import spiral_envs
from spiral_envs import InvalidMovePolicy
from spiral_envs.core import NO_WINNER


def play(moves: list, **kwargs) -> spiral_envs.SpiralAECEnv:
    env = spiral_envs.env("TicTacToe-v0", **kwargs)
    env.reset(seed=0)
    for move in moves:
        env.step(move)
    return env


@pytest.mark.parametrize(
    "moves, winner",
    [
        ([0, 3, 1, 4, 2], "player_0"),  # top row
        ([0, 1, 3, 2, 6], "player_0"),  # left column
        ([0, 1, 4, 2, 8], "player_0"),  # main diagonal
        ([0, 2, 1, 4, 3, 6], "player_1"),  # anti-diagonal by X
        ([0, 1, 3, 4, 8, 7], "player_1"),  # middle column by X
    ],
)
def test_three_in_a_row_wins(moves: list[int], winner: str) -> None:
    env = play(moves)
    loser = "player_1" if winner == "player_0" else "player_0"
    assert all(env.terminations.values())
    assert env.rewards == {winner: 1.0, loser: -1.0}
    assert env.infos[winner]["outcome"] == "win" and env.infos[loser]["outcome"] == "loss"


def test_full_board_is_a_draw() -> None:
    env = play([0, 1, 2, 4, 3, 5, 7, 6, 8])
    assert all(env.terminations.values())
    assert env.rewards == {"player_0": 0.0, "player_1": 0.0}
    assert env.infos["player_0"]["winner"] == NO_WINNER


def test_player_0_plays_o_and_moves_first() -> None:
    env = play(["I will take the centre: [4]"])
    assert env.agent_selection == "player_1"
    text = env.observe("player_1")["text"]
    assert "Player 0 (O) claimed cell 4." in text
    assert "you are X" in text
    assert env.observe("player_1")["observation"][1, 1].tolist() == [0, 1]
    assert env.observe("player_0")["observation"][1, 1].tolist() == [1, 0]


def test_first_bracketed_integer_is_the_move() -> None:
    env = play(["[x] then [2] and later [5]"])
    assert env.game_state.board[2] == 0 and env.game_state.board[5] == -1


@pytest.mark.parametrize(
    "text, reason",
    [
        ("no brackets at all", "no move found"),
        ("[9]", "does not exist"),
        ("[12345678901234567890]", "does not exist"),
        ("[-1]", "no move found"),
    ],
)
def test_unreadable_or_out_of_range_text_is_invalid(text: str, reason: str) -> None:
    env = play([text])
    assert env.infos["player_0"]["invalid_move"] is True
    assert reason in env.infos["player_0"]["reason"]
    assert env.rewards == {"player_0": -1.0, "player_1": 1.0}
    assert all(env.terminations.values())


def test_occupied_cell_is_invalid_and_retry_allowance_is_respected() -> None:
    env = play([4, "[4]"], invalid_move=InvalidMovePolicy(retries=1))
    assert env.agent_selection == "player_1" and not env.terminations["player_1"]
    assert "already taken" in env.infos["player_1"]["reason"]
    text = env.observe("player_1")["text"]
    assert "Your move was invalid: cell 4 is already taken" in text
    assert "invalid" not in env.observe("player_0")["text"]  # feedback is private
    env.step("[4]")  # second invalid move in a row ends the game
    assert all(env.terminations.values())
    assert env.rewards == {"player_0": 1.0, "player_1": -1.0}


def test_valid_move_resets_the_retry_streak() -> None:
    env = play(["?", 0, "?", 1, "?", 2], invalid_move={"retries": 1})
    assert not any(env.terminations.values())


def test_spiral_training_rewards() -> None:
    env = play(["nothing"], invalid_move=InvalidMovePolicy.spiral_training())
    assert env.rewards == {"player_0": -1.5, "player_1": 0.5}
    assert env._cumulative_rewards == {"player_0": -1.5, "player_1": 0.5}
    assert "invalid move by player_0" in env.infos["player_1"]["ended_by"]


def test_bad_policy_values_are_rejected() -> None:
    with pytest.raises(ValueError):
        InvalidMovePolicy(retries=-1)
    with pytest.raises(TypeError):
        spiral_envs.env("TicTacToe-v0", invalid_move=3)
    with pytest.raises(ValueError):
        spiral_envs.env("TicTacToe-v0", max_turns=0)
    with pytest.raises(KeyError, match="registered games"):
        spiral_envs.env("Chess-v0")


def test_non_integer_actions_from_code_raise() -> None:
    env = play([])
    for bad in (1.5, None, [1], True):
        with pytest.raises(ValueError):
            env.step(bad)


def test_text_says_the_game_is_over_after_an_invalid_final_move() -> None:
    env = play(["nothing"])
    for agent in ("player_0", "player_1"):
        assert env.observe(agent)["text"].endswith("The game is over.")
