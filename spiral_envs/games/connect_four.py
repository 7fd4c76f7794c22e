"""Connect Four rules: drop pieces into columns; four in a line wins, a full board is a draw.

The board has ``rows`` x ``columns`` cells (6 x 7 by default); columns are numbered from 0 at
the left. Player 0 plays X and moves first, player 1 plays O. A move drops the mover's piece
into a column that is not full, where it falls to the lowest empty cell. Four of one player's
pieces in a horizontal, vertical or diagonal line win at once; a full board without such a line
is a draw. A move is written ``[col 3]`` or just ``[3]`` (``[column 3]`` too), in any case; the
first bracketed column in the text is the move.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from spiral_envs.core import Game, GameState, Invalid, Parsed, bracketed, win_returns, winner_id
from spiral_envs.render import BLACK, BLUE, RED, WHITE, YELLOW, blank, fill_disc

MARKS = ("X", "O")
EMPTY = "."
WIN_LENGTH = 4
MAX_SIZE = 20
"""Largest number of rows or columns a variant may have."""
_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))
# Matched against the inside of one [...] segment at a time; each quantifier is followed by
# a character class it cannot match, so a failed match costs time linear in the segment.
_COLUMN = re.compile(r"\s*(?:col(?:umn)?\s*)?(\d+)\s*", re.ASCII | re.IGNORECASE)
CELL_PIXELS = 48
_DISC_COLORS = (RED, YELLOW)
_TURNS_PER_CELL = 3
"""Adapter turn cap per board cell: a full game takes one move per cell at most, which leaves
room for two invalid attempts before every move."""


def column_names(columns: int) -> tuple[str, ...]:
    """The action set: ``[col 0]`` to ``[col columns-1]``; action ``c`` drops into column ``c``."""
    return tuple(f"[col {c}]" for c in range(columns))


class ConnectFour(Game):
    """Connect Four on a ``rows`` x ``columns`` board.

    Args:
        rows: board height, 1 to 20 (default 6).
        columns: board width, 1 to 20 (default 7). At least one of ``rows`` and ``columns``
            must be 4 or more, so that four in a line is possible; on a board under 4 cells in
            one direction only lines along the other directions can win.

    Actions: ``[col c]`` for c in 0..columns-1 (index ``c``).

    Observation (int8, shape ``(rows, columns, 2)``, values 0 or 1), as in PettingZoo's
    ``connect_four``: ``[r, c, 0]`` is 1 where the observer has a piece, ``[r, c, 1]`` where
    the opponent has one; row 0 is the top row, column 0 the leftmost.
    """

    id = "ConnectFour-v0"
    actions = column_names(7)
    observation_shape = (6, 7, 2)
    observation_dtype = np.int8
    max_turns = _TURNS_PER_CELL * 6 * 7
    legend = "X = Player 0 (player_0), O = Player 1 (player_1), . = empty; column numbers on top"

    def __init__(self, rows: int = 6, columns: int = 7) -> None:
        for name, value in (("rows", rows), ("columns", columns)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SIZE:
                raise ValueError(f"{name} must be an int from 1 to {MAX_SIZE}, got {value!r}")
        if rows < WIN_LENGTH and columns < WIN_LENGTH:
            raise ValueError(
                f"a {rows}x{columns} board has no line of {WIN_LENGTH}; rows or columns must be "
                f"at least {WIN_LENGTH}"
            )
        self.rows = rows
        self.columns = columns
        self.actions = column_names(columns)
        self.observation_shape = (rows, columns, 2)
        self.max_turns = _TURNS_PER_CELL * rows * columns
        width = len(str(columns - 1))
        self.cell_width = width
        self.column_header = " ".join(str(c).rjust(width) for c in range(columns))
        self.empty_cell = EMPTY.rjust(width)
        self.marks = tuple(mark.rjust(width) for mark in MARKS)
        self.headers = tuple(
            f"Board (you are {MARKS[p]}, your opponent is {MARKS[1 - p]}; column numbers on top, "
            "pieces fall to the bottom):\n"
            for p in range(2)
        )

    def rules(self, player: int) -> str:
        return (
            f"You are Player {player} in Connect Four, a two-player zero-sum game, and you play "
            f"{MARKS[player]}; your opponent, Player {1 - player}, plays {MARKS[1 - player]}. "
            "Player 0 moves first.\n"
            f"The upright board has {self.rows} rows and {self.columns} columns, numbered 0 to "
            f"{self.columns - 1} from the left. On your turn, drop one piece into a column that "
            "is not full by writing its number in square brackets, e.g. [col 3] or [3]; the "
            "piece falls to the lowest empty cell of that column. Four of your pieces in a row, "
            "horizontally, vertically or diagonally, win the game; if the board fills up with "
            "no such line, the game is a draw.\n"
        )

    def new_state(self, rng: np.random.Generator) -> ConnectFourState:
        return ConnectFourState(self, rng)


class ConnectFourState(GameState):
    game: ConnectFour

    def __init__(self, game: ConnectFour, rng: np.random.Generator) -> None:
        super().__init__(game, rng)
        rows, columns = game.rows, game.columns
        self.board: list[int] = [-1] * (rows * columns)  # row-major, row 0 on top; -1 empty
        self.heights = [0] * columns  # pieces in each column
        self.winner: int | None = None
        self.winning_line: list[tuple[int, int]] = []
        self.moves = 0
        # Views kept up to date move by move, so observing costs a copy, not a rebuild.
        self._open = list(range(columns))
        self._mask = np.ones(columns, dtype=np.int8)
        self._planes = np.zeros((2, rows, columns, 2), dtype=np.int8)  # per viewer: own, other
        self._cells = [game.empty_cell] * (rows * columns)
        self._board_text: str | None = None

    def legal_actions(self) -> list[int]:
        return self._open.copy()

    def action_mask(self) -> np.ndarray:
        return self._mask.copy()

    def random_move(self, rng: np.random.Generator) -> int:
        return self._open[int(rng.integers(len(self._open)))]

    def parse(self, text: str) -> Parsed | Invalid:
        for segment in bracketed(text):
            match = _COLUMN.fullmatch(segment[1])
            if match is None:
                continue
            digits = match[1].lstrip("0") or "0"
            if len(digits) > 2 or int(digits) >= self.game.columns:
                return Invalid(
                    f"column {digits[:12]} does not exist; columns are 0 to {self.game.columns - 1}"
                )
            return Parsed(int(digits))
        return Invalid(
            "no move found; write a column number in square brackets, e.g. [col 3] or [3]"
        )

    def illegal_reason(self, move: Any) -> str | None:
        if self.heights[move] < self.game.rows:
            return None
        legal = ", ".join(str(c) for c in self._open)
        return f"column {move} is full; open columns: {legal}"

    def apply(self, move: int) -> None:
        game = self.game
        rows, columns = game.rows, game.columns
        player = self.current_player
        row = rows - 1 - self.heights[move]
        self.heights[move] += 1
        cell = row * columns + move
        self.board[cell] = player
        self._planes[player, row, move, 0] = self._planes[1 - player, row, move, 1] = 1
        self._cells[cell] = game.marks[player]
        self._board_text = None
        if self.heights[move] == rows:
            self._open.remove(move)
            self._mask[move] = 0
        self.moves += 1
        self.log.game(f"Player {player} ({MARKS[player]}) dropped a piece into column {move}.")
        line = self._line_through(row, move, player)
        if line:
            self.winner = player
            self.winning_line = line
            self.terminal = True
            self.log.game(f"Player {player} has four in a row and wins.")
        elif not self._open:
            self.terminal = True
            self.log.game("The board is full with no four in a row: a draw.")
        else:
            self.current_player = 1 - player

    def _line_through(self, row: int, column: int, player: int) -> list[tuple[int, int]]:
        """The run of ``player``'s pieces through (row, column) if it is a winning one, else []."""
        board, rows, columns = self.board, self.game.rows, self.game.columns
        for dr, dc in _DIRECTIONS:
            r, c = row + dr, column + dc
            while 0 <= r < rows and 0 <= c < columns and board[r * columns + c] == player:
                r, c = r + dr, c + dc
            end = (r - dr, c - dc)
            r, c = row - dr, column - dc
            while 0 <= r < rows and 0 <= c < columns and board[r * columns + c] == player:
                r, c = r - dr, c - dc
            start = (r + dr, c + dc)
            length = max(abs(end[0] - start[0]), abs(end[1] - start[1])) + 1
            if length >= WIN_LENGTH:
                return [(start[0] + i * dr, start[1] + i * dc) for i in range(length)]
        return []

    def returns(self) -> tuple[float, float]:
        return win_returns(self.winner)

    def details(self) -> dict[str, Any]:
        return {
            "winner": winner_id(self.winner),
            "winning_line": self.winning_line,
            "moves": self.moves,
            "board": self.render(),
        }

    def observation(self, player: int) -> np.ndarray:
        return self._planes[player].copy()

    def state_text(self, player: int) -> str:
        return self.game.headers[player] + self.render()

    def moves_text(self) -> str:
        names = self.game.actions
        return "Your legal moves: " + ", ".join([names[c] for c in self._open])

    def render(self) -> str:
        if self._board_text is None:
            columns, cells = self.game.columns, self._cells
            lines = [self.game.column_header]
            lines += [" ".join(cells[i : i + columns]) for i in range(0, len(cells), columns)]
            self._board_text = "\n".join(lines)
        return self._board_text

    def render_rgb(self) -> np.ndarray:
        """The upright board: red discs for X, yellow for O; a winning line is dotted black."""
        rows, columns, cell = self.game.rows, self.game.columns, CELL_PIXELS
        frame = blank(rows * cell, columns * cell, BLUE)
        winning = set(self.winning_line)
        for index, owner in enumerate(self.board):
            row, column = divmod(index, columns)
            cy, cx = (row + 0.5) * cell, (column + 0.5) * cell
            fill_disc(frame, cy, cx, 0.4 * cell, WHITE if owner < 0 else _DISC_COLORS[owner])
            if (row, column) in winning:
                fill_disc(frame, cy, cx, 0.12 * cell, BLACK)
        return frame
