"""TicTacToe rules: a 3x3 board, cells 0-8 row by row; player 0 plays O and moves first."""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral_envs.core import Game, GameState, Invalid, Parsed, bracketed

MARKS = ("O", "X")
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
_BOARD = " {} | {} | {}\n---+---+---\n {} | {} | {}\n---+---+---\n {} | {} | {}"
_CELL_NAMES = tuple(f"[{i}]" for i in range(9))


class TicTacToe(Game):
    """Three in a row wins; a full board is a draw."""

    id = "TicTacToe-v0"
    actions = _CELL_NAMES
    observation_shape = (3, 3, 2)
    observation_dtype = np.int8
    max_turns = 50

    def __init__(self) -> None:
        self._rules = tuple(
            f"You are Player {p} in TicTacToe, a two-player zero-sum game, and you play {MARKS[p]}; "
            f"your opponent, Player {1 - p}, plays {MARKS[1 - p]}. Player 0 moves first.\n"
            "The board has nine cells numbered 0 to 8, row by row from the top left. On your "
            "turn, claim an empty cell by writing its number in square brackets, e.g. [4]. "
            "Three of your marks in a row, column or diagonal win; a full board with no line is "
            "a draw.\n"
            "Lines starting with [Game] come from the game; a line starting with [Player N] "
            "holds Player N's own words up to its end."
            for p in range(2)
        )

    def new_state(self, rng: np.random.Generator) -> TicTacToeState:
        return TicTacToeState(self, rng)

    def rules(self, player: int) -> str:
        return self._rules[player]


class TicTacToeState(GameState):
    def __init__(self, game: TicTacToe, rng: np.random.Generator) -> None:
        super().__init__(game, rng)
        self.board: list[int] = [-1] * 9  # -1 empty, else the owner's player id
        self.winner: int | None = None
        self.moves = 0

    def legal_actions(self) -> list[int]:
        return [i for i, owner in enumerate(self.board) if owner < 0]

    def parse(self, text: str) -> Parsed | Invalid:
        for match in bracketed(text):
            digits = match[1].strip()
            if digits.isdecimal() and digits.isascii():
                if len(digits) > 1 or not "0" <= digits <= "8":
                    return Invalid(f"cell [{digits[:12]}] does not exist; cells are 0 to 8")
                return Parsed(int(digits))
        return Invalid("no move found; write the number of an empty cell in brackets, e.g. [4]")

    def illegal_reason(self, move: Any) -> str | None:
        owner = self.board[move]
        if owner < 0:
            return None
        return f"cell {move} is already taken by {MARKS[owner]}"

    def apply(self, move: int) -> None:
        player = self.current_player
        board = self.board
        board[move] = player
        self.moves += 1
        self.log.game(f"Player {player} ({MARKS[player]}) claimed cell {move}.")
        for a, b, c in LINES:
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
        if self.winner is None:
            return (0.0, 0.0)
        return (1.0, -1.0) if self.winner == 0 else (-1.0, 1.0)

    def details(self) -> dict[str, Any]:
        return {"winner": self.winner, "board": self.render()}

    def observation(self, player: int) -> np.ndarray:
        board = np.array(self.board, dtype=np.int8)
        obs = np.empty((9, 2), dtype=np.int8)
        obs[:, 0] = board == player
        obs[:, 1] = board == 1 - player
        return obs.reshape(3, 3, 2)

    def state_text(self, player: int) -> str:
        cells = [MARKS[o] if o >= 0 else str(i) for i, o in enumerate(self.board)]
        return f"Board (you are {MARKS[player]}):\n" + _BOARD.format(*cells)

    def render(self) -> str:
        cells = [MARKS[o] if o >= 0 else str(i) for i, o in enumerate(self.board)]
        return _BOARD.format(*cells)
