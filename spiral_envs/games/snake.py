"""Snake rules: two snakes on one board choose their moves at the same time.

Cells are ``(row, column)`` with row 0 at the top; ``[up]`` moves toward row 0 and ``[left]``
toward column 0. Each snake starts with length 1, player 0 at ``((height-1)//4, (width-1)//4)``
and player 1 at the point-symmetric cell (on 5x5: (1, 1) and (3, 3)), so the start is fair and
fixed; only the apples are random, placed uniformly on free cells from the game's generator.

Every round both players choose a direction (player 0 first in AEC order); the first choice is
kept hidden until the second is made, then both snakes move at once:

* a snake whose new head lands on an apple eats it, scores a point and grows by one (its tail
  stays); apples are topped up to ``apples`` on free cells while any are left;
* a snake dies if its new head leaves the board, or lands on a body cell of either snake as it
  stands after the move: a tail that moves away this round is free to enter, except that a
  length-2 snake turning back into its own tail (its neck) dies, like any reversal;
* both snakes die if their new heads meet in one cell or they swap cells head to head.

A round in which a snake dies ends the game there: the board is left as it was before the
fatal moves and nobody eats. The last snake alive wins. If both die in the same round, the
higher score wins and equal scores are a draw; after ``max_rounds`` rounds the same applies.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from spiral_envs.core import Game, GameState, Invalid, Parsed, bracketed, win_returns, winner_id
from spiral_envs.render import (
    BLUE,
    LIGHT_BLUE,
    LIGHT_GREY,
    LIGHT_ORANGE,
    ORANGE,
    RED,
    WHITE,
    blank,
    fill_disc,
    fill_rect,
)

UP, DOWN, LEFT, RIGHT = range(4)
ACTION_NAMES = ("[up]", "[down]", "[left]", "[right]")
DIRECTION_WORDS = ("up", "down", "left", "right")
_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))
_MOVE_WORDS = {
    "up": UP, "w": UP, "down": DOWN, "s": DOWN, "left": LEFT, "a": LEFT, "right": RIGHT, "d": RIGHT
}
_NO_MOVE = (
    "no move found; write one of [up], [down], [left], [right] (or [w], [s], [a], [d])"
)
_MOVES_TEXT = "Your legal moves: " + ", ".join(ACTION_NAMES)
_TURNS_PER_ROUND = 4
"""Adapter cap (submitted moves) per round: two choices, plus room for retried invalid ones."""
_MAX_SIDE = 32
# Board symbols (own head, own body, opponent head, opponent body) per viewer, and neutral.
_VIEWER_SYMBOLS = (("@", "o", "X", "x"), ("X", "x", "@", "o"))
_SPECTATOR_SYMBOLS = ("A", "a", "B", "b")
APPLE, EMPTY = "*", "."
CELL_PIXELS = 48
_SNAKE_COLORS = ((BLUE, LIGHT_BLUE), (ORANGE, LIGHT_ORANGE))  # (head, body) per player

Cell = tuple[int, int]


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (
        high is not None and value > high
    ):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")
    return value


class Snake(Game):
    """Two-snake Snake with simultaneous moves (SPIRAL's Snake-v0 by default).

    Args:
        size: side of the square board (default 5).
        width, height: board columns and rows, each 2 to 32; default to ``size``.
        apples: apples kept on the board while free cells allow (default 2).
        max_rounds: rounds (both snakes moved) after which the higher score wins (default 40).

    Observation (int8, 0 or 1, shape ``(height, width, 5)``), planes seen by the observer:
    ``0`` own head, ``1`` own body (without the head), ``2`` opponent's head, ``3`` opponent's
    body, ``4`` apples. Scores are the snakes' lengths minus 1. The opponent's pending choice is
    never shown.
    """

    id = "Snake-v0"
    actions = ACTION_NAMES
    observation_shape = (5, 5, 5)
    observation_dtype = np.int8
    max_turns = _TURNS_PER_ROUND * 40
    simultaneous = True
    legend = (
        "A / a = Player 0's (player_0's) head / body, B / b = Player 1's, * = apple, . = empty; "
        "up is toward the top row"
    )

    def __init__(
        self,
        size: int = 5,
        *,
        width: int | None = None,
        height: int | None = None,
        apples: int = 2,
        max_rounds: int = 40,
    ) -> None:
        _check_int("size", size, 2, _MAX_SIDE)
        self.width = _check_int("width", size if width is None else width, 2, _MAX_SIDE)
        self.height = _check_int("height", size if height is None else height, 2, _MAX_SIDE)
        self.apples = _check_int("apples", apples, 0, self.width * self.height - 2)
        self.max_rounds = _check_int("max_rounds", max_rounds, 1)
        self.max_turns = _TURNS_PER_ROUND * max_rounds
        self.observation_shape = (self.height, self.width, 5)
        self.cells: tuple[Cell, ...] = tuple(
            (r, c) for r in range(self.height) for c in range(self.width)
        )
        row, column = (self.height - 1) // 4, (self.width - 1) // 4
        self.starts: tuple[Cell, Cell] = (
            (row, column),
            (self.height - 1 - row, self.width - 1 - column),
        )

    def rules(self, player: int) -> str:
        other = 1 - player
        return (
            f"You are Player {player} in Snake, a two-player zero-sum game against Player "
            f"{other}. Each of you steers a snake on a board of {self.height} rows by "
            f"{self.width} columns; both snakes start with length 1 and "
            f"{self.apples} apple(s) lie on free cells, replaced as they are eaten.\n"
            "Every round both players choose a direction at the same time: neither sees the "
            "other's choice until both have chosen, then both snakes move one cell at once. "
            "Write [up], [down], [left] or [right] (or [w], [s], [a], [d]); up is toward the "
            "top row of the board as drawn.\n"
            "Moving onto an apple eats it: you score a point and your snake grows by one. A "
            "snake dies if it leaves the board or runs into a body cell of either snake (a tail "
            "that moves away this round is free, but turning back into your own neck is "
            "fatal). If both heads enter the same cell, or the two heads swap cells, both "
            "snakes die.\n"
            "The last snake alive wins. If both die in the same round, the higher score wins "
            f"and equal scores are a draw. After {self.max_rounds} rounds the higher score "
            "wins; equal scores are a draw."
        )

    def new_state(self, rng: np.random.Generator) -> SnakeState:
        return SnakeState(self, rng)


class SnakeState(GameState):
    """A Snake game: ``snakes[p]`` lists player p's cells head first; ``apples`` is a set."""

    game: Snake

    def __init__(self, game: Snake, rng: np.random.Generator) -> None:
        super().__init__(game, rng)
        self.snakes: list[deque[Cell]] = [deque([game.starts[0]]), deque([game.starts[1]])]
        self.apples: set[Cell] = set()
        self.scores = [0, 0]
        self.rounds = 0
        self.pending: list[int | None] = [None, None]
        """This round's choices not yet applied (each is hidden from the other player)."""
        self.deaths: list[str | None] = [None, None]
        self.winner: int | None = None
        self.ended_by: str | None = None
        self._add_apples()

    # --- moves -------------------------------------------------------------------------
    def to_move(self, player: int) -> bool:
        return not self.terminal and self.pending[player] is None

    def legal_actions(self) -> list[int]:
        return [UP, DOWN, LEFT, RIGHT]

    def action_mask(self) -> np.ndarray:
        return np.ones(4, dtype=np.int8)

    def parse(self, text: str) -> Parsed | Invalid:
        for match in bracketed(text):
            move = _MOVE_WORDS.get(" ".join(match[1].split()).lower())
            if move is not None:
                return Parsed(move)
        return Invalid(_NO_MOVE)

    def illegal_reason(self, move: Any) -> str | None:
        return None

    def random_move(self, rng: np.random.Generator) -> int:
        return int(rng.integers(4))

    def moves_text(self) -> str:
        return _MOVES_TEXT

    def apply(self, move: int) -> None:
        player = self.current_player
        self.pending[player] = move
        if player == 0:
            self.current_player = 1
        else:
            self._resolve_round()

    def _resolve_round(self) -> None:
        moves = self.pending
        snakes = self.snakes
        heads = [snakes[0][0], snakes[1][0]]
        targets = [
            (head[0] + _STEPS[move][0], head[1] + _STEPS[move][1])
            for head, move in zip(heads, moves)
        ]
        grows = [targets[0] in self.apples, targets[1] in self.apples]
        self.rounds += 1
        self.log.game(
            f"Round {self.rounds}: Player 0 moved {DIRECTION_WORDS[moves[0]]}, "
            f"Player 1 moved {DIRECTION_WORDS[moves[1]]}."
        )
        for player in (0, 1):
            self.deaths[player] = self._death_cause(player, heads, targets, grows)
        if self.deaths[0] or self.deaths[1]:
            for player in (0, 1):
                if self.deaths[player]:
                    self.log.game(f"Player {player}'s snake {self.deaths[player]} and died.")
            if self.deaths[0] and self.deaths[1]:
                self._finish_by_score("both snakes died in the same round")
            else:
                self.winner = 1 if self.deaths[0] else 0
                self.ended_by = "last snake alive"
                self.terminal = True
                self.log.game(f"Player {self.winner} has the last snake alive and wins.")
            return
        for player, snake in enumerate(snakes):
            snake.appendleft(targets[player])
            if grows[player]:
                self.apples.remove(targets[player])
                self.scores[player] += 1
                self.log.game(f"Player {player} ate an apple (score {self.scores[player]}).")
            else:
                snake.pop()
        self._add_apples()
        self.pending = [None, None]
        if self.rounds >= self.game.max_rounds:
            self._finish_by_score(f"the round limit ({self.game.max_rounds}) is reached")
        else:
            self.current_player = 0

    def _death_cause(
        self, player: int, heads: list[Cell], targets: list[Cell], grows: list[bool]
    ) -> str | None:
        row, column = target = targets[player]
        other = 1 - player
        if not (0 <= row < self.game.height and 0 <= column < self.game.width):
            return "hit the wall"
        if target == targets[other]:
            return f"met Player {other}'s head in the same cell"
        if target == heads[other] and targets[other] == heads[player]:
            return f"swapped cells head to head with Player {other}"
        if self._blocks(player, player, target, grows):
            return "ran into its own body"
        if self._blocks(other, player, target, grows):
            return f"ran into Player {other}'s body"
        return None

    def _blocks(self, owner: int, mover: int, cell: Cell, grows: list[bool]) -> bool:
        """Whether ``owner``'s snake still holds ``cell`` once both snakes have moved."""
        snake = self.snakes[owner]
        if cell not in snake:
            return False
        if cell != snake[-1] or grows[owner]:
            return True
        # The tail moves away, unless this is a length-2 snake turning back into its neck.
        return owner == mover and len(snake) == 2

    def _add_apples(self) -> None:
        missing = self.game.apples - len(self.apples)
        if missing <= 0:
            return
        taken = self.apples.union(self.snakes[0], self.snakes[1])
        free = [cell for cell in self.game.cells if cell not in taken]
        for _ in range(min(missing, len(free))):
            self.apples.add(free.pop(int(self.rng.integers(len(free)))))

    def _finish_by_score(self, why: str) -> None:
        self.terminal = True
        self.ended_by = why
        s0, s1 = self.scores
        if s0 == s1:
            self.log.game(f"The game ends: {why}, with equal scores ({s0} each): a draw.")
            return
        self.winner = 0 if s0 > s1 else 1
        self.log.game(
            f"The game ends: {why}; Player {self.winner} has the higher score "
            f"({max(s0, s1)} to {min(s0, s1)}) and wins."
        )

    # --- outcome -----------------------------------------------------------------------
    def returns(self) -> tuple[float, float]:
        return win_returns(self.winner)

    def details(self) -> dict[str, Any]:
        return {
            "winner": winner_id(self.winner),
            "scores": list(self.scores),
            "rounds": self.rounds,
            "deaths": list(self.deaths),
            "game_end": self.ended_by or "",
            "board": self._board(_SPECTATOR_SYMBOLS),
        }

    # --- what players see ----------------------------------------------------------------
    def observation(self, player: int) -> np.ndarray:
        planes = np.zeros(self.game.observation_shape, dtype=np.int8)
        for plane, snake in ((0, self.snakes[player]), (2, self.snakes[1 - player])):
            cells = iter(snake)
            row, column = next(cells)
            planes[row, column, plane] = 1
            for row, column in cells:
                planes[row, column, plane + 1] = 1
        for row, column in self.apples:
            planes[row, column, 4] = 1
        return planes

    def _board(self, symbols: tuple[str, str, str, str]) -> str:
        rows = [[EMPTY] * self.game.width for _ in range(self.game.height)]
        for row, column in self.apples:
            rows[row][column] = APPLE
        for player, snake in enumerate(self.snakes):
            cells = iter(snake)
            row, column = next(cells)
            rows[row][column] = symbols[2 * player]
            body = symbols[2 * player + 1]
            for row, column in cells:
                rows[row][column] = body
        return "\n".join(" ".join(row) for row in rows)

    def render_rgb(self) -> np.ndarray:
        """The board: Player 0's snake blue, Player 1's orange (heads darker), apples red."""
        game, cell = self.game, CELL_PIXELS
        frame = blank(game.height * cell, game.width * cell, WHITE)
        for row, column in game.cells:
            fill_rect(frame, row * cell + 1, column * cell + 1, cell - 2, cell - 2, LIGHT_GREY)
        for row, column in self.apples:
            fill_disc(frame, (row + 0.5) * cell, (column + 0.5) * cell, 0.3 * cell, RED)
        inset = cell // 8
        for player, snake in enumerate(self.snakes):
            head, body = _SNAKE_COLORS[player]
            for i, (row, column) in enumerate(snake):
                top, left = row * cell + inset, column * cell + inset
                fill_rect(frame, top, left, cell - 2 * inset, cell - 2 * inset, body if i else head)
        return frame

    def state_text(self, player: int) -> str:
        other = 1 - player
        text = (
            f"Board (you are Player {player}: your snake is @ head, o body; Player {other}'s "
            f"is X head, x body; * apple, . empty; up is toward the top row):\n"
            f"{self._board(_VIEWER_SYMBOLS[player])}\n"
            f"Rounds played: {self.rounds} of {self.game.max_rounds}. Scores: you "
            f"{self.scores[player]}, Player {other} {self.scores[other]}."
        )
        choice = self.pending[player]
        if choice is not None and not self.terminal:
            text += (
                f"\nYour choice this round: {ACTION_NAMES[choice]} (Player {other} sees it once "
                "both have chosen)."
            )
        return text

    def render(self) -> str:
        pending = ", ".join(
            f"Player {p} chose {ACTION_NAMES[m]}" for p, m in enumerate(self.pending)
            if m is not None and not self.terminal
        )
        return (
            f"{self._board(_SPECTATOR_SYMBOLS)}\n"
            f"Player 0: A head, a body, score {self.scores[0]}. Player 1: B head, b body, "
            f"score {self.scores[1]}. Rounds played: {self.rounds} of {self.game.max_rounds}."
            + (f" Pending: {pending}." if pending else "")
        )
