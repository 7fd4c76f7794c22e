"""Snake rules, the hidden simultaneous choice and the Parallel API, through the public envs."""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import pettingzoo
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spiral_envs
from spiral_envs.core import Invalid, Parsed
from spiral_envs.games.snake import DOWN, LEFT, RIGHT, UP, Snake

P0, P1 = "player_0", "player_1"


def new_env(seed: int = 0, **kwargs) -> spiral_envs.SpiralAECEnv:
    env = spiral_envs.env("Snake-v0", **kwargs)
    env.reset(seed=seed)
    return env


def play(env: spiral_envs.SpiralAECEnv, rounds: list[tuple]) -> spiral_envs.SpiralAECEnv:
    """Play whole rounds: (player 0's move, player 1's move) each."""
    for move_0, move_1 in rounds:
        assert env.agent_selection == P0
        env.step(move_0)
        assert env.agent_selection == P1
        env.step(move_1)
    return env


def assert_outcome(env: spiral_envs.SpiralAECEnv, winner: str | None) -> None:
    assert all(env.terminations.values())
    if winner is None:
        assert env.rewards == {P0: 0.0, P1: 0.0}
        assert env.infos[P0]["outcome"] == env.infos[P1]["outcome"] == "draw"
    else:
        loser = P1 if winner == P0 else P0
        assert env.rewards == {winner: 1.0, loser: -1.0}
        assert env.infos[winner]["outcome"] == "win" and env.infos[loser]["outcome"] == "loss"


# --- set-up and variants ----------------------------------------------------------------
def test_default_board_starts_and_apples() -> None:
    env = new_env()
    state = env.game_state
    assert env.game.max_rounds == 40 and env.game.apples == 2
    assert [list(s) for s in state.snakes] == [[(1, 1)], [(3, 3)]]
    assert len(state.apples) == 2 and not state.apples & {(1, 1), (3, 3)}
    obs = env.observe(P0)["observation"]
    assert obs.shape == (5, 5, 5) and obs.dtype == np.int8
    assert obs[1, 1].tolist() == [1, 0, 0, 0, 0] and obs[3, 3].tolist() == [0, 0, 1, 0, 0]
    assert env.observe(P1)["observation"][3, 3].tolist() == [1, 0, 0, 0, 0]
    assert {tuple(c) for c in np.argwhere(obs[:, :, 4])} == state.apples


def test_width_height_and_size_variants() -> None:
    env = new_env(width=4, height=3, apples=1, max_rounds=7)
    assert env.observe(P0)["observation"].shape == (3, 4, 5)
    assert env.observation_space(P0)["observation"].shape == (3, 4, 5)
    assert [s[0] for s in env.game_state.snakes] == [(0, 0), (2, 3)]
    assert len(env.game_state.apples) == 1
    assert "Rounds played: 0 of 7" in env.observe(P0)["text"]
    assert new_env(size=6).observe(P1)["observation"].shape == (6, 6, 5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 1},
        {"width": 0},
        {"height": 33},
        {"size": True},
        {"apples": -1},
        {"size": 2, "apples": 3},
        {"max_rounds": 0},
        {"max_rounds": 2.5},
    ],
)
def test_bad_variants_raise_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Snake(**kwargs)


# --- moves and parsing ------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, move",
    [
        ("[up]", UP), ("[W]", UP), ("[ Down ]", DOWN), ("[s]", DOWN), ("go [LEFT] now", LEFT),
        ("[a]", LEFT), ("[right]", RIGHT), ("[D]", RIGHT), ("[north] then [d] then [up]", RIGHT),
    ],
)
def test_moves_and_aliases_parse_case_insensitively(text: str, move: int) -> None:
    assert new_env().game_state.parse(text) == Parsed(move)


@pytest.mark.parametrize("text", ["up", "[north]", "[u p]", "[upp]", "", "[w s]"])
def test_text_without_a_move_is_invalid(text: str) -> None:
    env = new_env()
    env.step(text)
    assert env.infos[P0]["invalid_move"] is True and "[up]" in env.infos[P0]["reason"]
    assert env.rewards == {P0: -1.0, P1: 1.0}


def test_all_four_directions_always_legal_and_both_pending_at_round_start() -> None:
    env = new_env()
    for agent in (P0, P1):
        assert env.observe(agent)["action_mask"].tolist() == [1, 1, 1, 1]
        assert "Your legal moves: [up], [down], [left], [right]" in env.observe(agent)["text"]
    assert env.game_state.to_move(0) and env.game_state.to_move(1)
    env.step("[right]")
    assert not env.game_state.to_move(0) and env.game_state.to_move(1)
    assert env.observe(P0)["action_mask"].tolist() == [0, 0, 0, 0]
    assert "Your choice this round: [right]" in env.observe(P0)["text"]
    env.step("[left]")
    assert env.game_state.to_move(0) and env.game_state.to_move(1) and env.game_state.rounds == 1
    assert [s[0] for s in env.game_state.snakes] == [(1, 2), (3, 2)]
    assert "Round 1: Player 0 moved right, Player 1 moved left." in env.observe(P1)["text"]


# --- the hidden choice ------------------------------------------------------------------
def test_second_mover_cannot_see_the_first_choice() -> None:
    before = new_env(seed=4).observe(P1)
    seen = []
    for move in ("[up]", "[down]", "[left]", "I will go [right] now"):
        env = new_env(seed=4)
        env.step(move)
        assert env.agent_selection == P1
        seen.append(env.observe(P1))
        assert "Player 0 moved" not in seen[-1]["text"]
    for obs in seen:
        assert obs["text"] == before["text"]
        assert obs["observation"].tolist() == before["observation"].tolist()
        assert obs["action_mask"].tolist() == before["action_mask"].tolist()


# --- collisions -------------------------------------------------------------------------
def test_head_on_into_the_same_cell_kills_both_and_equal_scores_draw() -> None:
    env = play(new_env(size=2, apples=0), [("[right]", "[up]")])  # both into (0, 1)
    assert env.infos[P0]["deaths"][0] and env.infos[P0]["deaths"][1]
    assert "same cell" in env.infos[P0]["deaths"][0]
    assert_outcome(env, None)


def test_swapping_head_to_head_kills_both() -> None:
    env = new_env(width=2, height=3, apples=0)  # snakes at (0, 0) and (2, 1)
    play(env, [("[down]", "[left]")])  # (1, 0) and (2, 0): adjacent
    assert not env.game_state.terminal
    play(env, [("[down]", "[up]")])
    assert all("swapped" in cause for cause in env.infos[P0]["deaths"])
    assert_outcome(env, None)


@pytest.mark.parametrize(
    "rounds, winner",
    [
        ([("[up]", "[left]"), ("[up]", "[left]")], P1),  # player 0 over the top edge
        ([("[left]", "[up]"), ("[left]", "[up]")], P1),  # player 0 over the left edge
        ([("[up]", "[down]"), ("[right]", "[down]")], P0),  # player 1 over the bottom edge
        ([("[left]", "[right]"), ("[down]", "[right]")], P0),  # player 1 over the right edge
    ],
)
def test_leaving_the_board_kills(rounds: list, winner: str) -> None:
    env = play(new_env(apples=0), rounds)
    loser = 1 if winner == P0 else 0
    assert env.infos[P0]["deaths"][loser] == "hit the wall"
    assert env.infos[P0]["deaths"][1 - loser] is None
    assert env.game_state.rounds == 2
    assert_outcome(env, winner)


class FirstChoice:
    """A stand-in generator that always picks the first free cell."""

    def integers(self, n: int) -> int:
        return 0


def test_eating_an_apple_grows_scores_and_places_a_new_one() -> None:
    env = new_env(seed=3)
    state = env.game_state
    state.apples = {(1, 2), (4, 4)}
    state.rng = FirstChoice()
    play(env, [("[right]", "[left]")])
    assert list(state.snakes[0]) == [(1, 2), (1, 1)] and list(state.snakes[1]) == [(3, 2)]
    assert state.scores == [1, 0]
    assert state.apples == {(0, 0), (4, 4)}  # the first free cell, as the state's rng chose
    obs = env.observe(P0)["observation"]
    assert obs[1, 2, 0] == 1 and obs[1, 1, 1] == 1 and obs[:, :, 1].sum() == 1
    assert env.observe(P1)["observation"][1, 1, 3] == 1
    text = env.observe(P1)["text"]
    assert "Player 0 ate an apple (score 1)." in text and "Scores: you 0, Player 0 1." in text
    play(env, [("[down]", "[left]")])  # the tail follows the head
    assert list(state.snakes[0]) == [(2, 2), (1, 2)]


def test_apples_stay_topped_up_only_while_space_allows() -> None:
    env = new_env(size=2, apples=2)  # two snakes and two apples fill the board
    assert env.game_state.apples == {(0, 1), (1, 0)}
    play(env, [("[right]", "[left]")])  # both eat
    assert env.game_state.scores == [1, 1] and env.game_state.apples == set()
    assert not env.game_state.terminal


def test_turning_back_into_the_neck_is_fatal() -> None:
    env = new_env(apples=0)
    env.game_state.apples = {(1, 2)}
    play(env, [("[right]", "[left]"), ("[left]", "[right]")])  # player 0 now has length 2
    assert env.infos[P0]["deaths"] == ["ran into its own body", None]
    assert_outcome(env, P1)


def test_length_one_snake_may_reverse() -> None:
    env = play(new_env(apples=0), [("[right]", "[left]"), ("[left]", "[right]")])
    assert not env.game_state.terminal and [s[0] for s in env.game_state.snakes] == [(1, 1), (3, 3)]


def test_running_into_own_body_is_fatal_but_the_moving_tail_is_not() -> None:
    env = new_env(apples=0)
    env.game_state.snakes[0] = deque([(1, 1), (1, 2), (2, 2), (2, 1), (2, 0)])
    play(env, [("[down]", "[right]")])  # (2, 1) is body, not the tail
    assert env.infos[P0]["deaths"] == ["ran into its own body", None]
    assert_outcome(env, P1)

    env = new_env(apples=0)
    env.game_state.snakes[0] = deque([(1, 1), (1, 2), (2, 2), (2, 1)])
    play(env, [("[down]", "[right]")])  # chasing its own tail, which moves on
    assert not env.game_state.terminal
    assert list(env.game_state.snakes[0]) == [(2, 1), (1, 1), (1, 2), (2, 2)]


def test_a_growing_snake_keeps_its_tail() -> None:
    env = new_env(apples=0)
    env.game_state.snakes = [deque([(1, 3)]), deque([(2, 2), (2, 3)])]
    env.game_state.apples = {(2, 1)}
    play(env, [("[down]", "[left]")])  # player 1 eats, so its tail at (2, 3) stays
    assert env.infos[P0]["deaths"] == ["ran into Player 1's body", None]
    assert_outcome(env, P1)


def test_running_into_the_opponent_kills_only_the_runner() -> None:
    env = new_env(apples=0)
    env.game_state.snakes[1] = deque([(3, 3), (2, 3), (2, 2), (2, 1)])
    play(env, [("[down]", "[down]")])  # (2, 1) is player 1's tail: it moves away, safe
    assert not env.game_state.terminal and env.game_state.snakes[0][0] == (2, 1)

    env = new_env(apples=0)
    env.game_state.snakes[1] = deque([(3, 3), (2, 3), (2, 2), (2, 1), (2, 0)])
    play(env, [("[down]", "[down]")])  # (2, 1) is player 1's body
    assert env.infos[P0]["deaths"] == ["ran into Player 1's body", None]
    assert "Player 1 has the last snake alive and wins." in env.observe(P0)["text"]
    assert_outcome(env, P1)


def test_both_dying_in_one_round_is_decided_by_score() -> None:
    env = new_env(apples=0)
    env.game_state.apples = {(1, 2)}
    play(env, [("[right]", "[left]")])  # player 0 eats: 1-0; heads (1, 2) and (3, 2)
    play(env, [("[down]", "[up]")])  # both into (2, 2)
    assert all(env.infos[P0]["deaths"])
    assert env.infos[P0]["scores"] == [1, 0]
    assert env.infos[P0]["game_end"] == "both snakes died in the same round"
    assert_outcome(env, P0)


def test_round_limit_is_decided_by_score() -> None:
    env = new_env(apples=0, max_rounds=2)
    env.game_state.apples = {(3, 2)}
    play(env, [("[right]", "[left]")])  # player 1 eats
    assert not env.game_state.terminal
    play(env, [("[right]", "[left]")])
    assert env.game_state.rounds == 2 and "round limit (2)" in env.infos[P0]["game_end"]
    assert_outcome(env, P1)

    env = play(new_env(apples=0, max_rounds=1), [("[right]", "[left]")])
    assert env.infos[P1]["game_end"].startswith("the round limit")
    assert_outcome(env, None)


def test_default_round_limit_is_forty() -> None:
    env = new_env(apples=0)
    for _ in range(20):  # both snakes pace back and forth in their own rows
        play(env, [("[right]", "[left]"), ("[left]", "[right]")])
    assert env.game_state.rounds == 40 and env.infos[P0]["game_end"].startswith("the round limit")
    assert_outcome(env, None)


# --- chance -------------------------------------------------------------------------------
def apple_history(seed: int) -> list:
    env = new_env(seed=seed)
    seen = [sorted(env.game_state.apples)]
    moves = [("[down]", "[up]"), ("[down]", "[up]"), ("[right]", "[left]"), ("[right]", "[left]")]
    for move_0, move_1 in moves:
        if env.game_state.terminal:
            break
        play(env, [(move_0, move_1)])
        seen.append((sorted(env.game_state.apples), list(env.game_state.scores)))
    return seen


def test_apples_come_only_from_the_seeded_generator() -> None:
    first = apple_history(6)
    assert first[-1][1] == [1, 2]  # three apples eaten and replaced along the way
    random.seed(1)
    np.random.seed(1)
    assert apple_history(6) == first
    random.seed(2)
    np.random.seed(2)
    assert apple_history(6) == first
    assert len({str(apple_history(seed)[0]) for seed in range(8)}) > 1
    state = Snake().new_state(np.random.default_rng(5))
    again = Snake().new_state(np.random.default_rng(5))
    assert state.apples == again.apples


# --- Parallel API ---------------------------------------------------------------------------
def test_parallel_env_plays_both_agents_each_cycle() -> None:
    env = pettingzoo.make("parallel", "spiral/Snake-v0")
    observations, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    cycles = 0
    totals = {P0: 0.0, P1: 0.0}
    while env.agents:
        assert set(observations) == {P0, P1}
        for obs in observations.values():
            assert obs["action_mask"].tolist() == [1, 1, 1, 1]
            assert "Your legal moves" in obs["text"]
        state = env.unwrapped.game_state
        actions = {a: int(rng.integers(4)) for a in env.agents}
        observations, rewards, terminations, _, _ = env.step(actions)
        cycles += 1
        assert state.rounds == cycles
        for agent, reward in rewards.items():
            totals[agent] += reward
        if any(terminations.values()):
            assert all(terminations.values()) and not env.agents
    assert 1 <= cycles <= 40
    assert totals[P0] == -totals[P1] and totals[P0] in (-1.0, 0.0, 1.0)


def test_parallel_env_applies_both_moves_at_once() -> None:
    env = pettingzoo.make("parallel", "spiral/Snake-v0", apples=0)
    env.reset(seed=0)
    env.step({P0: RIGHT, P1: LEFT})
    assert [s[0] for s in env.unwrapped.game_state.snakes] == [(1, 2), (3, 2)]
    _, rewards, terminations, _, infos = env.step({P0: DOWN, P1: UP})  # head-on in (2, 2)
    assert all(terminations.values()) and rewards == {P0: 0, P1: 0}
    assert infos[P0]["outcome"] == "draw"


# --- untrusted text -------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_parses_without_raising(text: str) -> None:
    result = new_env().game_state.parse(text)
    assert isinstance(result, (Parsed, Invalid))


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.text(alphabet="[] updownleftrightwasdUDLRWASD", max_size=20), max_size=12))
def test_any_text_moves_keep_a_consistent_game(texts: list[str]) -> None:
    env = new_env(invalid_move={"retries": 1})
    for text in texts:
        if env.terminations[env.agent_selection] or env.truncations[env.agent_selection]:
            break
        env.step(text)
        for agent in env.agents:
            assert env.observation_space(agent).contains(env.observe(agent))
    assert sum(env.rewards.values()) == 0
