"""Connect Four by depth-limited negamax with alpha-beta pruning on bitboards.

Boards are Python ints, one bit per cell, column by column from the bottom, with one empty
guard bit on top of every column so that shifted lines never wrap into the next column (the
layout of John Tromp's and Pascal Pons's solvers). Any ``rows`` x ``columns`` variant works.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from spiral_agents.base import Observation

WIN = 1_000_000
"""A win scores ``WIN`` plus the number of empty cells left after it: sooner wins score more.
Heuristic scores stay far below it."""
THREE, TWO, CENTRE = 5, 2, 3
"""Evaluation weights: a line of four holding three of a player's pieces and one empty cell,
one holding two and two empty cells, and each piece in the centre column(s)."""
_EXACT, _LOWER, _UPPER = 0, 1, 2


@dataclass(frozen=True)
class Geometry:
    """Bit masks of one board size."""

    stride: int  # bits per column: the rows plus the guard bit
    bottom: int  # the bottom cell of every column
    board: int  # every cell
    column_masks: tuple[int, ...]
    order: tuple[int, ...]  # columns, centre first
    centre: int  # the cells of the centre column(s)
    shifts: tuple[int, ...]  # bit distance between neighbours: vertical, horizontal, diagonals


@cache
def geometry(rows: int, columns: int) -> Geometry:
    """The masks of a ``rows`` x ``columns`` board (built once per size)."""
    stride = rows + 1
    column_masks = tuple(((1 << rows) - 1) << (c * stride) for c in range(columns))
    middle = (columns - 1) / 2
    order = tuple(sorted(range(columns), key=lambda c: abs(c - middle)))
    centre = sum(column_masks[c] for c in range(columns) if abs(c - middle) < 1)
    return Geometry(
        stride=stride,
        bottom=sum(1 << (c * stride) for c in range(columns)),
        board=sum(column_masks),
        column_masks=column_masks,
        order=order,
        centre=centre,
        shifts=(1, stride, stride - 1, stride + 1),
    )


def _bits(cells: np.ndarray, stride: int) -> int:
    """Bitboard of the true cells of a (rows, columns) array whose row 0 is the top."""
    top = cells.shape[0] - 1
    return sum(1 << (c * stride + top - r) for r, c in np.argwhere(cells).tolist())


def read_board(observation: Observation) -> tuple[Geometry, int, int]:
    """(geometry, the mover's pieces, all pieces) from a Connect Four observation."""
    planes = np.asarray(observation["observation"])
    if planes.ndim != 3 or planes.shape[2] != 2:
        raise ValueError(f"expected a (rows, columns, 2) observation, got shape {planes.shape}")
    geo = geometry(*planes.shape[:2])
    own = _bits(planes[:, :, 0] != 0, geo.stride)
    mask = _bits(planes.any(axis=2), geo.stride)
    if mask & ~((mask << 1) | geo.bottom):
        raise ValueError("pieces float above an empty cell: not a Connect Four position")
    if not 0 <= (own ^ mask).bit_count() - own.bit_count() <= 1:
        raise ValueError("the piece counts do not fit the observer having the move")
    return geo, own, mask


def winning_cells(geo: Geometry, pieces: int, mask: int) -> int:
    """The empty cells that would complete a line of four for ``pieces``."""
    found = (pieces << 1) & (pieces << 2) & (pieces << 3)  # on top of three in a column
    for shift in geo.shifts[1:]:
        pair = (pieces << shift) & (pieces << 2 * shift)
        found |= pair & (pieces << 3 * shift)
        found |= pair & (pieces >> shift)
        pair = (pieces >> shift) & (pieces >> 2 * shift)
        found |= pair & (pieces << shift)
        found |= pair & (pieces >> 3 * shift)
    return found & (geo.board ^ mask)


def line_score(geo: Geometry, pieces: int, others: int) -> int:
    """Heuristic worth of ``pieces``: open lines of four with three or two of them, centre."""
    free = geo.board & ~others
    score = CENTRE * (pieces & geo.centre).bit_count()
    for shift in geo.shifts:
        room = free & (free >> shift) & (free >> 2 * shift) & (free >> 3 * shift)
        a, b = pieces, pieces >> shift
        c, d = pieces >> 2 * shift, pieces >> 3 * shift
        three = (a & b & (c ^ d)) | (c & d & (a ^ b))
        two = ((a ^ b) & (c ^ d)) | (a & b & ~(c | d)) | (c & d & ~(a | b))
        score += THREE * (three & room).bit_count() + TWO * (two & room).bit_count()
    return score


def evaluate(geo: Geometry, own: int, opponent: int) -> int:
    """Heuristic score of a position for the player to move (``own``)."""
    return line_score(geo, own, opponent) - line_score(geo, opponent, own)


class AlphaBetaAgent:
    """Depth-limited negamax with alpha-beta pruning for Connect Four, any board size.

    Options:
        depth: plies searched, the agent's own move included (default 4, at least 1). A depth
            of at least the number of empty cells solves the position exactly.

    Every node first takes an immediate win, answers a single immediate threat of the
    opponent by blocking it, and scores two threats it cannot both block as lost; moves that
    let the opponent win on top of them are never tried while another move exists. Leaves are
    scored by :func:`evaluate`, moves are tried centre first, and a transposition table
    (cleared every move) merges transposed lines. Among the best root moves the agent picks
    uniformly at random with its own seeded generator.
    """

    name = "connect-four-alphabeta"

    def __init__(self, game: str | None = None, seed: int | None = None, depth: int = 4) -> None:
        if game is not None and game.removeprefix("spiral/") != "ConnectFour-v0":
            raise ValueError(f"{type(self).__name__} plays ConnectFour-v0, not {game}")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"depth must be an int of at least 1, got {depth!r}")
        self.depth = depth
        self.rng = np.random.default_rng(seed)
        self._table: dict[tuple[int, int], tuple[int, int, int]] = {}

    def best_moves(self, observation: Observation) -> dict[int, int]:
        """The best legal columns, each with its search score (all scores are equal)."""
        geo, own, mask = read_board(observation)
        playable = (mask + geo.bottom) & geo.board
        legal = [c for c, cells in enumerate(geo.column_masks) if playable & cells]
        action_mask = np.asarray(observation["action_mask"])
        fits = action_mask.shape == (len(geo.column_masks),)
        if not fits or np.flatnonzero(action_mask).tolist() != legal:
            raise ValueError("the action mask does not fit the board")
        if not legal:
            raise ValueError("the board is full: no move to make")
        self._table.clear()
        wins = winning_cells(geo, own, mask) & playable
        if wins:
            score = WIN + (geo.board ^ mask).bit_count() - 1
            return {c: score for c in legal if wins & geo.column_masks[c]}
        threats = winning_cells(geo, own ^ mask, mask) & playable
        if threats:  # block: the only moves that do not lose at once
            legal = [c for c in legal if threats & geo.column_masks[c]]
        candidates = [c for c in geo.order if c in legal]
        scores: dict[int, int] = {}
        best = -2 * WIN
        for column in candidates:
            move = playable & geo.column_masks[column]
            child = (geo, own ^ mask, mask | move, self.depth - 1)
            score = -self._negamax(*child, -2 * WIN, 1 - best)  # exact when it reaches best
            if score >= best:
                best = score
                scores[column] = score
        return {c: s for c, s in scores.items() if s == best}

    def act(self, observation: Observation) -> int:
        best = sorted(self.best_moves(observation))
        return best[self.rng.integers(len(best))]

    def _negamax(
        self, geo: Geometry, own: int, mask: int, depth: int, alpha: int, beta: int
    ) -> int:
        """Score for the player to move (``own``); exact inside (alpha, beta), else a bound."""
        playable = (mask + geo.bottom) & geo.board
        if not playable:
            return 0  # full board: a draw
        empty = (geo.board ^ mask).bit_count()
        if winning_cells(geo, own, mask) & playable:
            return WIN + empty - 1
        opponent = own ^ mask
        threats = winning_cells(geo, opponent, mask)
        forced = threats & playable
        if forced & (forced - 1):
            return -(WIN + empty - 2)  # two threats: whatever we block, the other wins
        if depth == 0:
            return evaluate(geo, own, opponent)
        moves = (forced or playable) & ~(threats >> 1)
        if not moves:
            return -(WIN + empty - 2)  # every move lets the opponent win on top of it
        key = (own, mask)
        entry = self._table.get(key)
        if entry is not None and entry[0] >= depth:
            _, value, kind = entry
            if kind == _EXACT:
                return value
            if kind == _LOWER:
                alpha = max(alpha, value)
            else:
                beta = min(beta, value)
            if alpha >= beta:
                return value
        start_alpha = alpha
        best = -2 * WIN
        for column in geo.order:
            move = moves & geo.column_masks[column]
            if not move:
                continue
            score = -self._negamax(geo, opponent, mask | move, depth - 1, -beta, -alpha)
            if score > best:
                best = score
                if score > alpha:
                    alpha = score
                    if alpha >= beta:
                        break
        kind = _UPPER if best <= start_alpha else _LOWER if best >= beta else _EXACT
        self._table[key] = (depth, best, kind)
        return best
