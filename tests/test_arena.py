"""The arena: seat swapping, recorded seeds, exact replay, statistics, failing agents, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from spiral_agents.arena import (
    GameRecord,
    bradley_terry,
    play_game,
    read_records,
    replay,
    run_tournament,
    summarize,
    wilson_interval,
    write_records,
)


class CrashOnSecondMove:
    """A third-party agent that raises on its second move."""

    def __init__(self) -> None:
        self.moves = 0

    def reset(self) -> None:
        self.moves = 0

    def act(self, observation: dict) -> int:
        self.moves += 1
        if self.moves == 2:
            raise RuntimeError("boom")
        return int(np.flatnonzero(observation["action_mask"])[0])


class Sleepy:
    def act(self, observation: dict) -> int:
        time.sleep(10.0)
        return 0


@pytest.mark.parametrize(
    "successes, n, low, high",
    [(8, 10, 0.4901625, 0.9433178), (0, 10, 0.0, 0.2775328), (5, 10, 0.2365931, 0.7634069),
     (50, 100, 0.4038315, 0.5961685), (100, 100, 0.9630065, 1.0)],
)  # fmt: skip
def test_wilson_interval_known_values(successes: int, n: int, low: float, high: float) -> None:
    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=1e-6)


def test_tournament_swaps_seats_evenly_and_records_seeds() -> None:
    records = run_tournament(["TicTacToe-v0"], ["random", "minimax"], 20, progress=False)
    assert len(records) == 20
    assert sum(r.agents["player_0"] == "minimax" for r in records) == 10
    assert len({r.seed for r in records}) == 20
    (result,) = summarize(records)
    assert (result.a, result.b) == ("random", "minimax")
    assert result.wins == 0 and result.wins + result.draws + result.losses == 20
    assert result.row()["invalid_rate"] == 0.0


def test_round_robin_skips_games_an_agent_cannot_play() -> None:
    with pytest.warns(UserWarning, match="pairings not played"):
        records = run_tournament(
            ["TicTacToe-v0", "KuhnPoker-v1"], ["random", "minimax", "kuhn-nash"], 4, progress=False
        )
    pairs = {(r.game, *r.pairing) for r in records}
    assert pairs == {("TicTacToe-v0", "random", "minimax"), ("KuhnPoker-v1", "random", "kuhn-nash")}


def test_every_recorded_game_replays_exactly_and_tampering_is_caught(tmp_path) -> None:
    records = run_tournament(
        ["KuhnPoker-v1", "SimpleNegotiation-v1"], ["random", "random@seed=5"], 6, progress=False
    )
    path = tmp_path / "games.jsonl"
    write_records(records, path)
    loaded = read_records(path)
    assert [r.to_json() for r in loaded] == [r.to_json() for r in records]
    for record in loaded:
        replay(record)
    tampered = GameRecord.from_json(loaded[0].to_json())
    tampered.rewards = {k: -v for k, v in tampered.rewards.items()}
    with pytest.raises(AssertionError, match="replay ended"):
        replay(tampered)


def test_parallel_workers_give_the_same_games() -> None:
    serial = run_tournament(["TicTacToe-v0"], ["random", "minimax"], 30, progress=False)
    parallel = run_tournament(["TicTacToe-v0"], ["random", "minimax"], 30, workers=2, progress=False)
    assert [r.moves for r in serial] == [r.moves for r in parallel]


def test_crashing_agent_forfeits_only_its_own_game() -> None:
    records = run_tournament(
        ["TicTacToe-v0"], ["tests.test_arena:CrashOnSecondMove", "random"], 4, progress=False
    )
    assert len(records) == 4
    for record in records:
        assert record.error and "RuntimeError: boom" in record.error
        loser = next(s for s, a in record.agents.items() if a.endswith("CrashOnSecondMove"))
        assert record.outcome[loser] == "loss" and record.ended_by == "forfeit"
    (result,) = summarize(records)
    assert result.errors == 4


def test_slow_agent_times_out_without_stopping_the_tournament() -> None:
    agents = {"player_0": Sleepy(), "player_1": CrashOnSecondMove()}
    start = time.perf_counter()
    record = play_game("TicTacToe-v0", agents, seed=1, move_timeout=0.2)
    assert time.perf_counter() - start < 5.0  # the worker is stopped, not waited for
    assert "exceeded the move time limit" in record.error
    assert record.outcome == {"player_0": "loss", "player_1": "win"}


def test_out_of_space_action_is_recorded_not_raised() -> None:
    record = play_game("TicTacToe-v0", {"player_0": lambda o: 42, "player_1": lambda o: 0}, seed=0)
    assert "unusable action 42" in record.error and record.outcome["player_0"] == "loss"


def test_bradley_terry_orders_agents_by_strength() -> None:
    records = run_tournament(
        ["TicTacToe-v0"], ["random", "minimax", "tests.test_agents:first_legal"], 20, progress=False
    )
    ratings = bradley_terry(records)
    assert ratings["minimax"] > ratings["random"]
    assert ratings["minimax"] > ratings["tests.test_agents:first_legal"]
    assert sum(ratings.values()) == pytest.approx(0.0, abs=1e-6)


def test_cli_play_records_csv_json_and_replay(tmp_path) -> None:
    records, table, summary = tmp_path / "g.jsonl", tmp_path / "t.csv", tmp_path / "s.json"
    play = subprocess.run(
        [sys.executable, "-m", "spiral_agents.cli", "play", "--game", "KuhnPoker-v1",
         "--agent", "random", "--agent", "kuhn-nash@alpha=0.2", "-n", "10", "--quiet",
         "--records", str(records), "--csv", str(table), "--json", str(summary)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "kuhn-nash@alpha=0.2" in play.stdout and "win_rate" in play.stdout
    assert len(records.read_text().splitlines()) == 10
    assert table.read_text().startswith("game,agent,opponent,games,wins")
    assert json.loads(summary.read_text())["results"][0]["games"] == 10
    shown = subprocess.run(
        [sys.executable, "-m", "spiral_agents.cli", "replay", str(records), "--index", "2"],
        capture_output=True, text=True, check=True,
    )
    assert "move 1:" in shown.stdout and "replayed exactly" in shown.stdout


def test_cli_reports_bad_input_clearly() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "spiral_agents.cli", "play", "--game", "TicTacToe-v0",
         "--agent", "nobody", "--agent", "random", "--quiet"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown agent 'nobody'" in bad.stderr
