"""Pig Dice agents: hold-at-20 follows its rule exactly; pig-optimal's table is right and wins."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

import spiral_envs
from spiral_agents import HoldAtAgent, PigOptimalAgent, RandomAgent, make_agent
from spiral_agents.arena import play_game
from spiral_agents.pig_dice import PigSolution, Position, read_position, solve
from spiral_envs.games.pig_dice import HOLD, ROLL


class LoadedDie:
    """Replaces the state's generator: every roll returns the next of the given faces."""

    def __init__(self, faces: list[int]) -> None:
        self.faces = list(faces)

    def integers(self, low: int, high: int, size: None = None) -> int:
        return self.faces.pop(0)


def observation(my: int, opponent: int, turn_total: int, played: int, target: int = 50,
                turns: int = 50) -> dict[str, Any]:
    """The observation the env gives for these integers (same float32 arithmetic)."""
    scale = 1.0 / target
    values = (min(my * scale, 1.0), min(opponent * scale, 1.0), min(turn_total * scale, 1.0),
              played * (1.0 / turns))
    return {"observation": np.array(values, dtype=np.float32), "action_mask": np.ones(2, np.int8)}


def win_rate(game: str, agent: Any, opponent: Any, games: int) -> tuple[float, int]:
    """``agent``'s share of wins over seeded games (seeds 0..games-1), alternating seats, by a
    plain loop through the AEC API; also the number of draws."""
    env = spiral_envs.env(game)
    wins = draws = 0
    for seed in range(games):
        seat = ("player_0", "player_1")[seed % 2]
        players = {seat: agent, ("player_1" if seat == "player_0" else "player_0"): opponent}
        env.reset(seed=seed)
        while not env.terminations[env.agent_selection]:
            mover = env.agent_selection
            env.step(players[mover].act(env.observe(mover)))
        wins += env.infos[seat]["outcome"] == "win"
        draws += env.infos[seat]["outcome"] == "draw"
    return wins / games, draws


def test_decodes_exact_integers_from_the_env_observation() -> None:
    env = spiral_envs.env("PigDice-v0")
    env.reset(seed=0)
    env.game_state.rng = LoadedDie([6, 6, 5, 1, 4, 3])
    for move in (ROLL, ROLL, ROLL, HOLD, ROLL, ROLL, ROLL):  # P0 banks 17, P1 busts, P0: 4, 3
        env.step(move)
    variant = spiral_envs.make_game("PigDice-v0")
    assert read_position(env.observe("player_0"), variant) == Position(17, 0, 7, 2)
    assert read_position(observation(99, 99, 97, 99, 100, 100), variant) == Position(99, 99, 97, 99)
    with pytest.raises(ValueError, match="does not fit"):  # 1/100 of 50 is not whole
        read_position(observation(1, 0, 0, 0, 100, 100), spiral_envs.make_game("PigDice-v1"))
    with pytest.raises(ValueError, match="off-turn"):
        read_position({**observation(0, 0, 0, 0), "action_mask": np.zeros(2)}, variant)


def test_hold_at_20_holds_exactly_at_20_in_a_real_game() -> None:
    env = spiral_envs.env("PigDice-v1")
    env.reset(seed=0)
    env.game_state.rng = LoadedDie([6, 6, 6, 2])
    agent = HoldAtAgent("PigDice-v1")
    decisions = []
    while env.agent_selection == "player_0":
        decisions.append(agent.act(env.observe("player_0")))
        env.step(decisions[-1])
    assert decisions == [ROLL, ROLL, ROLL, ROLL, HOLD] and env.game_state.scores == [20, 0]


@pytest.mark.parametrize(
    ("game", "threshold"), [("PigDice-v1", 20), ("PigDice-v0", 20), ("PigDice-v1", 7)]
)
def test_hold_at_rule_over_every_position(game: str, threshold: int) -> None:
    """Holds iff the turn total reaches the threshold or banking it reaches the target."""
    variant = spiral_envs.make_game(game)
    target, turns = variant.target, variant.max_game_turns
    agent = make_agent(f"hold-at-20@threshold={threshold}", game)
    for my in range(target):
        for total in range(target + 7 - my):
            obs = observation(my, target // 2, total, 3, target, turns)
            expected = HOLD if total >= threshold or my + total >= target else ROLL
            assert agent.act(obs) == expected, (my, total)


def test_value_table_favours_the_first_player_and_computes_fast() -> None:
    start = time.perf_counter()
    v0 = PigSolution(100, 100)
    assert time.perf_counter() - start < 5.0
    v1 = solve(50, 50)
    assert v1.win_probability(Position(0, 0, 0, 0)) == pytest.approx(0.54615, abs=1e-5)
    assert v0.win_probability(Position(0, 0, 0, 0)) == pytest.approx(0.53059, abs=1e-5)
    for table in (v0, v1):  # probabilities, rising with one's own score, falling with theirs
        rows = table.start_values
        assert ((rows >= 0) & (rows <= 1)).all()
        assert (np.diff(rows, axis=1) >= -1e-12).all() and (np.diff(rows, axis=2) <= 1e-12).all()


def test_a_far_cap_reproduces_the_uncapped_optimum() -> None:
    """Neller and Presser (2004): optimal first player of 100-point Pig wins 53.06% of games."""
    table = PigSolution(100, 100_000)
    assert len(table.start_values) < 300  # the sweeps stopped once the values converged
    assert table.win_probability(Position(0, 0, 0, 0)) == pytest.approx(0.5306, abs=5e-5)


def test_last_turn_rolls_until_it_passes_the_opponent() -> None:
    """The turn cap counts: in the game's last turn, behind 10 to 30, it rolls past a tie (a
    draw is worth a half, going on from 20 wins 5/6 of the time) and holds at 21; ahead, it
    banks at once."""
    agent = PigOptimalAgent("PigDice-v1")
    for total in range(1, 30):
        expected = ROLL if total <= 20 else HOLD
        assert agent.act(observation(10, 30, total, 49)) == expected, total
    assert agent.act(observation(30, 10, 1, 49)) == HOLD
    assert agent.act(observation(30, 10, 0, 49)) == ROLL  # holding 0 never beats rolling
    assert agent.act(observation(45, 10, 5, 0)) == HOLD  # holding reaches the target


def test_decisions_match_the_table_values() -> None:
    agent = PigOptimalAgent("PigDice-v1")
    for my, opponent, played in ((0, 0, 0), (12, 40, 17), (35, 20, 30)):
        values = agent.solution.turn_values(my, opponent, 50 - played)
        for total in range(1, 50 - my):
            best = ROLL if values[total, 1] > values[total, 0] else HOLD
            assert agent.act(observation(my, opponent, total, played)) == best


def test_optimal_self_play_matches_the_tables_first_player_value() -> None:
    """Seeded self-play: player 0's score (win 1, draw 1/2) over 2000 games, 0.568, is within
    3 standard errors (0.033) of the table's 0.5461."""
    agent = PigOptimalAgent("PigDice-v1")
    env = spiral_envs.env("PigDice-v1")
    score = 0.0
    for seed in range(2000):
        env.reset(seed=seed)
        while not env.terminations[env.agent_selection]:
            env.step(agent.act(env.observe(env.agent_selection)))
        score += {"win": 1.0, "draw": 0.5, "loss": 0.0}[env.infos["player_0"]["outcome"]]
    expected = agent.solution.win_probability(Position(0, 0, 0, 0))
    assert abs(score / 2000 - expected) < 3 * np.sqrt(expected * (1 - expected) / 2000)


def test_optimal_beats_hold_at_20() -> None:
    """2000 seeded PigDice-v1 games, seats alternating: 55.4% wins, no draws (95% interval
    53.2-57.6%), so the assertion > 52% is 3 standard errors clear."""
    optimal, hold = PigOptimalAgent("PigDice-v1"), HoldAtAgent("PigDice-v1")
    rate, draws = win_rate("PigDice-v1", optimal, hold, 2000)
    assert rate > 0.52 and draws == 0


@pytest.mark.parametrize("game", ["PigDice-v1", "PigDice-v0"])
def test_both_agents_crush_random(game: str) -> None:
    optimal, _ = win_rate(game, PigOptimalAgent(game), RandomAgent(seed=1), 200)
    hold, _ = win_rate(game, HoldAtAgent(game), RandomAgent(seed=1), 200)
    assert optimal >= 0.95 and hold >= 0.9


def test_registry_and_variant_options() -> None:
    agents = {
        "player_0": make_agent("pig-optimal", "PigDice-v1", target=30, max_game_turns=20),
        "player_1": make_agent("hold-at-20", "PigDice-v1", target=30),
    }
    for seed in range(10):
        variant = {"target": 30, "max_game_turns": 20}
        record = play_game("PigDice-v1", agents, seed, env_kwargs=variant)
        assert record.error is None and record.ended_by
    with pytest.raises(ValueError, match="not a positive int|must be a positive int"):
        HoldAtAgent(threshold=0)
    with pytest.raises(ValueError, match="PigDice"):
        PigOptimalAgent("Nim-v0")
    with pytest.raises(ValueError, match="target"):
        PigOptimalAgent("PigDice-v1", target=-3)
    with pytest.raises(ValueError, match="does not fit"):  # a v0 observation, a v1 agent
        make_agent("pig-optimal", "PigDice-v1").act(observation(1, 3, 0, 1, 100, 100))
