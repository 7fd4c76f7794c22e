"""spiral_envs.testing on a user's own games: the API, the command line, and what it catches."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spiral_envs import testing

USER_GAMES = textwrap.dedent(
    '''
    """A user's games: Race to 10 (add 1 or 2; hitting 10 wins, passing it draws) and two
    broken copies."""
    import random

    import numpy as np

    from spiral_envs import Game, GameState, register_game
    from spiral_envs.core import win_returns, winner_id


    class Race(Game):
        id = "Race-v0"
        actions = ("[1]", "[2]")
        observation_shape = (1,)
        max_turns = 40

        def rules(self, player):
            return f"You are Player {player}. Add [1] or [2]; hitting 10 wins, passing it draws.\\n"

        def new_state(self, rng):
            return RaceState(self, rng)


    class RaceState(GameState):
        def __init__(self, game, rng):
            super().__init__(game, rng)
            self.total, self.winner = int(rng.integers(3)), None

        def legal_actions(self):
            return [0, 1]

        def apply(self, move):
            self.total += move + 1
            self.log.game(f"Player {self.current_player} adds {move + 1}: {self.total}.")
            if self.total >= 10:
                self.terminal = True
                self.winner = self.current_player if self.total == 10 else None
            else:
                self.current_player = 1 - self.current_player

        def returns(self):
            return win_returns(self.winner)

        def details(self):
            return {"winner": winner_id(self.winner), "total": self.total}

        def observation(self, player):
            return np.array([min(self.total, 10) / 10], dtype=np.float32)

        def state_text(self, player):
            return f"Total: {self.total}."


    register_game(Race)


    class UnseededRace(Race):
        """Draws its start from the global random module, not from the env's seed."""

        id = "UnseededRace-v0"

        def new_state(self, rng):
            state = RaceState(self, rng)
            state.total = random.randrange(3)
            return state


    class NoneWinnerRace(Race):
        """Reports a draw's winner as None: a type that changes between games."""

        id = "NoneWinnerRace-v0"

        def new_state(self, rng):
            state = RaceState(self, rng)
            state.details = lambda: {"winner": state.winner}
            return state
    '''
)


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "my_games.py").write_text(USER_GAMES)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m == "my_games"]:
        del sys.modules[name]
    from spiral_envs.registry import GAMES

    GAMES.pop("Race-v0", None)


def run_cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spiral_envs.testing", *args],
        capture_output=True, text=True, cwd=folder, timeout=600, check=False,
    )  # fmt: skip


def test_a_users_game_passes_the_contract(user_folder: Path) -> None:
    import my_games

    testing.check_game(my_games.Race)


@pytest.mark.slow
def test_the_command_checks_a_game_in_the_current_folder(user_folder: Path) -> None:
    out = run_cli(user_folder, "my_games:Race")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.rstrip().endswith("all checks passed")
    assert "ok   Race-v0 cross_process_seed" in out.stdout
    by_id = run_cli(user_folder, "--import", "my_games", "Race-v0", "--skip", "rendering")
    assert by_id.returncode == 0 and "rendering" not in by_id.stdout


def test_unseeded_chance_is_caught(user_folder: Path) -> None:
    import my_games

    with pytest.raises(testing.GameCheckError) as error:
        testing.check_game(my_games.UnseededRace, skip=["pettingzoo_api", "rendering"])
    failed = {line.split(":")[0] for line in str(error.value).splitlines()[1:]}
    assert {"seeded_replay", "cross_process_seed"} <= failed


def test_an_info_type_that_changes_is_caught(user_folder: Path) -> None:
    import my_games

    with pytest.raises(AssertionError, match="'winner' is int in one game, NoneType in another"):
        testing.check_info_types(my_games.NoneWinnerRace)


def test_bad_names_get_one_clear_line(user_folder: Path) -> None:
    out = run_cli(user_folder, "my_games:Nope")
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "Nope" in out.stderr
    with pytest.raises(ValueError, match="unknown checks"):
        testing.check_game("TicTacToe-v0", skip=["no_such_check"])


def test_a_game_defined_in_main_is_told_to_move(user_folder: Path) -> None:
    import my_games

    main_race = type("Race", (my_games.Race,), {"__module__": "__main__"})
    with pytest.raises(AssertionError, match="importable module"):
        testing.check_cross_process_seed(main_race)
