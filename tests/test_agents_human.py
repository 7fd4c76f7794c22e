"""The human agent reads a move as the game writes it, shows the menu apart from the game's
text, tells the result at the end, and treats end of input as quitting."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import spiral_agents
import spiral_envs
from spiral_agents import HumanAgent
from spiral_agents.arena import play_game

REPO = Path(spiral_agents.__file__).resolve().parent.parent


def scripted(answers: list[str]) -> tuple[HumanAgent, list[str]]:
    """A human agent that types ``answers`` in turn (end of input after the last)."""
    typed: Iterator[str] = iter(answers)
    shown: list[str] = []

    def ask(prompt: str) -> str:
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    return HumanAgent("TicTacToe-v0", ask=ask, show=shown.append), shown


def after(*moves: int) -> dict:
    env = spiral_envs.env("TicTacToe-v0")
    env.reset(seed=0)
    for move in moves:
        env.step(move)
    return env.observe(env.agent_selection)


@pytest.mark.parametrize("typed", ["3", "[3]", " [ 3 ] "])
def test_a_number_is_the_cell_not_the_menu_entry(typed: str) -> None:
    agent, _ = scripted([typed])
    assert agent.act(after(0, 1)) == 3  # legal moves 2..8: the old menu's entry 3 was cell 5


def test_the_menu_is_shown_apart_as_the_game_writes_moves() -> None:
    agent, shown = scripted(["0", "5"])
    assert agent.act(after(0, 1)) == 5
    observation, menu, refusal = shown
    assert observation.strip().startswith("You are Player 0 in TicTacToe")
    assert menu.splitlines()[-1] == "Legal moves: [2]  [3]  [4]  [5]  [6]  [7]  [8]"
    assert "0)" not in menu and "Not a legal move: '0'" in refusal


def test_the_human_is_told_the_result() -> None:
    agent, shown = scripted(["0", "3", "6"])  # O takes the left column; X plays cells 1 and 2
    seats = {"player_0": agent, "player_1": "tests.test_agents:first_legal"}
    record = play_game("TicTacToe-v0", seats, seed=0)
    assert record.outcome["player_0"] == "win"
    assert "The game is over." in shown[-1] and shown[-1].endswith("Game over: you won.")


def test_end_of_input_quits_the_command_not_a_forfeit(tmp_path: Path) -> None:
    records = tmp_path / "games.jsonl"
    play = subprocess.run(
        [sys.executable, "-m", "spiral_agents.cli", "play", "--game", "TicTacToe-v0",
         "--agent", "human", "--agent", "minimax", "-n", "2", "--quiet", "--records",
         str(records)],
        input="4\n", capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert play.returncode == 0, play.stderr
    assert "quit at the end of input" in play.stderr and "Traceback" not in play.stderr
    assert "agent failure" not in play.stdout and not records.exists()


@given(st.text(alphabet="abBK 0123,\t", max_size=20), st.text(alphabet=" \t", max_size=3))
def test_move_key_ignores_brackets_case_commas_and_spacing(text: str, space: str) -> None:
    from spiral_agents.human import move_key

    key = move_key(text)
    assert move_key(f"{space}[{text.upper()}]{space}") == key
    assert key == " ".join(key.split()) and "," not in key
