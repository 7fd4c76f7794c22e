"""Pig Dice rules: rolls from the state's RNG, busting on a 1, banking, the target, the turn cap."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spiral_envs
from spiral_envs.core import NO_WINNER, Invalid, Parsed
from spiral_envs.games.pig_dice import HOLD, ROLL, PigDice, PigDiceV0


class LoadedDie:
    """Stands in for the state's numpy Generator: ``integers`` returns the given faces in order."""

    def __init__(self, faces: list[int]) -> None:
        self.faces = list(faces)

    def integers(self, low: int, high: int, size: None = None) -> int:
        assert (low, high, size) == (1, 7, None)
        return self.faces.pop(0)


def loaded_env(faces: list[int], **variants: int) -> spiral_envs.SpiralAECEnv:
    env = spiral_envs.env(variants.pop("game", "PigDice-v1"), **variants)
    env.reset(seed=0)
    env.game_state.rng = LoadedDie(faces)
    return env


def test_rolling_a_one_loses_the_turn_total_and_ends_the_turn() -> None:
    env = loaded_env([4, 5, 1])
    env.step("[roll]")
    env.step("[roll]")
    assert env.game_state.turn_total == 9 and env.agent_selection == "player_0"
    env.step("[roll]")
    state = env.game_state
    assert state.turn_total == 0 and state.scores == [0, 0] and state.turns_played == 1
    assert env.agent_selection == "player_1"
    history = env.observe("player_1")["text"]
    for line in ("Player 0 rolls a 4; turn total 4.", "Player 0 rolls a 5; turn total 9.",
                 "Player 0 rolls a 1 and loses the turn total of 9."):
        assert "[Game] " + line in history  # every roll is public
    assert env.observe("player_1")["observation"].tolist() == [0.0, 0.0, 0.0, pytest.approx(1 / 50)]


def test_hold_banks_the_turn_total_and_passes_the_turn() -> None:
    env = loaded_env([6, 3, 5])
    env.step("[roll]")
    env.step("[roll]")
    env.step("[hold]")
    assert env.game_state.scores == [9, 0] and env.game_state.turn_total == 0
    assert env.agent_selection == "player_1"
    env.step("[roll]")
    obs = env.observe("player_0")["observation"]
    assert obs.dtype == np.float32
    assert obs.tolist() == pytest.approx([9 / 50, 0.0, 5 / 50, 1 / 50])
    other = env.observe("player_1")["observation"]
    assert other.tolist() == pytest.approx([0.0, 9 / 50, 5 / 50, 1 / 50])
    assert "Banked scores: you 0, opponent 9" in env.observe("player_1")["text"]


def test_holding_with_nothing_to_bank_is_legal_and_just_passes() -> None:
    env = loaded_env([])
    assert env.observe("player_0")["action_mask"].tolist() == [1, 1]
    env.step("[hold]")
    assert "invalid_move" not in env.infos["player_0"]
    assert env.game_state.scores == [0, 0] and env.game_state.turns_played == 1
    assert env.agent_selection == "player_1"


def test_banking_the_target_wins_at_once_but_an_unbanked_turn_total_does_not() -> None:
    env = loaded_env([6] * 9)
    for _ in range(9):
        env.step("[roll]")
    assert env.game_state.turn_total == 54 and not env.game_state.terminal  # only a banked score wins
    assert env.observe("player_0")["observation"][2] == 1.0  # clipped at the target
    env.step("[hold]")
    assert all(env.terminations.values()) and not any(env.truncations.values())
    assert env.rewards == {"player_0": 1.0, "player_1": -1.0}
    info = env.infos["player_1"]
    assert info["scores"] == [54, 0] and info["decided_by"] == "target" and info["winner"] == 0
    assert env.observe("player_0")["observation"][0] == 1.0


def test_player_one_can_win_by_target_too() -> None:
    env = loaded_env([1, 6, 6, 6, 6, 6, 6, 6, 6, 2], target=50)
    env.step("[roll]")  # player 0 busts at once
    for _ in range(9):
        env.step("[roll]")
    env.step("[hold]")
    assert env.game_state.scores == [0, 50]
    assert env.rewards == {"player_0": -1.0, "player_1": 1.0}


@pytest.mark.parametrize(
    ("banks", "winner", "rewards"),
    [
        ((5, 3, 0, 0), 0, (1.0, -1.0)),
        ((2, 0, 0, 4), 1, (-1.0, 1.0)),
        ((0, 0, 0, 0), NO_WINNER, (0.0, 0.0)),
    ],
)
def test_turn_cap_gives_the_game_to_the_higher_banked_score(
    banks: tuple[int, ...], winner: int, rewards: tuple[float, float]
) -> None:
    env = loaded_env([b for b in banks if b], max_game_turns=4)
    for bank in banks:
        assert not env.game_state.terminal
        if bank:
            env.step("[roll]")
        env.step("[hold]")
    assert all(env.terminations.values()) and not any(env.truncations.values())
    assert (env.rewards["player_0"], env.rewards["player_1"]) == rewards
    info = env.infos["player_0"]
    assert info["winner"] == winner and info["decided_by"] == "turn cap"
    assert info["turns_played"] == 4
    assert env.observe("player_0")["observation"][3] == 1.0


def test_a_bust_counts_as_a_turn_against_the_cap() -> None:
    env = loaded_env([1, 1, 1], max_game_turns=3)
    for _ in range(3):
        env.step("[roll]")
    assert env.game_state.terminal and env.game_state.turns_played == 3 and env.rewards["player_0"] == 0.0


def test_default_turn_cap_ends_the_game_before_the_adapter_limit() -> None:
    env = loaded_env([])
    for _ in range(50):
        env.step("[hold]")
    assert all(env.terminations.values()) and not any(env.truncations.values())
    assert env.infos["player_0"]["decided_by"] == "turn cap"


def test_v1_and_v0_defaults() -> None:
    v1, v0 = spiral_envs.make_game("PigDice-v1"), spiral_envs.make_game("PigDice-v0")
    assert isinstance(v1, PigDice) and isinstance(v0, PigDiceV0)
    assert (v1.id, v1.target, v1.max_game_turns) == ("PigDice-v1", 50, 50)
    assert (v0.id, v0.target, v0.max_game_turns) == ("PigDice-v0", 100, 100)
    assert v1.actions == v0.actions == ("[roll]", "[hold]")
    assert "bank 100 points" in v0.rules(0) and "at most 100 turns" in v0.rules(1)
    assert "bank 50 points" in v1.rules(0)
    assert v1.max_turns >= 10 * v1.max_game_turns and v0.max_turns >= 10 * v0.max_game_turns
    assert PigDiceV0(target=20).target == 20


@pytest.mark.parametrize(
    "kwargs", [{"target": 0}, {"target": 2.5}, {"max_game_turns": 0}, {"max_game_turns": True}]
)
def test_bad_variants_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PigDice(**kwargs)


@pytest.mark.parametrize("game_id", ["PigDice-v1", "PigDice-v0"])
def test_persistent_rollers_finish_by_the_rules_not_the_adapter_cap(game_id: str) -> None:
    env = spiral_envs.env(game_id)
    for seed in range(20):
        env.reset(seed=seed)
        while env.agents and not env.terminations["player_0"]:
            env.step("[hold]" if env.game_state.turn_total >= 25 else "[roll]")
        assert all(env.terminations.values()) and not any(env.truncations.values())


def test_dice_come_from_the_seeded_rng_only() -> None:
    def rolls(seed: int) -> list[str]:
        env = spiral_envs.env("PigDice-v1")
        env.reset(seed=seed)
        for _ in range(30):
            if env.agents and not env.terminations["player_0"]:
                env.step("[roll]")
        return env.game_state.log.view(0).splitlines()

    np.random.seed(123)  # the global RNG must play no part
    first = rolls(7)
    np.random.seed(456)
    assert rolls(7) == first
    assert rolls(8) != first


@pytest.mark.parametrize(
    ("text", "move"),
    [
        ("[roll]", ROLL),
        ("I will [ ROLL ] now", ROLL),
        ("[r]", ROLL),
        ("[Hold]", HOLD),
        ("[h]", HOLD),
        ("[maybe] [hold] [roll]", HOLD),
    ],
)
def test_parse_reads_the_first_move(text: str, move: int) -> None:
    assert PigDice().new_state(np.random.default_rng(0)).parse(text) == Parsed(move)


@pytest.mark.parametrize("text", ["roll", "[rolls]", "[hold it]", "", "[[roll"])
def test_parse_rejects_text_without_a_move(text: str) -> None:
    assert isinstance(PigDice().new_state(np.random.default_rng(0)).parse(text), Invalid)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(max_size=200)
    | st.builds(lambda a, b: f"{a}[{b}]", st.text(max_size=20), st.text(max_size=20))
)
def test_arbitrary_text_never_raises(text: str) -> None:
    state = PigDice().new_state(np.random.default_rng(0))
    assert isinstance(state.parse(text), (Parsed, Invalid))
