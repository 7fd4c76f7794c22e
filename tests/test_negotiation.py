"""Simple Negotiation rules: offers, acceptance, ownership checks, gains and private values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spiral_envs
from spiral_envs.games.negotiation import ACCEPT, Offer


def fresh(game: str = "SimpleNegotiation-v1", **kwargs) -> spiral_envs.SpiralAECEnv:
    env = spiral_envs.env(game, **kwargs)
    env.reset(seed=0)
    return env


def test_v1_defaults() -> None:
    env = fresh()
    state = env.game_state
    assert state.holdings == [[10, 10], [10, 10]]
    assert state.values == [[5, 15], [15, 5]]
    assert state.start_worth == [200, 200]
    assert env.game.turns == 10
    assert env.action_space("player_0").__class__.__name__ == "TextSpace"
    assert "action_mask" not in env.observe("player_0")


def test_accepted_offer_trades_and_decides_the_winner() -> None:
    env = fresh()
    env.step("Wood is worth little to me. [Offer: 5 Wood -> 1 Gold]")
    env.step("Deal! [Accept]")
    assert env.game_state.holdings == [[5, 11], [15, 9]]
    for _ in range(8):
        env.step("Nothing more.")
    # gains: player 0: -25 + 15 = -10, player 1: +75 - 5 = +70
    assert env.infos["player_0"]["gains"] == [-10, 70]
    assert env.rewards == {"player_0": -1.0, "player_1": 1.0}
    assert env.infos["player_0"]["trades"] == [{"proposer": 0, "give": [5, 0], "ask": [0, 1]}]


def test_no_trade_is_a_draw_after_ten_actions() -> None:
    env = fresh()
    for i in range(10):
        assert not any(env.terminations.values())
        env.step(f"message {i}")
    assert all(env.terminations.values())
    assert env.rewards == {"player_0": 0.0, "player_1": 0.0}


def test_only_the_player_offered_to_may_accept() -> None:
    env = fresh(invalid_move={"retries": 1})
    env.step("[Offer: 1 Gold -> 1 Wood]")
    env.step("Hmm, let me think.")  # a reply without [Accept] discards the offer
    assert env.game_state.standing is None
    env.step("[Accept]")  # player 0 cannot accept anything now
    assert env.infos["player_0"]["reason"] == "there is no offer to accept"


def test_new_offer_replaces_and_deny_discards() -> None:
    env = fresh()
    env.step("[Offer: 1 Gold -> 1 Wood]")
    env.step("Counter: [Offer: 2 Gold -> 3 Wood]")
    assert env.game_state.standing == Offer(give=(0, 2), ask=(3, 0))
    env.step("[Deny]")
    assert env.game_state.standing is None
    assert "Player 0 turns the offer down." in env.observe("player_1")["text"]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("[Offer: 11 Wood -> 1 Gold]", "the proposer does not hold 11 Wood"),
        ("[Offer: 1 Wood -> 11 Gold]", "the other player does not hold 11 Gold"),
        ("[Offer: 1 Wood]", "the form"),
        ("[Offer: 1 Wood -> 1 Wood]", "both sides"),
        ("[Offer: 1 Wood, 2 Wood -> 1 Gold]", "twice"),
        ("[Offer: 1 Silver -> 1 Gold]", "could not read"),
        ("[Offer: 0 Wood -> 1 Gold]", "at least one"),
        ("[Offer: 9999999 Wood -> 1 Gold]", "could not read"),
        ("[Deny]", "no offer to deny"),
    ],
)
def test_bad_offers_are_invalid(text: str, reason: str) -> None:
    env = fresh()
    env.step(text)
    assert reason in env.infos["player_0"]["reason"]
    assert env.rewards == {"player_0": -1.0, "player_1": 1.0}


def test_holdings_are_checked_again_on_accept() -> None:
    env = fresh()
    env.step("[Offer: 10 Wood -> 10 Gold]")
    env.game_state.holdings[0][0] = 3  # the proposer no longer holds what was offered
    assert env.game_state.illegal_reason(ACCEPT) == "the proposer does not hold 10 Wood"


def test_offer_parsing_is_lenient_about_case_spaces_and_plurals() -> None:
    env = fresh("SimpleNegotiation-v0")
    env.step("ok [ offer :3 wheat ,2 ORES->  5 Brick ] thanks")
    assert env.game_state.standing == Offer(give=(3, 0, 0, 0, 2), ask=(0, 0, 0, 5, 0))


def test_free_text_is_relayed_without_the_token() -> None:
    env = fresh()
    env.step("I really need gold. [Offer: 2 Wood -> 1 Gold] Please?")
    text = env.observe("player_1")["text"]
    assert "[Player 0] I really need gold. Please?" in text
    assert "[Game] Player 0 offers 2 Wood in exchange for 1 Gold." in text


@pytest.mark.parametrize("seed", range(20))
def test_v0_holdings_and_private_values(seed: int) -> None:
    env = spiral_envs.env("SimpleNegotiation-v0")
    env.reset(seed=seed)
    state = env.game_state
    base = (5, 10, 15, 25, 40)
    for p in (0, 1):
        assert all(5 <= n <= 25 for n in state.holdings[p])
        for b, v in zip(base, state.values[p]):
            assert max(5, round(0.8 * b)) <= v <= round(1.2 * b)
    for p in (0, 1):
        other = ", ".join(f"{r} {v}" for r, v in zip(env.game.resources, state.values[1 - p]))
        obs = env.observe(f"player_{p}")
        if state.values[0] != state.values[1]:
            assert other not in obs["text"]
        assert obs["observation"][5:10].tolist() == state.values[p]


def test_v0_is_seeded() -> None:
    a, b = spiral_envs.env("SimpleNegotiation-v0"), spiral_envs.env("SimpleNegotiation-v0")
    a.reset(seed=7)
    b.reset(seed=7)
    assert a.game_state.holdings == b.game_state.holdings and a.game_state.values == b.game_state.values
    b.reset(seed=8)
    assert a.game_state.holdings != b.game_state.holdings


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]:->, 0123456789WoodGldacepnyfr ")), max_size=80))
def test_offer_grammar_never_raises(text: str) -> None:
    env = fresh()
    env.step(text)
    assert env.observation_space("player_0").contains(env.observe("player_0"))
    assert np.all(env.observe("player_1")["observation"] >= 0)


def test_turns_variant() -> None:
    env = spiral_envs.env("SimpleNegotiation-v1", turns=2)
    env.reset(seed=0)
    env.step("a")
    env.step("b")
    assert all(env.terminations.values())
    with pytest.raises(ValueError):
        spiral_envs.env("SimpleNegotiation-v1", turns=0)
