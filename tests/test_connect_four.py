"""Connect Four rules: gravity, wins in every direction, full columns, draws, syntax, variants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spiral_envs
from spiral_envs.core import NO_WINNER, Invalid, Parsed
from spiral_envs.games.connect_four import ConnectFour
from tests.helpers import play_random, transcript

# A 42-move game on the standard board that fills it with no line of four.
DRAW_MOVES = [int(c) for c in "555054466351352123041430222100021613443666"]


def play(moves: list, **kwargs) -> spiral_envs.SpiralAECEnv:
    env = spiral_envs.env("ConnectFour-v0", **kwargs)
    env.reset(seed=0)
    for move in moves:
        env.step(move)
    return env


def four_in_a_row(board: list[int], rows: int, columns: int, player: int) -> bool:
    """Brute force: does ``player`` own any four consecutive cells in a line?"""
    for r in range(rows):
        for c in range(columns):
            for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
                cells = [(r + i * dr, c + i * dc) for i in range(4)]
                if all(0 <= rr < rows and 0 <= cc < columns for rr, cc in cells) and all(
                    board[rr * columns + cc] == player for rr, cc in cells
                ):
                    return True
    return False


@pytest.mark.parametrize(
    "moves, winner, line",
    [
        # horizontal along the bottom, from the left edge and up to the right edge
        ([0, 0, 1, 1, 2, 2, 3], "player_0", {(5, 0), (5, 1), (5, 2), (5, 3)}),
        ([6, 6, 5, 5, 4, 4, 3], "player_0", {(5, 3), (5, 4), (5, 5), (5, 6)}),
        # vertical in the right edge column, from the bottom
        ([6, 0, 6, 0, 6, 0, 6], "player_0", {(5, 6), (4, 6), (3, 6), (2, 6)}),
        # vertical reaching the top-left corner
        ([0, 0, 0, 1, 0, 1, 0, 2, 0], "player_0", {(3, 0), (2, 0), (1, 0), (0, 0)}),
        # rising diagonal from the bottom-left corner
        ([0, 1, 1, 2, 2, 3, 2, 3, 3, 6, 3], "player_0", {(5, 0), (4, 1), (3, 2), (2, 3)}),
        # falling diagonal ending in the bottom-right corner
        ([6, 5, 5, 4, 4, 3, 4, 3, 3, 0, 3], "player_0", {(5, 6), (4, 5), (3, 4), (2, 3)}),
    ],
)
def test_four_in_a_row_wins(moves: list[int], winner: str, line: set) -> None:
    env = play(moves)
    loser = "player_1" if winner == "player_0" else "player_0"
    assert all(env.terminations.values())
    assert env.rewards == {winner: 1.0, loser: -1.0}
    assert env.infos[winner]["outcome"] == "win" and env.infos[loser]["outcome"] == "loss"
    assert set(env.infos[winner]["winning_line"]) == line
    assert "has four in a row and wins" in env.observe(loser)["text"]


def test_player_1_wins_in_the_top_right_corner_diagonal() -> None:
    # O's last piece tops column 6, completing (0, 6), (1, 5), (2, 4), (3, 3).
    env = play([int(c) for c in "546665540545345614320366"])
    state = env.game_state
    assert state.winner == 1, state.render()
    assert env.rewards == {"player_0": -1.0, "player_1": 1.0}
    assert set(state.winning_line) == {(0, 6), (1, 5), (2, 4), (3, 3)}


def test_pieces_fall_to_the_lowest_empty_cell_and_player_0_moves_first() -> None:
    env = play(["I start in the middle: [col 3]", "[3]"])
    assert env.agent_selection == "player_0"
    mine = env.observe("player_0")["observation"]
    theirs = env.observe("player_1")["observation"]
    assert mine.shape == (6, 7, 2) and mine.dtype == np.int8
    assert mine[5, 3].tolist() == [1, 0] and mine[4, 3].tolist() == [0, 1]
    assert theirs[5, 3].tolist() == [0, 1] and theirs[4, 3].tolist() == [1, 0]
    assert mine.sum() == 2
    text = env.observe("player_0")["text"]
    assert "[Game] Player 0 (X) dropped a piece into column 3." in text
    assert "[Game] Player 1 (O) dropped a piece into column 3." in text
    assert "0 1 2 3 4 5 6\n" in text
    assert ". . . O . . .\n. . . X . . .\n\nYour legal moves: [col 0]" in text


def test_full_column_is_illegal() -> None:
    env = play([0, 0, 0, 0, 0, 0], invalid_move={"retries": 1})
    state = env.game_state
    assert state.heights[0] == 6 and not state.terminal  # alternating pieces: no line
    assert env.observe("player_0")["action_mask"].tolist() == [0, 1, 1, 1, 1, 1, 1]
    assert 0 not in state.legal_actions()
    assert "[col 0]" not in state.moves_text()
    env.step("[col 0]")
    assert env.infos["player_0"]["invalid_move"] is True
    assert "column 0 is full" in env.infos["player_0"]["reason"]
    env.step(0)  # the index path too; the second invalid move in a row ends the game
    assert "column 0 is full" in env.infos["player_0"]["reason"]
    assert env.rewards == {"player_0": -1.0, "player_1": 1.0}


def test_full_board_is_a_draw() -> None:
    env = play(DRAW_MOVES)
    assert all(env.terminations.values())
    assert env.rewards == {"player_0": 0.0, "player_1": 0.0}
    assert env.infos["player_0"]["outcome"] == "draw"
    assert env.infos["player_0"]["winner"] == NO_WINNER and env.infos["player_0"]["moves"] == 42
    assert "no four in a row: a draw" in env.observe("player_0")["text"]


@pytest.mark.parametrize(
    "rows, columns, moves",
    [(6, 1, [0] * 6), (1, 4, [0, 1, 2, 3]), (3, 4, [0, 1, 2, 3] * 3)],
)
def test_small_boards_fill_up_to_a_draw(rows: int, columns: int, moves: list[int]) -> None:
    env = play(moves, rows=rows, columns=columns)
    assert all(env.terminations.values()) and env.game_state.winner is None
    assert env.rewards == {"player_0": 0.0, "player_1": 0.0}


def test_one_row_board_still_wins_horizontally() -> None:
    env = play([0, 4, 1, 5, 2, 6, 3], rows=1, columns=7)
    assert env.game_state.winner == 0 and env.rewards["player_0"] == 1.0


@pytest.mark.parametrize(
    "text, column",
    [
        ("[col 3]", 3),
        ("[3]", 3),
        ("[COL 5]", 5),
        ("[Column 2]", 2),
        ("[  col   6 ]", 6),
        ("[col0]", 0),
        ("[03]", 3),
        ("thinking [x] [hello 1] then [col 4] or maybe [2]", 4),
        ("[2] is better than [col 4]", 2),
    ],
)
def test_both_move_syntaxes_and_the_first_column_wins(text: str, column: int) -> None:
    state = ConnectFour().new_state(np.random.default_rng(0))
    assert state.parse(text) == Parsed(column)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("no brackets", "no move found"),
        ("[col -1]", "no move found"),
        ("[col 3.5]", "no move found"),
        ("[col 7]", "column 7 does not exist; columns are 0 to 6"),
        ("[99999999999999999999999999999]", "does not exist"),
        ("[col 9] [col 1]", "does not exist"),
    ],
)
def test_unreadable_or_missing_columns_are_invalid(text: str, reason: str) -> None:
    env = play([text])
    assert env.infos["player_0"]["invalid_move"] is True
    assert reason in env.infos["player_0"]["reason"]
    assert env.rewards == {"player_0": -1.0, "player_1": 1.0}


def test_board_size_variants() -> None:
    game = ConnectFour(rows=4, columns=12)
    assert game.actions == tuple(f"[col {c}]" for c in range(12))
    assert game.observation_shape == (4, 12, 2)
    assert game.max_turns > 4 * 12
    assert "4 rows and 12 columns, numbered 0 to 11" in game.rules(0)
    env = play(["[col 11]", "[10]"], rows=4, columns=12)
    obs = env.observe("player_0")
    assert env.observation_space("player_0").contains(obs)
    assert obs["observation"][3, 11].tolist() == [1, 0]
    assert obs["action_mask"].shape == (12,)
    assert " 0  1  2  3  4  5  6  7  8  9 10 11" in obs["text"]
    assert env.game_state.parse("[col 12]") == Invalid("column 12 does not exist; columns are 0 to 11")
    default = ConnectFour()
    assert (default.rows, default.columns, len(default.actions)) == (6, 7, 7)
    assert default.max_turns > 42


@pytest.mark.parametrize(
    "kwargs",
    [{"rows": 0}, {"columns": 0}, {"rows": 21}, {"columns": -3}, {"rows": 3, "columns": 3},
     {"rows": True}, {"columns": 7.0}, {"rows": "6"}],
)
def test_bad_variants_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ConnectFour(**kwargs)


@pytest.mark.parametrize("rows, columns", [(6, 7), (4, 5), (5, 4), (7, 9)])
def test_random_games_end_exactly_when_brute_force_finds_four(rows: int, columns: int) -> None:
    game = ConnectFour(rows=rows, columns=columns)
    rng = np.random.default_rng(rows * 100 + columns)
    for _ in range(40):
        state = game.new_state(rng)
        while not state.terminal:
            player = state.current_player
            state.apply(state.random_move(rng))
            won = four_in_a_row(state.board, rows, columns, player)
            assert (state.winner == player) == won
            assert state.terminal == (won or all(h == rows for h in state.heights))
        if state.winner is not None:
            assert all(state.board[r * columns + c] == state.winner for r, c in state.winning_line)


def test_seeded_play_is_reproducible() -> None:
    env = spiral_envs.env("ConnectFour-v0")
    actions = play_random(env, seed=4)
    assert play_random(spiral_envs.env("ConnectFour-v0"), seed=4) == actions
    assert transcript(env, actions, 4) == transcript(spiral_envs.env("ConnectFour-v0"), actions, 4)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("[]col umn0123456789 ,-\n\tXx"), max_size=60)
    | st.text(max_size=200),
    prefix=st.lists(st.integers(0, 6), max_size=20),
)
def test_arbitrary_text_never_raises(text: str, prefix: list[int]) -> None:
    state = ConnectFour().new_state(np.random.default_rng(0))
    for move in prefix:
        if state.terminal:
            break
        if state.illegal_reason(move) is None:
            state.apply(move)
    parsed = state.parse(text)
    assert isinstance(parsed, (Parsed, Invalid))
    if isinstance(parsed, Parsed):
        assert parsed.move in range(7)
        reason = state.illegal_reason(parsed.move)
        assert (reason is None) == (parsed.move in state.legal_actions())
    else:
        assert parsed.reason
