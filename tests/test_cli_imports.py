"""A user's own games and agents from the command line: ``--import MODULE`` and
``module:attr`` specs found in the current folder, in the arena's process and in its workers.

The command runs as the installed ``spiral-arena`` script runs: ``python -P`` keeps the current
folder off ``sys.path``, as a console script does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import spiral_agents
from spiral_agents import registry

REPO = Path(spiral_agents.__file__).resolve().parent.parent

USER_GAME = '''
"""Take 1 or 2 from a pile of 5; whoever takes the last wins."""
import numpy as np
import spiral_envs
from spiral_envs.core import Game, GameState


class TakeLast(Game):
    id = "TakeLast-v0"
    actions = ("[1]", "[2]")
    observation_shape = (1,)

    def new_state(self, rng):
        return TakeLastState(self, rng)

    def rules(self, player):
        return f"You are Player {player}. Take [1] or [2]; taking the last wins.\\n"


class TakeLastState(GameState):
    def __init__(self, game, rng):
        super().__init__(game, rng)
        self.pile, self.winner = 5, None

    def legal_actions(self):
        return [0, 1] if self.pile >= 2 else [0]

    def apply(self, move):
        self.pile -= move + 1
        if self.pile == 0:
            self.terminal, self.winner = True, self.current_player
        else:
            self.current_player = 1 - self.current_player

    def returns(self):
        return (1.0, -1.0) if self.winner == 0 else (-1.0, 1.0)

    def observation(self, player):
        return np.array([self.pile / 5], dtype=np.float32)

    def state_text(self, player):
        return f"Pile: {self.pile}"


spiral_envs.register_game(TakeLast)
'''

USER_AGENTS = """
from spiral_agents import register_agent


def take_one(observation):
    return 0


class TakeTwo:
    def __init__(self, game=None, seed=None):
        pass

    def act(self, observation):
        return 1 if observation["action_mask"][1] else 0


register_agent("take-two", TakeTwo, ("TakeLast-v0",), "takes two whenever it can")
"""


def arena(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``spiral-arena ARGS`` run in ``folder`` as the console script runs."""
    return subprocess.run(
        [sys.executable, "-P", "-c", "import sys; from spiral_agents.cli import main; sys.exit(main())",
         *args],
        cwd=folder, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    (tmp_path / "my_games.py").write_text(USER_GAME)
    (tmp_path / "my_agents.py").write_text(USER_AGENTS)
    return tmp_path


def test_module_attr_specs_are_found_in_the_current_folder(user_folder: Path) -> None:
    play = arena(user_folder, "play", "--game", "TicTacToe-v0", "--agent", "random",
                 "--agent", "my_agents:take_one", "-n", "2", "--quiet", "--move-timeout", "20")  # fmt: skip
    assert play.returncode == 0, play.stderr
    assert "my_agents:take_one" in play.stdout


def test_imported_games_and_agents_play_here_and_in_workers(user_folder: Path) -> None:
    records = user_folder / "games.jsonl"
    play = arena(user_folder, "play", "--import", "my_games", "--import", "my_agents",
                 "--game", "TakeLast-v0", "--agent", "take-two", "--agent", "my_agents:take_one",
                 "--agent", "random", "-n", "4", "--workers", "2", "--quiet",
                 "--records", str(records))  # fmt: skip
    assert play.returncode == 0, play.stderr
    assert play.stdout.count("TakeLast-v0") == 4  # three pairings and the ratings
    assert "Bradley-Terry ratings on TakeLast-v0" in play.stdout
    assert len(records.read_text().splitlines()) == 12
    check = arena(user_folder, "replay", "--import", "my_games", str(records))
    assert check.returncode == 0 and "12 game(s) replayed exactly" in check.stdout
    listed = arena(user_folder, "agents", "--import", "my_games", "--import", "my_agents")
    assert (
        "take-two" in listed.stdout and "takes two whenever it can [TakeLast-v0]" in listed.stdout
    )


@pytest.mark.parametrize(
    "module, message",
    [
        ("no_such_games", "cannot import 'no_such_games': no module named 'no_such_games'"),
        ("broken_games", "importing 'broken_games' raised NameError: name 'undefined' is not defined"),
        ("my games", "'my games' is not a module name"),
    ],
)  # fmt: skip
def test_a_module_that_does_not_import_is_one_line(user_folder: Path, module, message) -> None:
    (user_folder / "broken_games.py").write_text("undefined\n")
    play = arena(user_folder, "play", "--import", module, "--game", "TicTacToe-v0",
                 "--agent", "random", "--agent", "minimax", "--quiet")  # fmt: skip
    assert play.returncode == 2 and play.stdout == ""
    assert play.stderr.startswith("spiral-arena: error: ") and play.stderr.count("\n") == 1
    assert message in play.stderr


def test_import_user_modules_is_the_shared_helper(tmp_path: Path, monkeypatch) -> None:
    from spiral_agents.registry import UserModuleError, import_user_modules

    (tmp_path / "plain_user_module.py").write_text("ANSWER = 42\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(registry, "_USER_MODULES", [])
    monkeypatch.delitem(sys.modules, "plain_user_module", raising=False)
    (module,) = import_user_modules(["plain_user_module"])
    monkeypatch.setitem(sys.modules, "plain_user_module", module)
    assert module.ANSWER == 42 and sys.path[-1] == str(tmp_path)
    assert registry.user_modules() == ["plain_user_module"]  # what workers import
    with pytest.raises(UserModuleError, match="no module named 'elsewhere'"):
        import_user_modules(["elsewhere"])
