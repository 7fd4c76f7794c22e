"""No silent skips, Bradley-Terry ratings per game and per group of agents that met, the
mean-reward column (chips in Kuhn Poker), and agent specs in ``play_game``."""

from __future__ import annotations

import dataclasses
import json
import statistics

import pytest

from spiral_agents import arena
from spiral_agents.arena import (
    GameRecord,
    bradley_terry,
    play_game,
    replay,
    run_tournament,
    summarize,
)
from spiral_agents.cli import main
from spiral_agents.replay import ReplayMismatch


def test_the_cli_says_which_pairings_did_not_play_and_why(tmp_path, capsys) -> None:
    summary = tmp_path / "s.json"
    argv = ["play", "--game", "TicTacToe-v0", "--game", "KuhnPoker-v1", "--agent", "random",
            "--agent", "minimax", "--agent", "kuhn-nash", "-n", "2", "--quiet", "--move-timeout",
            "20", "--json", str(summary)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Not played (4 pairing(s)):" in out
    assert "random vs kuhn-nash on TicTacToe-v0: kuhn-nash plays only KuhnPoker-v1" in out
    assert "minimax vs kuhn-nash on KuhnPoker-v1: minimax plays only TicTacToe-v0" in out
    not_played = json.loads(summary.read_text())["not_played"]
    assert {(p["game"], p["a"], p["b"]) for p in not_played} == {
        ("TicTacToe-v0", "random", "kuhn-nash"),
        ("TicTacToe-v0", "minimax", "kuhn-nash"),
        ("KuhnPoker-v1", "random", "minimax"),
        ("KuhnPoker-v1", "minimax", "kuhn-nash"),
    }


def test_the_api_warns_of_pairings_it_leaves_out() -> None:
    with pytest.warns(UserWarning, match="random vs minimax on KuhnPoker-v1: minimax plays only"):
        records = run_tournament(
            ["TicTacToe-v0", "KuhnPoker-v1"], ["random", "minimax"], 2, progress=False
        )
    assert {r.game for r in records} == {"TicTacToe-v0"}
    with pytest.raises(ValueError, match="kuhn-nash plays only KuhnPoker-v1"):
        run_tournament(["TicTacToe-v0"], ["kuhn-nash", "random"], 2, progress=False)


def test_ratings_are_per_game_and_per_group_of_agents_that_met(tmp_path, capsys) -> None:
    summary = tmp_path / "s.json"
    argv = ["play", "--game", "TicTacToe-v0", "--game", "KuhnPoker-v1", "--agent", "random",
            "--agent", "minimax", "--agent", "kuhn-nash", "--agent", "tests.test_agents:first_legal",
            "-n", "4", "--quiet", "--move-timeout", "20", "--json", str(summary)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Bradley-Terry ratings on TicTacToe-v0 (Elo scale, mean 0):" in out
    assert "Bradley-Terry ratings on KuhnPoker-v1 (Elo scale, mean 0):" in out
    ratings = json.loads(summary.read_text())["ratings"]
    assert set(ratings["TicTacToe-v0"][0]) == {"random", "minimax", "tests.test_agents:first_legal"}
    assert set(ratings["KuhnPoker-v1"][0]) == {
        "random",
        "kuhn-nash",
        "tests.test_agents:first_legal",
    }


def _game(game: str, a: str, b: str, winner: str) -> GameRecord:
    outcome = {"player_0": "win", "player_1": "loss"} if winner == a else {
        "player_0": "loss", "player_1": "win"}  # fmt: skip
    return GameRecord(game=game, seed=0, agents={"player_0": a, "player_1": b}, outcome=outcome)


def test_bradley_terry_refuses_to_pool_games_or_groups_that_never_met() -> None:
    tictactoe = [_game("TicTacToe-v0", "a", "b", "a"), _game("TicTacToe-v0", "b", "c", "b")]
    kuhn = [_game("KuhnPoker-v1", "c", "a", "c")]
    with pytest.raises(ValueError, match="compare agents on one game"):
        bradley_terry(tictactoe + kuhn)
    apart = tictactoe + [_game("TicTacToe-v0", "x", "y", "x"), _game("TicTacToe-v0", "y", "x", "y")]
    with pytest.raises(ValueError, match="never met"):
        bradley_terry(apart)
    groups = arena.rating_groups(apart + kuhn)
    assert [set(group) for group in groups["TicTacToe-v0"]] == [{"a", "b", "c"}, {"x", "y"}]
    assert groups["TicTacToe-v0"][1] == pytest.approx({"x": 0.0, "y": 0.0})
    assert set(groups["KuhnPoker-v1"][0]) == {"a", "c"}
    for group in groups["TicTacToe-v0"]:
        assert sum(group.values()) == pytest.approx(0.0, abs=1e-6)


def test_mean_reward_counts_chips_in_kuhn_poker(capsys) -> None:
    records = run_tournament(
        ["KuhnPoker-v1"], ["kuhn-nash", "random"], 40, move_timeout=None, progress=False
    )
    (result,) = summarize(records)
    chips = [r.scores[next(s for s, a in r.agents.items() if a == "kuhn-nash")] for r in records]
    assert all(r.ended_by == "game over" and r.scores for r in records)
    assert result.mean_reward == pytest.approx(statistics.fmean(chips))
    assert any(abs(c) > 1 for c in chips)  # chips, not the +1 / -1 of a win or loss
    low, high = result.reward_interval
    assert low < result.mean_reward < high
    row = result.row()
    assert row["mean_reward"] == round(statistics.fmean(chips), 4)
    assert row["mean_reward_low"] == round(low, 4) and row["mean_reward_high"] == round(high, 4)
    tampered = dataclasses.replace(records[0], scores={"player_0": 9.0, "player_1": -9.0})
    with pytest.raises(ReplayMismatch, match="replay ended with chips"):
        replay(tampered)


def test_mean_reward_is_the_reward_where_no_chips_are_counted() -> None:
    records = run_tournament(["TicTacToe-v0"], ["minimax", "random"], 10, progress=False)
    (result,) = summarize(records)
    assert all(r.scores == {} for r in records)
    assert result.mean_reward == pytest.approx((result.wins - result.losses) / result.games)


def test_play_game_takes_agent_specs_as_run_tournament_does() -> None:
    seats = {"player_0": "kuhn-nash@alpha=0.2", "player_1": "random"}
    record = play_game("KuhnPoker-v1", seats, seed=3)
    assert record.agents == seats and record.error is None
    assert play_game("KuhnPoker-v1", seats, seed=3, move_timeout=10).moves == record.moves
    replay(record)
    with pytest.raises(ValueError, match="unknown agent 'nobody'"):
        play_game("KuhnPoker-v1", {"player_0": "nobody", "player_1": "random"}, seed=0)
    with pytest.raises(ValueError, match="kuhn-nash' plays KuhnPoker-v1, not TicTacToe-v0"):
        play_game("TicTacToe-v0", {"player_0": "kuhn-nash", "player_1": "random"}, seed=0)


def test_exact_with_a_bad_spec_is_an_error(capsys) -> None:
    assert main(["exact", "--agent", "nobody"]) == 2
    assert "unknown agent 'nobody'" in capsys.readouterr().err
    assert main(["exact", "--agent", "minimax", "--games", "2"]) == 0
    out = capsys.readouterr().out
    assert "Kuhn Poker exploitability: not available (minimax plays only TicTacToe-v0)" in out
