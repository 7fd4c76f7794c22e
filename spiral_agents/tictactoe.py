"""Perfect TicTacToe play from a full minimax table of every reachable position."""

from __future__ import annotations

from functools import cache

import numpy as np

from spiral_agents.base import Observation

_LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
Board = tuple[int, ...]  # 9 cells seen by the player to move: 0 empty, 1 own, 2 opponent's


def board_from_observation(observation: Observation) -> Board:
    planes = np.asarray(observation["observation"]).reshape(9, 2)
    return tuple(int(own) + 2 * int(opp) for own, opp in planes)


@cache
def position_value(board: Board) -> int:
    """Game value for the player to move: +1 win, 0 draw, -1 loss under perfect play."""
    if any(board[a] == board[b] == board[c] == 2 for a, b, c in _LINES):
        return -1  # the previous mover (the opponent) completed a line
    moves = [i for i, cell in enumerate(board) if cell == 0]
    if not moves:
        return 0
    return max(-position_value(_after(board, move)) for move in moves)


def _after(board: Board, move: int) -> Board:
    """The board after the mover plays ``move``, seen by the next player to move."""
    return tuple((0, 2, 1)[cell] if i != move else 2 for i, cell in enumerate(board))


def move_values(board: Board) -> dict[int, int]:
    """Value of each legal move for the player to move."""
    return {i: -position_value(_after(board, i)) for i, cell in enumerate(board) if cell == 0}


def optimal_moves(board: Board) -> list[int]:
    values = move_values(board)
    best = max(values.values())
    return [move for move, value in values.items() if value == best]


def reachable_positions() -> set[Board]:
    """Every position reachable from the empty board (both players to move), for tests."""
    seen: set[Board] = set()
    frontier = [(0,) * 9]
    while frontier:
        board = frontier.pop()
        if board in seen:
            continue
        seen.add(board)
        if any(board[a] == board[b] == board[c] != 0 for a, b, c in _LINES):
            continue
        frontier.extend(_after(board, i) for i, cell in enumerate(board) if cell == 0)
    return seen


class MinimaxAgent:
    """Never loses at TicTacToe; picks uniformly among the optimal moves."""

    name = "minimax"

    def __init__(self, game: str | None = None, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, observation: Observation) -> int:
        moves = optimal_moves(board_from_observation(observation))
        return int(moves[self.rng.integers(len(moves))])

    def action_probabilities(self, observation: Observation) -> np.ndarray:
        probabilities = np.zeros(9)
        moves = optimal_moves(board_from_observation(observation))
        probabilities[moves] = 1.0 / len(moves)
        return probabilities
