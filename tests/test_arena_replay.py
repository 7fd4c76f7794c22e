"""``spiral-arena replay`` checks everything the results table is built from, reports every
mismatching record with its index and line, and reads any file without crashing."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiral_agents.arena import (
    GameRecord,
    play_game,
    read_records,
    replay,
    run_tournament,
    write_records,
)
from spiral_agents.cli import main
from tests.test_agents import first_legal


@pytest.fixture(scope="module")
def games() -> list[dict]:
    """Records of finished games as JSON objects: finite, chance and free-text games."""
    records = [
        *run_tournament(
            ["TicTacToe-v0"], ["random", "minimax"], 4, move_timeout=None, progress=False
        ),
        *run_tournament(
            ["KuhnPoker-v1"], ["random", "kuhn-nash"], 2, move_timeout=None, progress=False
        ),
        *run_tournament(
            ["SimpleNegotiation-v1"],
            ["random", "random@seed=5"],
            2,
            move_timeout=None,
            progress=False,
        ),
    ]
    return [json.loads(record.to_json()) for record in records]


@pytest.fixture(scope="module")
def forfeits() -> list[dict]:
    records = run_tournament(
        ["TicTacToe-v0"],
        ["tests.test_arena:CrashOnSecondMove", "random"],
        4,
        move_timeout=None,
        progress=False,
    )
    return [json.loads(record.to_json()) for record in records]


def _decided(games: list[dict]) -> dict:
    return copy.deepcopy(
        next(g for g in games if "win" in g["outcome"].values() and len(g["moves"]) > 3)
    )


def _flip_outcome(game: dict) -> None:
    game["outcome"] = {
        seat: {"win": "loss", "loss": "win"}[o] for seat, o in game["outcome"].items()
    }


def _swap_agents(game: dict) -> None:
    game["agents"] = {
        "player_0": game["agents"]["player_1"],
        "player_1": game["agents"]["player_0"],
    }


def _rename_action(game: dict) -> None:
    game["moves"][0]["action_text"] = "[8]" if game["moves"][0]["action_text"] != "[8]" else "[0]"


def _extra_move(game: dict) -> None:
    game["moves"].append(dict(game["moves"][-1]))


TAMPERING: dict[str, Callable[[dict], None]] = {
    "flipped outcome": _flip_outcome,
    "swapped agents": _swap_agents,
    "deleted middle move": lambda g: g["moves"].pop(1),
    "deleted last move": lambda g: g["moves"].pop(),
    "extra move after the end": _extra_move,
    "flipped invalid flag": lambda g: g["moves"][0].update(invalid=True),
    "renamed action": _rename_action,
    "changed ended_by": lambda g: g.update(ended_by="turn limit"),
    "changed rewards": lambda g: g.update(rewards={"player_0": 0.0, "player_1": 0.0}),
    "error without a forfeit": lambda g: g.update(error="player_0 raised RuntimeError: x"),
    "changed seed": lambda g: g.update(seed=g["seed"] + 1),
    "changed game index": lambda g: g.update(index=g["index"] + 1),
}


def test_every_untouched_record_verifies(games: list[dict], forfeits: list[dict]) -> None:
    for game in games + forfeits:
        replay(GameRecord(**game))


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=TAMPERING.keys())
def test_tampering_with_what_the_table_uses_is_caught(games: list[dict], tamper: Callable) -> None:
    game = _decided([g for g in games if g["game"] == "TicTacToe-v0"])
    tamper(game)
    with pytest.raises(AssertionError):
        replay(GameRecord(**game))


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_cli_reports_every_mismatching_record_with_index_and_line(
    tmp_path: Path, games: list[dict], capsys
) -> None:
    lines = [json.dumps(g) for g in games]
    for index in (1, 4):
        game = json.loads(lines[index])
        _flip_outcome(game) if "win" in game["outcome"].values() else _swap_agents(game)
        game["moves"].pop()
        lines[index] = json.dumps(game)
    path = _write_lines(tmp_path / "games.jsonl", ["", *lines])  # a blank first line
    assert main(["replay", str(path)]) == 1
    out = capsys.readouterr().out
    assert "record 1 (line 3): the game is not over after the last recorded move" in out
    assert "record 4 (line 6):" in out
    assert not any(f"record {i} " in out for i in (0, 2, 3, 5))
    assert f"2 of {len(games)} game(s) do not replay as recorded." in out


def test_forfeited_games_are_verified_up_to_the_forfeit(
    tmp_path: Path, forfeits: list[dict], capsys
) -> None:
    path = _write_lines(tmp_path / "f.jsonl", [json.dumps(g) for g in forfeits])
    assert main(["replay", str(path)]) == 0
    assert f"{len(forfeits)} game(s) replayed exactly." in capsys.readouterr().out
    moved = copy.deepcopy(forfeits[0])
    moved["moves"][0]["invalid"] = True
    other_loser = copy.deepcopy(forfeits[1])
    _flip_outcome(other_loser)
    other_loser["rewards"] = {s: -r for s, r in other_loser["rewards"].items()}
    over = copy.deepcopy(forfeits[2])
    over["moves"] = []
    path = _write_lines(
        tmp_path / "g.jsonl", [json.dumps(g) for g in (moved, other_loser, over, forfeits[3])]
    )
    assert main(["replay", str(path)]) == 1
    out = capsys.readouterr().out
    assert "record 0 (line 1): move 1: recorded as invalid, the replay finds it valid" in out
    assert "record 1 (line 2): replay ended with rewards" in out
    assert (
        "record 2 " not in out
    )  # a forfeit before any move: either agent may have failed to build
    assert "2 of 4 game(s) do not replay as recorded." in out


def test_malformed_and_cut_off_lines_are_reported_with_line_numbers(
    tmp_path: Path, games: list[dict], capsys
) -> None:
    good = json.dumps(games[0])
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        "\n".join(
            [
                good,
                "not json at all",
                '{"game": "TicTacToe-v0"}',
                "[1, 2]",
                good,
                good[: len(good) // 2],
            ]
        ).encode()
        + b"\n\xff\xfe\n"
    )
    assert main(["replay", str(path)]) == 1
    out = capsys.readouterr().out
    assert "record 1 (line 2): not JSON: Expecting value at column 1" in out
    assert "record 2 (line 3): missing field(s) seed, agents" in out
    assert "record 3 (line 4): a JSON list, not a record object" in out
    assert "record 5 (line 6): the line ends before the record does (cut off?)" in out
    assert "record 6 (line 7): not UTF-8 text (byte 1)" in out
    assert "5 of 7 game(s) do not replay as recorded." in out
    with pytest.raises(ValueError, match="line 2: not JSON"):
        read_records(path)


@pytest.mark.parametrize("content", ["", "\n  \n"], ids=["empty", "blank"])
def test_an_empty_file_is_a_clear_error(tmp_path: Path, content: str, capsys) -> None:
    path = tmp_path / "none.jsonl"
    path.write_text(content)
    assert main(["replay", str(path)]) == 2
    assert capsys.readouterr().err == f"spiral-arena: error: {path} holds no game records\n"


@pytest.mark.parametrize("index", ["2", "-1", "99"])
def test_a_bad_index_is_a_clear_error(
    tmp_path: Path, games: list[dict], index: str, capsys
) -> None:
    path = _write_lines(tmp_path / "two.jsonl", [json.dumps(g) for g in games[:2]])
    assert main(["replay", str(path), "--index", index]) == 2
    err = capsys.readouterr().err
    assert f"--index {index} is out of range" in err and "numbered 0 to 1" in err


def test_names_with_terminal_escape_codes_are_shown_escaped(tmp_path: Path, capsys) -> None:
    evil = "evil\x1b[2J\x1b]0;owned\x07\u202e"
    record = play_game(
        "TicTacToe-v0",
        {"player_0": lambda o: int(o["action_mask"].argmax()), "player_1": first_legal},
        seed=0, specs={"player_0": evil, "player_1": "plain"},
    )  # fmt: skip
    record.pairing = [evil, "plain"]
    record.index = 1  # seats the pairing's first agent as player_1: a mismatch naming it
    path = tmp_path / "evil.jsonl"
    write_records([record], path)
    assert main(["replay", str(path), "--index", "0"]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "(evil\\x1b[2J\\x1b]0;owned\\x07\\u202e) sees" in out
    assert "the record seats 'evil\\x1b[2J" in out


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(st.text(max_size=300))
def test_any_line_parses_or_says_why(line: str) -> None:
    try:
        GameRecord.from_json(line)
    except ValueError as error:  # the records module's RecordError
        assert str(error)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_change_to_a_record_is_rejected_or_verified_without_crashing(
    games: list[dict], data: st.DataObject
) -> None:
    game = copy.deepcopy(data.draw(st.sampled_from(games)))
    target = game
    if data.draw(st.booleans()) and game["moves"]:
        target = data.draw(st.sampled_from(game["moves"]))
    key = data.draw(st.sampled_from(sorted(target)) | st.text(max_size=6))
    target[key] = data.draw(JSON)
    try:
        record = GameRecord.from_json(json.dumps(game))
    except ValueError:  # the records module's RecordError, naming what is wrong
        return
    try:
        replay(record)
    except AssertionError as mismatch:  # ReplayMismatch, listing what differs
        assert mismatch.problems


SEAT_NAMES = st.text(min_size=1, max_size=10)


@given(
    agents=st.fixed_dictionaries({"player_0": SEAT_NAMES, "player_1": SEAT_NAMES}),
    seed=st.integers(0, 2**64),
    moves=st.lists(
        st.fixed_dictionaries(
            {"seat": st.sampled_from(["player_0", "player_1"]), "invalid": st.booleans()},
            optional={"action": st.integers(0, 8) | st.text(max_size=20)},
        ).map(
            lambda m: {"action": None, "action_text": "no answer", **m} if "action" not in m else m
        ),
        max_size=6,
    ),
    rewards=st.dictionaries(st.sampled_from(["player_0", "player_1"]), st.floats(-2, 2)),
    error=st.none() | st.text(max_size=30),
)
def test_records_round_trip_through_json(
    agents: dict, seed: int, moves: list, rewards: dict, error: str | None
) -> None:
    record = GameRecord("TicTacToe-v0", seed, agents, moves=moves, rewards=rewards, error=error)
    assert GameRecord.from_json(record.to_json()) == record
