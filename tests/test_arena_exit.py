"""The arena always exits: agents that hang or spin past the move time limit are stopped, the
records are written as games finish, and no worker process outlives the arena."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spiral_agents.arena import play_game, read_records, replay, run_tournament


class Sleeper:
    """Never answers: sleeps."""

    def act(self, observation: dict) -> int:
        time.sleep(3600)
        return 0


class Spinner:
    """Never answers: spins on the CPU."""

    def act(self, observation: dict) -> int:
        while True:
            pass


class SlowFirstLegal:
    """Takes a tenth of a second per move, then plays the first legal move."""

    def act(self, observation: dict) -> int:
        time.sleep(0.1)
        return int(np.flatnonzero(observation["action_mask"])[0])


class Quitter:
    """Ends its own process on its second move."""

    def __init__(self) -> None:
        self.moves = 0

    def reset(self) -> None:
        self.moves = 0

    def act(self, observation: dict) -> int:
        self.moves += 1
        if self.moves == 2:
            os._exit(3)
        return int(np.flatnonzero(observation["action_mask"])[0])


class CountsItsMoves:
    """Holds state across moves: raises if its count of its own moves disagrees with the board."""

    def __init__(self) -> None:
        self.moves = 0

    def reset(self) -> None:
        self.moves = 0

    def act(self, observation: dict) -> int:
        own_marks = int(observation["observation"][..., 0].sum())
        if own_marks != self.moves:
            raise AssertionError(f"lost count: {self.moves} moves made, {own_marks} on the board")
        self.moves += 1
        return int(np.flatnonzero(observation["action_mask"])[0])


def _kill_group(process: subprocess.Popen) -> None:
    """Kill whatever is left of the process group ``process`` leads (its workers included)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def run_cli(args: list[str], limit: float) -> subprocess.CompletedProcess:
    """Run ``spiral-arena`` in its own process group; kill the whole group (workers too) and
    fail if it has not exited within ``limit`` seconds."""
    command = [sys.executable, "-m", "spiral_agents.cli", *args]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        process.communicate()
        pytest.fail(f"spiral-arena {' '.join(args)} had not exited after {limit} s")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.parametrize(
    "agent, workers",
    [("Sleeper", 1), ("Spinner", 1), ("Sleeper", 2), ("Spinner", 2)],
)
def test_cli_exits_with_records_when_an_agent_never_answers(
    tmp_path: Path, agent: str, workers: int
) -> None:
    records = tmp_path / "games.jsonl"
    result = run_cli(
        ["play", "--game", "TicTacToe-v0", "--agent", f"tests.test_arena_exit:{agent}",
         "--agent", "random", "-n", "3", "--move-timeout", "0.3", "--workers", str(workers),
         "--records", str(records), "--quiet"],
        limit=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    games = read_records(records)
    assert len(games) == 3
    for game in games:
        assert "exceeded the move time limit of 0.3 s" in game.error
        loser = next(seat for seat, name in game.agents.items() if name.endswith(agent))
        assert game.outcome[loser] == "loss" and game.ended_by == "forfeit"
        replay(game)  # the moves before the timeout, and the forfeit, check out
    assert "3 game(s) ended by an agent failure" in result.stdout


def test_play_game_stops_a_spinning_agent_and_keeps_the_moves_before() -> None:
    start = time.perf_counter()
    record = play_game(
        "TicTacToe-v0",
        {"player_0": SlowFirstLegal(), "player_1": Spinner()},
        seed=0,
        move_timeout=0.5,
    )
    assert time.perf_counter() - start < 20
    assert record.error == "player_1 exceeded the move time limit of 0.5 s"
    assert [m["seat"] for m in record.moves] == ["player_0"]
    assert record.outcome == {"player_1": "loss", "player_0": "win"}


def test_agents_keep_their_state_across_moves_in_worker_processes() -> None:
    records = run_tournament(
        ["TicTacToe-v0"], ["tests.test_arena_exit:CountsItsMoves", "random"], 6,
        workers=2, move_timeout=10, progress=False,
    )  # fmt: skip
    assert [r.error for r in records] == [None] * 6
    alone = play_game(
        "TicTacToe-v0",
        {"player_0": CountsItsMoves(), "player_1": CountsItsMoves()},
        3,
        move_timeout=10,
    )
    assert alone.error is None and alone.outcome["player_0"] == "win"


def test_an_agent_that_ends_its_process_forfeits_only_its_games() -> None:
    records = run_tournament(
        ["TicTacToe-v0"], ["tests.test_arena_exit:Quitter", "random", "minimax"], 2,
        move_timeout=10, progress=False,
    )  # fmt: skip
    quits = [r for r in records if "tests.test_arena_exit:Quitter" in r.pairing]
    assert len(records) == 6 and len(quits) == 4
    for record in quits:
        assert record.error.endswith("'s agent ended its worker process (exit status 3)")
        assert len(record.moves) in (2, 3)  # its first move, and the opponent's before or after
        replay(record)
    assert all(r.error is None for r in records if r not in quits)


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_a_killed_run_leaves_whole_records_and_no_worker_behind(tmp_path: Path) -> None:
    records = tmp_path / "games.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "spiral_agents.cli", "play", "--game", "TicTacToe-v0",
         "--agent", "tests.test_arena_exit:SlowFirstLegal", "--agent", "random", "-n", "400",
         "--records", str(records), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (records.exists() and records.read_text().count("\n") >= 2):
            assert time.monotonic() < deadline, "no record was written while games went on"
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        workers = _children(process.pid)
        assert workers, "the timed games run in a worker process"
        process.kill()
        process.wait()
        deadline = time.monotonic() + 20
        while any(_running(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker process outlived the arena"
            time.sleep(0.05)
    finally:
        _kill_group(process)
    _assert_whole_records(records, 400)


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
def test_ctrl_c_keeps_the_finished_games_and_says_so(tmp_path: Path) -> None:
    records = tmp_path / "games.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "spiral_agents.cli", "play", "--game", "TicTacToe-v0",
         "--agent", "tests.test_arena_exit:SlowFirstLegal", "--agent", "random", "-n", "400",
         "--workers", "2", "--records", str(records), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (records.exists() and records.read_text().count("\n") >= 2):
            assert time.monotonic() < deadline, "no record was written while games went on"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C does: the whole foreground group
        _, stderr = process.communicate(timeout=30)
    finally:
        _kill_group(process)
    assert process.returncode == 130
    kept = _assert_whole_records(records, 400)
    assert f"spiral-arena: interrupted; {kept} finished game(s) are in {records}" in stderr
    assert "Traceback" not in stderr


def _assert_whole_records(path: Path, fewer_than: int) -> int:
    lines = path.read_text().splitlines()
    assert 2 <= len(lines) < fewer_than
    assert all(json.loads(line)["game"] == "TicTacToe-v0" for line in lines)
    assert len(read_records(path)) == len(lines)
    return len(lines)
