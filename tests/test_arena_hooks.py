"""The ``game_over`` hook: each agent hears how its game ended, in the arena's process and in
worker processes; a hook that fails or hangs changes no record and does not stop the arena."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from spiral_agents.arena import play_game, replay, run_tournament


class FirstLegal:
    def act(self, observation: dict) -> int:
        return int(np.flatnonzero(observation["action_mask"])[0])


class Reporting(FirstLegal):
    """Writes each result it is told to ``path``, one line a game."""

    def __init__(self, path: str) -> None:
        self.path = path

    def game_over(self, observation: dict, outcome: str, how: str) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(f"{outcome}|{how}|{'The game is over.' in observation['text']}\n")


class HangsAtTheEnd(FirstLegal):
    def game_over(self, observation: dict, outcome: str, how: str) -> None:
        time.sleep(3600)


class RaisesAtTheEnd(FirstLegal):
    def game_over(self, observation: dict, outcome: str, how: str) -> None:
        raise RuntimeError("no")


def test_every_agent_is_told_its_result_in_workers_too(tmp_path: Path) -> None:
    told = tmp_path / "told.txt"
    spec = f"tests.test_arena_hooks:Reporting@path={told}"
    records = run_tournament(["TicTacToe-v0"], [spec, "random"], 6, workers=2, progress=False)
    results = sorted(
        (r.outcome[seat], r.ended_by) for r in records for seat, a in r.agents.items() if a == spec
    )
    lines = told.read_text().splitlines()
    assert sorted(tuple(line.split("|")[:2]) for line in lines) == results
    assert all(line.endswith("|True") for line in lines)


def test_a_hook_that_hangs_or_raises_changes_no_record() -> None:
    start = time.monotonic()
    records = run_tournament(
        ["TicTacToe-v0"], ["tests.test_arena_hooks:HangsAtTheEnd", "random"], 3,
        move_timeout=0.5, progress=False,
    )  # fmt: skip
    assert time.monotonic() - start < 30
    assert len(records) == 3 and all(r.error is None and r.ended_by == "game over" for r in records)
    for record in records:
        replay(record)
    record = play_game("TicTacToe-v0", {"player_0": RaisesAtTheEnd(), "player_1": FirstLegal()}, 0)
    assert record.error is None and record.outcome == {"player_0": "win", "player_1": "loss"}
