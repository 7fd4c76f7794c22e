"""Game records: what the arena keeps of each game, and their JSON-lines files.

A record holds the seed, every move as the agent wrote it and the result, so that
:mod:`spiral_agents.replay` can re-play the game and check it. Files are written one line per
game as games finish (:class:`RecordWriter`) and read back with every line checked
(:func:`scan_records`, :func:`read_records`): a bad line is reported with its number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Self

import numpy as np

import spiral_envs

SEATS = spiral_envs.AGENTS
OUTCOMES = ("win", "draw", "loss")
MAX_MOVE_CHARS = 10_000
"""Longest move text the arena plays and stores; a longer one is an invalid move (its first
``MAX_MOVE_CHARS`` characters are stored, with its length)."""
MAX_ERROR_CHARS = 2_000
"""Longest stored reason for a forfeit; a longer one is cut, its length noted."""


@dataclass
class GameRecord:
    """One finished game: enough to replay it exactly and to score it."""

    game: str
    seed: int
    agents: dict[str, str]
    """Seat -> agent spec."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    moves: list[dict[str, Any]] = field(default_factory=list)
    """Per move: ``seat``, ``action`` (an index, the agent's text, or ``None`` for a move the
    agent marked invalid), ``invalid``; ``action_text`` (the index's name, or why the move was
    invalid) where ``action`` is not the text itself; ``action_chars`` (the text's length)
    where the text was over :data:`MAX_MOVE_CHARS` and only its start is stored."""
    rewards: dict[str, float] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    """Seat -> chips won, in a game that counts chips (Kuhn Poker) and was played to its end;
    empty otherwise (see :func:`game_scores`)."""
    outcome: dict[str, str] = field(default_factory=dict)
    """Seat -> "win" / "draw" / "loss"."""
    ended_by: str = ""
    pairing: list[str] = field(default_factory=list)
    """The two agent specs in tournament order (results are reported from the first's side)."""
    error: str | None = None
    """Why an agent forfeited (exception or timeout), if one did."""
    seconds: float = 0.0
    index: int | None = None
    """Game number within its tournament pairing: even games seat ``pairing[0]`` as player_0."""
    tournament_seed: int | None = None
    """The tournament's seed: with ``pairing`` and ``index`` it fixes ``seed``."""

    def finish(self, env: spiral_envs.SpiralAECEnv | None, forfeit_by: str | None = None) -> None:
        """Fill in rewards and outcome from the finished env, or from a forfeit."""
        if forfeit_by is not None:
            loser, winner = forfeit_by, SEATS[1 - SEATS.index(forfeit_by)]
            self.rewards = {loser: -1.0, winner: 1.0}
            self.scores = {}
            self.outcome = {loser: "loss", winner: "win"}
            self.ended_by = "forfeit"
        else:
            assert env is not None, "a game that was not forfeited needs its env"
            self.rewards = {seat: float(env._cumulative_rewards[seat]) for seat in SEATS}
            self.scores = game_scores(env)
            self.outcome = {seat: env.infos[seat]["outcome"] for seat in SEATS}
            self.ended_by = env.infos[SEATS[0]]["ended_by"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=_json_default)

    @classmethod
    def from_json(cls, line: str) -> GameRecord:
        """Parse one records-file line; :class:`RecordError` says what is wrong with a bad one."""
        return parse_record(line)

    def result(self, seat: str) -> float:
        """What ``seat`` won: its chips where the game counts them and was played to its end,
        else its reward (+1 win, 0 draw, -1 loss: a forfeit or an invalid move that ends the
        game costs its player 1)."""
        return self.scores.get(seat, self.rewards.get(seat, 0.0))


def game_scores(env: spiral_envs.SpiralAECEnv) -> dict[str, float]:
    """Seat -> chips won, for a game that reports ``chips`` for both players in its end info
    (Kuhn Poker) and was played to its end; empty for any other game, and for one ended by
    an invalid move or the turn limit (its chips are not a result: the reward counts)."""
    info = env.infos[SEATS[0]]
    chips = info.get("chips")
    if info.get("ended_by") != "game over" or not (
        isinstance(chips, (list, tuple)) and len(chips) == len(SEATS)
    ):
        return {}
    return {seat: float(value) for seat, value in zip(SEATS, chips)}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot record {type(value).__name__}")


def cut(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text``, or its first ``limit`` characters and a note of its full length."""
    return text if len(text) <= limit else f"{text[:limit]} [... cut, {len(text):,} characters]"


def printable(text: str) -> str:
    """``text`` safe to show on a terminal: control and formatting characters escaped."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


# --- reading ----------------------------------------------------------------------------


class RecordError(ValueError):
    """A records-file line that is not a game record (the message says why)."""


_FIELDS = {f.name for f in fields(GameRecord)}
_REQUIRED = ("game", "seed", "agents")
_MOVE_KEYS = {"seat", "action", "action_text", "action_chars", "invalid"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _seat_map(value: Any, ok: Any, every_seat: bool) -> bool:
    return (
        isinstance(value, dict)
        and (set(value) == set(SEATS) if every_seat else set(value) <= set(SEATS))
        and all(ok(v) for v in value.values())
    )


_CHECKS: dict[str, tuple[Any, str]] = {
    "game": (lambda v: isinstance(v, str), "a string"),
    "seed": (_is_int, "an integer"),
    "agents": (
        lambda v: _seat_map(v, lambda s: isinstance(s, str), True),
        "an object naming the agent of player_0 and of player_1",
    ),
    "env_kwargs": (lambda v: isinstance(v, dict), "an object"),
    "moves": (lambda v: isinstance(v, list), "a list"),
    "rewards": (lambda v: _seat_map(v, _is_number, False), "an object of seat -> number"),
    "scores": (
        lambda v: v == {} or _seat_map(v, _is_number, True),
        "an object of player_0 and player_1 -> number (or empty)",
    ),
    "outcome": (
        lambda v: _seat_map(v, lambda o: o in OUTCOMES, False),
        'an object of seat -> "win", "draw" or "loss"',
    ),
    "ended_by": (lambda v: isinstance(v, str), "a string"),
    "pairing": (
        lambda v: isinstance(v, list) and len(v) in (0, 2) and all(isinstance(s, str) for s in v),
        "a list of two agent specs (or empty)",
    ),
    "error": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "seconds": (_is_number, "a number"),
    "index": (lambda v: v is None or (_is_int(v) and v >= 0), "a non-negative integer or null"),
    "tournament_seed": (lambda v: v is None or _is_int(v), "an integer or null"),
}


def _move_problem(move: Any) -> str | None:
    if not isinstance(move, dict):
        return "is not an object"
    unknown = sorted(set(move) - _MOVE_KEYS)
    if unknown:
        return f"has unknown field(s) {', '.join(map(repr, unknown))}"
    if move.get("seat") not in SEATS:
        return "needs a seat, player_0 or player_1"
    if not isinstance(move.get("invalid"), bool):
        return "needs invalid: true or false"
    if "action" not in move:
        return "has no action"
    action, text = move["action"], move.get("action_text")
    if not (action is None or _is_int(action) or isinstance(action, str)):
        return "has an action that is not an index, a text or null"
    if "action_text" in move and not isinstance(text, str):
        return "has an action_text that is not a string"
    if action is None and text is None:
        return "has neither an action nor an action_text"
    if "action_chars" in move:
        chars = move["action_chars"]
        if not (isinstance(action, str) and _is_int(chars) and chars > len(action)):
            return "has action_chars but no text cut shorter than it"
    return None


def parse_record(line: str) -> GameRecord:
    """Parse and check one JSON line; raises :class:`RecordError` naming what is wrong."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        if error.pos >= len(line.rstrip()):
            raise RecordError("the line ends before the record does (cut off?)") from None
        raise RecordError(f"not JSON: {error.msg} at column {error.colno}") from None
    except (ValueError, RecursionError) as error:  # e.g. an integer too long to convert
        raise RecordError(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise RecordError(f"a JSON {type(data).__name__}, not a record object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise RecordError(f"unknown field(s) {', '.join(map(repr, unknown))}")
    missing = [name for name in _REQUIRED if name not in data]
    if missing:
        raise RecordError(f"missing field(s) {', '.join(missing)}")
    for name, value in data.items():
        ok, expected = _CHECKS[name]
        if not ok(value):
            raise RecordError(f"{name} must be {expected}")
    for number, move in enumerate(data.get("moves", []), 1):
        problem = _move_problem(move)
        if problem:
            raise RecordError(f"move {number} {problem}")
    return GameRecord(**data)


def scan_records(path: str | Path) -> Iterator[tuple[int, GameRecord | RecordError]]:
    """Each non-blank line of a records file: its line number and its record or what is wrong."""
    with open(path, "rb") as source:
        for number, raw in enumerate(source, 1):
            if not raw.strip():
                continue
            try:
                yield number, parse_record(raw.decode("utf-8"))
            except UnicodeDecodeError as error:
                yield number, RecordError(f"not UTF-8 text (byte {error.start + 1})")
            except RecordError as error:
                yield number, error


def read_records(path: str | Path) -> list[GameRecord]:
    """All records of a file; raises :class:`RecordError` with the line number of a bad line."""
    records = []
    for number, item in scan_records(path):
        if isinstance(item, RecordError):
            raise RecordError(f"{path}, line {number}: {item}")
        records.append(item)
    return records


# --- writing ----------------------------------------------------------------------------


def check_output_path(path: str | Path, *, overwrite: bool = False) -> Path:
    """Check that a results file can be written at ``path`` before any work is done.

    Raises ``ValueError`` naming the problem: a missing or unwritable folder, a folder given
    as the file, or a file that exists (replaced only with ``overwrite=True``).
    """
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cannot write {path}: {folder} is a file, not a folder")
    if not folder.is_dir():
        raise ValueError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: folder {folder} is not writable")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise ValueError(
                f"{path} already exists; nothing was overwritten (--overwrite replaces it)"
            )
        if not os.access(path, os.W_OK):
            raise ValueError(f"cannot replace {path}: it is not writable")
    return path


def open_output(path: Path, *, overwrite: bool, newline: str | None = None) -> IO[str]:
    """Open a checked output file: replace it only with ``overwrite``, else create it new."""
    return open(path, "w" if overwrite else "x", encoding="utf-8", newline=newline)


class RecordWriter:
    """Appends game records to a JSONL file as games finish, one whole line each, flushed.

    The path is checked when the writer is made (:func:`check_output_path`); the file is
    created with the first record, so a run that plays no game leaves none behind.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = check_output_path(path, overwrite=overwrite)
        self.overwrite = overwrite
        self.written = 0
        self._file: IO[str] | None = None

    def write(self, record: GameRecord) -> None:
        line = record.to_json() + "\n"
        if self._file is None:
            self._file = open_output(self.path, overwrite=self.overwrite)
        self._file.write(line)
        self._file.flush()
        self.written += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_records(
    records: Iterable[GameRecord], path: str | Path, *, overwrite: bool = False
) -> None:
    """Write records as JSON lines (an existing file is replaced only with ``overwrite``)."""
    with RecordWriter(path, overwrite=overwrite) as writer:
        for record in records:
            writer.write(record)
