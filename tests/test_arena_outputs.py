"""Results files: every output path is checked before any game, nothing is overwritten unless
asked, and agent text is stored once and capped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spiral_agents.arena import play_game, replay
from spiral_agents.cli import main
from spiral_agents.records import MAX_ERROR_CHARS, MAX_MOVE_CHARS, GameRecord

PLAY = [
    "play",
    "--game",
    "KuhnPoker-v1",
    "--agent",
    "random",
    "--agent",
    "kuhn-nash",
    "-n",
    "4",
    "--quiet",
]


def test_existing_results_are_not_overwritten_unless_asked(tmp_path: Path, capsys) -> None:
    for option in ("--records", "--csv", "--json"):
        kept = tmp_path / f"kept{option.strip('-')}"
        kept.write_text("earlier results\n")
        assert main([*PLAY, option, str(kept)]) == 2
        assert f"{kept} already exists" in capsys.readouterr().err
        assert kept.read_text() == "earlier results\n"
        assert main([*PLAY, option, str(kept), "--overwrite"]) == 0
        assert kept.read_text() != "earlier results\n"
    assert len((tmp_path / "keptrecords").read_text().splitlines()) == 4


def _under_a_file(tmp: Path) -> Path:
    (tmp / "plain-file").write_text("")
    return tmp / "plain-file" / "table.csv"


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda tmp: tmp / "missing" / "table.csv", "does not exist"),
        (lambda tmp: tmp, "is a folder"),
        (_under_a_file, "is a file, not a folder"),
    ],
    ids=["missing-folder", "folder-as-file", "file-as-folder"],
)
def test_a_bad_output_path_fails_before_any_game_is_played(
    tmp_path: Path, capsys, make_bad, message: str
) -> None:
    records = tmp_path / "games.jsonl"
    bad = make_bad(tmp_path)
    assert main([*PLAY, "--records", str(records), "--csv", str(bad)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("spiral-arena: error: ") and message in error and error.count("\n") == 1
    assert not records.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_folder_fails_before_any_game(tmp_path: Path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main([*PLAY, "--json", str(locked / "s.json")]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_two_outputs_cannot_share_a_file(tmp_path: Path, capsys) -> None:
    same = tmp_path / "out"
    assert main([*PLAY, "--csv", str(same), "--json", str(same)]) == 2
    assert "--csv and --json name the same file" in capsys.readouterr().err
    assert not same.exists()


class Chatterbox:
    """Writes a very long message, then the move."""

    def act(self, observation: dict) -> str:
        return "blah " * 10_000 + "[Accept]"


class WordyCrash:
    def act(self, observation: dict) -> str:
        raise RuntimeError("x" * 1_000_000)


def first_offer(observation: dict) -> str:
    return "[Offer: 1 Wood -> 1 Gold]"


def test_long_agent_text_is_stored_once_and_capped_with_its_length() -> None:
    record = play_game(
        "SimpleNegotiation-v1", {"player_0": first_offer, "player_1": Chatterbox()}, seed=0
    )
    short, long = record.moves[0], record.moves[1]
    assert short == {"seat": "player_0", "action": "[Offer: 1 Wood -> 1 Gold]", "invalid": False}
    assert long["action"] == ("blah " * 10_000)[:MAX_MOVE_CHARS]
    assert long["action_chars"] == 50_008 and long["invalid"] is True
    assert "action_text" not in long
    assert len(record.to_json()) < 2 * MAX_MOVE_CHARS
    replay(GameRecord.from_json(record.to_json()))


def test_a_long_agent_error_is_cut_with_its_length() -> None:
    record = play_game(
        "SimpleNegotiation-v1", {"player_0": WordyCrash(), "player_1": first_offer}, seed=0
    )
    assert record.error.startswith("player_0 raised RuntimeError: xxx")
    assert len(record.error) < MAX_ERROR_CHARS + 100
    assert record.error.endswith("characters]")
    json.loads(record.to_json())
