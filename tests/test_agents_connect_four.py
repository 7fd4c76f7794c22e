"""AlphaBetaAgent: tactics, strength against random and shallower search, speed, and perfect
play on a 4 x 4 board checked against an independent exhaustive solver."""

from __future__ import annotations

import copy
import time
from functools import cache

import numpy as np
import pytest

import spiral_envs
from spiral_agents import AlphaBetaAgent, RandomAgent, make_agent
from spiral_agents.arena import play_game
from spiral_envs.games.connect_four import ConnectFourState


def observation_after(moves: list[int], **variant: int) -> dict:
    """The mover's observation after ``moves`` from the empty board."""
    env = spiral_envs.env("ConnectFour-v0", **variant)
    env.reset(seed=0)
    for move in moves:
        env.step(move)
    assert not any(env.terminations.values())
    return env.observe(env.agent_selection)


@pytest.mark.parametrize("depth", [1, 2, 4, 6])
def test_takes_an_immediate_win_before_blocking(depth: int) -> None:
    # X holds columns 1-3 on the bottom row; O has three up column 6 and threatens it too.
    observation = observation_after([1, 6, 2, 6, 3, 6])
    agent = AlphaBetaAgent(seed=depth, depth=depth)
    assert set(agent.best_moves(observation)) == {0, 4}
    assert all(agent.act(observation) in (0, 4) for _ in range(10))


@pytest.mark.parametrize("depth", [1, 2, 4, 6])
@pytest.mark.parametrize(
    "moves, block",
    [([0, 3, 1, 3, 5, 3], 3),  # X to move; O has three up column 3
     ([6, 0, 6, 1, 3, 2, 6], 6),  # O to move; X has three up column 6
     ([6, 3, 0, 4, 0, 5], 2)],  # X to move; O holds 3-5 on the bottom row, X holds 6
)  # fmt: skip
def test_blocks_an_immediate_loss(moves: list[int], block: int, depth: int) -> None:
    observation = observation_after(moves)
    assert AlphaBetaAgent(seed=0, depth=depth).best_moves(observation).keys() == {block}


def play_seeded(make_agent_a, make_agent_b, games: int, **env_kwargs: int) -> dict[str, int]:
    """Outcomes for agent a over ``games`` seeded games, a sitting first in the even ones."""
    outcomes = {"win": 0, "draw": 0, "loss": 0}
    for seed in range(games):
        a, b = make_agent_a(seed), make_agent_b(seed)
        seats = {"player_0": a, "player_1": b} if seed % 2 == 0 else {"player_0": b, "player_1": a}
        record = play_game("ConnectFour-v0", seats, seed, env_kwargs=env_kwargs)
        assert record.error is None
        outcomes[record.outcome["player_0" if seed % 2 == 0 else "player_1"]] += 1
    return outcomes


def test_beats_random_in_both_seats() -> None:
    outcomes = play_seeded(
        lambda s: AlphaBetaAgent(seed=s), lambda s: RandomAgent(seed=100 + s), 40
    )
    assert outcomes["win"] >= 38, outcomes  # measured: 40 of 40


def test_depth_four_beats_depth_one() -> None:
    outcomes = play_seeded(
        lambda s: AlphaBetaAgent(seed=s, depth=4),
        lambda s: AlphaBetaAgent(seed=100 + s, depth=1),
        20,
    )
    assert outcomes["win"] > 10, outcomes  # measured: 20 of 20


@pytest.mark.parametrize(
    "variant, least_wins",
    [({"rows": 5, "columns": 9}, 6), ({"rows": 20, "columns": 20}, 5),
     ({"rows": 4, "columns": 5}, 5), ({"rows": 1, "columns": 9}, 0),
     ({"rows": 9, "columns": 2}, 0)],
)  # fmt: skip
def test_board_size_variants(variant: dict[str, int], least_wins: int) -> None:
    """Any board size: legal moves, no loss to random; on the thin boards, where one line
    direction is all there is, random blocks by chance and most games end drawn."""
    outcomes = play_seeded(
        lambda s: AlphaBetaAgent(seed=s), lambda s: RandomAgent(seed=100 + s), 6, **variant
    )
    assert outcomes["loss"] == 0 and outcomes["win"] >= least_wins, outcomes


def test_a_depth_four_move_takes_well_under_half_a_second() -> None:
    agents = {"player_0": AlphaBetaAgent(seed=1), "player_1": AlphaBetaAgent(seed=2)}
    slowest = 0.0
    for seed in range(2):
        env = spiral_envs.env("ConnectFour-v0")
        env.reset(seed=seed)
        while not any(env.terminations.values()):
            observation = env.observe(env.agent_selection)
            start = time.perf_counter()
            move = agents[env.agent_selection].act(observation)
            slowest = max(slowest, time.perf_counter() - start)
            env.step(move)
    assert slowest < 0.5  # measured: under 0.01 s


# --- exact play on a 4 x 4 board -------------------------------------------------------------

ROWS = COLUMNS = 4
LINES = [
    [(r + i * dr) * COLUMNS + c + i * dc for i in range(4)]
    for r in range(ROWS)
    for c in range(COLUMNS)
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1))
    if 0 <= r + 3 * dr < ROWS and 0 <= c + 3 * dc < COLUMNS
]
Board = tuple[int, ...]  # row-major, row 0 on top: 0 empty, 1 the mover's, 2 the opponent's


def drop(board: Board, column: int) -> Board:
    """The board after the mover drops into ``column``, seen by the next mover."""
    row = max(r for r in range(ROWS) if board[r * COLUMNS + column] == 0)
    cells = list(board)
    cells[row * COLUMNS + column] = 1
    return tuple((0, 2, 1)[cell] for cell in cells)


@cache
def value(board: Board) -> int:
    """+1 / 0 / -1: the mover's result under perfect play (plain minimax, own rules)."""
    if any(all(board[i] == 2 for i in line) for line in LINES):
        return -1
    columns = [c for c in range(COLUMNS) if board[c] == 0]
    return max((-value(drop(board, c)) for c in columns), default=0)


def test_full_depth_plays_perfectly_on_4x4_against_every_opponent_line() -> None:
    """Exhaustive over every opponent move sequence, in both seats: every move the agent makes
    keeps the game value of an independent minimax solver, so it never loses (4 x 4 is a
    draw) and wins whenever the opponent's errors allow it."""
    assert value((0,) * (ROWS * COLUMNS)) == 0
    agent = AlphaBetaAgent(seed=0, depth=ROWS * COLUMNS)
    results: dict[tuple[int, ...], set[int]] = {}

    def board_of(state: ConnectFourState) -> Board:
        mover = state.current_player
        return tuple(0 if p < 0 else 1 if p == mover else 2 for p in state.board)

    def explore(state: ConnectFourState, agent_player: int) -> set[int]:
        """Results (+1 / 0 / -1) the agent can reach from here, over all opponent replies."""
        key = (*state.board, agent_player)
        if key not in results:
            if state.terminal:
                outcome = {1: 1, 0: 0, -1: -1}[int(state.returns()[agent_player])]
                results[key] = {outcome}
            elif state.current_player == agent_player:
                board = board_of(state)
                observation = {
                    "observation": state.observation(agent_player),
                    "action_mask": state.action_mask(),
                }
                move = agent.act(observation)
                assert -value(drop(board, move)) == value(board), (board, move)
                child = copy.deepcopy(state)
                child.apply(move)
                results[key] = explore(child, agent_player)
            else:
                results[key] = set()
                for move in state.legal_actions():
                    child = copy.deepcopy(state)
                    child.apply(move)
                    results[key] |= explore(child, agent_player)
        return results[key]

    game = spiral_envs.make_game("ConnectFour-v0", rows=ROWS, columns=COLUMNS)
    for seat in (0, 1):
        outcomes = explore(game.new_state(np.random.default_rng(0)), seat)
        assert outcomes == {0, 1}, outcomes  # draws, and wins after opponent errors; no loss


def test_options_and_registry() -> None:
    with pytest.raises(ValueError, match="depth"):
        AlphaBetaAgent(depth=0)
    with pytest.raises(ValueError, match="plays ConnectFour-v0"):
        AlphaBetaAgent("Nim-v0")
    agent = make_agent("connect-four-alphabeta@depth=2", "ConnectFour-v0", seed=3)
    assert isinstance(agent, AlphaBetaAgent) and agent.depth == 2
    observation = observation_after([3])
    observation["action_mask"] = np.zeros(7, dtype=np.int8)
    with pytest.raises(ValueError, match="action mask"):
        agent.act(observation)
