"""Agent specs and env kwargs that do not resolve give one-line errors naming what exists."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spiral_agents.cli import main
from spiral_agents.registry import make_agent, parse_spec


def first_legal(observation: dict) -> int:
    return int(observation["action_mask"].argmax())


class Patient:
    def __init__(self, patience: int = 1) -> None:
        self.patience = patience

    def act(self, observation: dict) -> int:
        return first_legal(observation)


def _play(*extra: str) -> list[str]:
    return ["play", "--game", "TicTacToe-v0", "-n", "2", "--quiet", *extra]


@pytest.mark.parametrize(
    "args, names",
    [
        (_play("--agent", "no_such_module:Agent", "--agent", "random"),
         ["no module named 'no_such_module'", "built-in agents: ", "minimax", "random"]),
        (_play("--agent", "tests.test_arena_specs:Nope", "--agent", "random"),
         ["'tests.test_arena_specs' has no attribute 'Nope'", "it has: ", "Patient",
          "first_legal"]),
        (_play("--agent", "random@seed=abc", "--agent", "minimax"),
         ["agent 'random@seed=abc': seed must be an integer, got 'abc'"]),
        (_play("--agent", "random@depth=3", "--agent", "minimax"),
         ["agent 'random@depth=3' does not take depth; it takes: seed"]),
        (_play("--agent", "tests.test_arena_specs:Patient@patience=2,speed=1", "--agent", "random"),
         ["does not take speed; it takes: patience"]),
        (_play("--agent", "random@seed", "--agent", "minimax"), ["expected key=value"]),
        (_play("--agent", "random@piles=(1,2", "--agent", "minimax"), ["unclosed bracket"]),
        (_play("--agent", "@seed=1", "--agent", "minimax"), ["has no agent name"]),
        (_play("--agent", "random", "--agent", "minimax", "--env-kwargs", '{"rows": 3,"rounds": 1}'),
         ["TicTacToe-v0 does not take rounds, rows;",
          "it takes: render_mode, invalid_move, max_turns"]),
        (_play("--agent", "random", "--agent", "minimax", "--env-kwargs", '{"max_turns": 0}'),
         ["TicTacToe-v0 rejects env kwargs {'max_turns': 0}: max_turns must be "]),
        (_play("--agent", "random", "--agent", "minimax", "--env-kwargs", "{rows: 3}"),
         ["--env-kwargs is not JSON"]),
        (_play("--agent", "random", "--agent", "minimax", "--env-kwargs", "[3]"),
         ["--env-kwargs must be a JSON object"]),
        (["play", "--game", "Chess-v0", "--agent", "random", "--agent", "minimax"],
         ["unknown game 'Chess-v0'; registered games: ", "TicTacToe-v0"]),
    ],
    ids=["missing-module", "missing-attribute", "bad-seed", "unknown-option", "unknown-3rd-option",
         "no-value", "unclosed", "no-name", "unknown-env-kwargs", "bad-env-value", "env-not-json",
         "env-not-object", "unknown-game"],
)  # fmt: skip
def test_bad_input_is_one_clear_line(args: list[str], names: list[str], capsys) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("spiral-arena: error: ") and captured.err.count("\n") == 1
    for name in names:
        assert name in captured.err


def test_the_installed_command_prints_no_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spiral_agents.cli", "play", "--game", "TicTacToe-v0",
         "--agent", "no_such_module:Agent", "--agent", "random", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        "spiral-arena: error: agent 'no_such_module:Agent': no module named"
    )


def test_an_import_error_inside_the_module_is_not_called_a_missing_module(
    tmp_path, monkeypatch
) -> None:
    (tmp_path / "broken_agents.py").write_text("import no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ValueError, match="importing 'broken_agents' failed: No module named 'no_such"
    ):
        make_agent("broken_agents:Agent", "TicTacToe-v0")


KEYS = st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True)
VALUES = st.recursive(
    st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.booleans() | st.none()
    | st.text(max_size=10),
    lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=3),
    max_leaves=5,
)  # fmt: skip


@given(
    name=st.from_regex(r"[a-z][a-z0-9_.:-]{0,15}", fullmatch=True),
    kwargs=st.dictionaries(KEYS, VALUES, max_size=4),
)
def test_specs_round_trip(name: str, kwargs: dict) -> None:
    spec = name + ("@" + ",".join(f"{k}={v!r}" for k, v in kwargs.items()) if kwargs else "")
    assert parse_spec(spec) == (name, kwargs)


@given(st.text(max_size=60))
def test_any_spec_parses_or_says_why(spec: str) -> None:
    try:
        name, kwargs = parse_spec(spec)
    except ValueError as error:  # AgentSpecError
        assert spec in str(error) or repr(spec) in str(error)
    else:
        assert name and "@" not in name and all(key.isidentifier() for key in kwargs)
