"""TicTacToe rules: a 3x3 board, cells 0-8 row by row; player 0 plays O and moves first."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from spiral_envs.core import Game, GameState, Invalid, Parsed, win_returns, winner_id
from spiral_envs.render import (
    BLACK,
    BLUE,
    LIGHT_GREY,
    RED,
    blank,
    draw_ring,
    draw_segment,
    draw_text,
    fill_rect,
)

MARKS = ("O", "X")
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
_BOARD = " {} | {} | {}\n---+---+---\n {} | {} | {}\n---+---+---\n {} | {} | {}"
_CELL_NAMES = tuple(f"[{i}]" for i in range(9))
# Linear time: every scan starts at a "[" and stops at the first character outside "\s\d".
_FIRST_BRACKETED_INTEGER = re.compile(r"\[\s*(\d+)\s*\]", re.ASCII)
_LINES_THROUGH = tuple(tuple(line for line in LINES if cell in line) for cell in range(9))
_HEADERS = tuple(f"Board (you are {mark}):\n" for mark in MARKS)
CELL_PIXELS = 64


class TicTacToe(Game):
    """Three in a row wins; a full board is a draw."""

    id = "TicTacToe-v0"
    actions = _CELL_NAMES
    observation_shape = (3, 3, 2)
    observation_dtype = np.int8
    max_turns = 50
    legend = "O = Player 0 (player_0), X = Player 1 (player_1); a digit is a free cell's number"

    def rules(self, player: int) -> str:
        return (
            f"You are Player {player} in TicTacToe, a two-player zero-sum game, and you play "
            f"{MARKS[player]}; your opponent, Player {1 - player}, plays {MARKS[1 - player]}. "
            "Player 0 moves first.\n"
            "The board has nine cells numbered 0 to 8, row by row from the top left. On your "
            "turn, claim an empty cell by writing its number in square brackets, e.g. [4]. "
            "Three of your marks in a row, column or diagonal win; a full board with no line is "
            "a draw.\n"
        )

    def new_state(self, rng: np.random.Generator) -> TicTacToeState:
        return TicTacToeState(self, rng)


class TicTacToeState(GameState):
    def __init__(self, game: TicTacToe, rng: np.random.Generator) -> None:
        super().__init__(game, rng)
        self.board: list[int] = [-1] * 9  # -1 empty, else the owner's player id
        self.winner: int | None = None
        # Views kept up to date move by move, so observing costs a copy, not a rebuild.
        self._free = list(range(9))
        self._mask = np.ones(9, dtype=np.int8)
        self._planes = np.zeros((2, 9, 2), dtype=np.int8)  # per viewer: own marks, opponent's
        self._cells = [str(i) for i in range(9)]
        self.moves = 0

    def legal_actions(self) -> list[int]:
        return self._free.copy()

    def action_mask(self) -> np.ndarray:
        return self._mask.copy()

    def parse(self, text: str) -> Parsed | Invalid:
        match = _FIRST_BRACKETED_INTEGER.search(text)
        if match is None:
            return Invalid("no move found; write the number of an empty cell in brackets, e.g. [4]")
        digits = match[1]
        if len(digits) > 1 or digits == "9":
            return Invalid(f"cell [{digits[:12]}] does not exist; cells are 0 to 8")
        return Parsed(int(digits))

    def illegal_reason(self, move: Any) -> str | None:
        owner = self.board[move]
        if owner < 0:
            return None
        return f"cell {move} is already taken by {MARKS[owner]}"

    def apply(self, move: int) -> None:
        player = self.current_player
        board = self.board
        board[move] = player
        self._free.remove(move)
        self._mask[move] = 0
        self._planes[player, move, 0] = self._planes[1 - player, move, 1] = 1
        self._cells[move] = MARKS[player]
        self.moves += 1
        self.log.game(f"Player {player} ({MARKS[player]}) claimed cell {move}.")
        for a, b, c in _LINES_THROUGH[move]:
            if board[a] == board[b] == board[c] == player:
                self.winner = player
                self.terminal = True
                self.log.game(f"Player {player} has three in a row and wins.")
                return
        if self.moves == 9:
            self.terminal = True
            self.log.game("The board is full with no line of three: a draw.")
            return
        self.current_player = 1 - player

    def returns(self) -> tuple[float, float]:
        return win_returns(self.winner)

    def details(self) -> dict[str, Any]:
        return {"winner": winner_id(self.winner), "board": self.render()}

    def observation(self, player: int) -> np.ndarray:
        return self._planes[player].reshape(3, 3, 2).copy()

    def state_text(self, player: int) -> str:
        return _HEADERS[player] + _BOARD.format(*self._cells)

    def moves_text(self) -> str:
        return "Your legal moves: " + ", ".join([_CELL_NAMES[i] for i in self._free])

    def render(self) -> str:
        return _BOARD.format(*self._cells)

    def render_rgb(self) -> np.ndarray:
        """The board: blue rings for O, red crosses for X, free cells numbered in grey."""
        cell = CELL_PIXELS
        frame = blank(3 * cell, 3 * cell)
        for i in (1, 2):
            fill_rect(frame, i * cell - 2, 0, 4, 3 * cell, BLACK)
            fill_rect(frame, 0, i * cell - 2, 3 * cell, 4, BLACK)
        reach = 0.32 * cell
        for index, owner in enumerate(self.board):
            cy, cx = (index // 3 + 0.5) * cell, (index % 3 + 0.5) * cell
            if owner == 0:
                draw_ring(frame, cy, cx, reach, cell / 10, BLUE)
            elif owner == 1:
                for dx in (-reach, reach):
                    draw_segment(frame, (cy - reach, cx - dx), (cy + reach, cx + dx), cell / 10, RED)
            else:
                draw_text(frame, int(cy) - 8, int(cx) - 5, str(index), LIGHT_GREY)
        return frame
