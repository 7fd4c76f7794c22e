"""Kuhn Poker rules: chip accounting against standard Kuhn poker, multi-hand play, hidden cards."""

from __future__ import annotations

import itertools

import numpy as np
import pettingzoo
import pytest

import spiral_envs
from spiral_envs.games.kuhn_poker import ACTION_NAMES

SEQUENCES = ["cc", "bc", "bf", "cbc", "cbf"]
LETTER = {"c": None, "b": "[bet]", "f": "[fold]"}


def standard_payoff(opener_card: int, other_card: int, sequence: str) -> int:
    """Chips the opener wins in standard (single-hand) Kuhn poker with ante 1."""
    higher = 1 if opener_card > other_card else -1
    return {"cc": higher, "bc": 2 * higher, "bf": 1, "cbc": 2 * higher, "cbf": -1}[sequence]


def action_texts(sequence: str) -> list[str]:
    texts = []
    for i, letter in enumerate(sequence):
        if letter == "c":  # check, or call when facing a bet
            texts.append("[call]" if i > 0 and sequence[i - 1] == "b" else "[check]")
        else:
            texts.append(LETTER[letter])
    return texts


@pytest.mark.parametrize("deal", list(itertools.permutations(range(3), 2)))
@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize("first_opener", [0, 1])
def test_chip_payoffs_match_standard_kuhn(deal: tuple[int, int], sequence: str, first_opener: int) -> None:
    env = pettingzoo.make("aec", "spiral/KuhnPoker-v1", rounds=1, first_opener=first_opener)
    env.reset(seed=0)
    env.game_state.cards = list(deal)  # cards[player]
    assert env.agent_selection == f"player_{first_opener}"
    for text in action_texts(sequence):
        env.step(text)
    opener, other = first_opener, 1 - first_opener
    expected = standard_payoff(deal[opener], deal[other], sequence)
    chips = env.infos["player_0"]["chips"]
    assert chips[opener] == expected and chips[other] == -expected
    sign = np.sign(expected)
    assert env.rewards[f"player_{opener}"] == sign and env.rewards[f"player_{other}"] == -sign
    assert all(env.terminations.values())


def test_bets_and_calls_go_into_the_pot() -> None:
    env = spiral_envs.env("KuhnPoker-v1", rounds=1, ante=2)
    env.reset(seed=0)
    assert "Pot: 4 chips" in env.observe("player_1")["text"]
    env.step("[check]")
    env.step("[bet]")
    assert "Pot: 5 chips" in env.observe("player_1")["text"]
    env.step("[call]")
    assert env.infos["player_0"]["rounds"][0]["pot"] == 6
    assert sorted(env.infos["player_0"]["chips"]) == [-3, 3]


def test_five_rounds_alternate_opener_and_chip_leader_wins() -> None:
    env = spiral_envs.env("KuhnPoker-v1")
    env.reset(seed=0)
    openers = []
    # Hands 1-4: the opener bets and the other folds (opener +1 each); hand 5: bet/call.
    for hand in range(5):
        openers.append(env.agent_selection)
        if hand < 4:
            env.step("[bet]")
            env.step("[fold]")
    env.game_state.cards = [0, 2] if openers[4] == "player_0" else [2, 0]  # the hand-5 opener loses
    env.step("[bet]")
    env.step("[call]")
    assert openers == ["player_1", "player_0", "player_1", "player_0", "player_1"]
    info = env.infos["player_0"]
    assert len(info["rounds"]) == 5
    # Hands 1-4 cancel out (each player wins the two it opened); hand 5 gives player_0 +2.
    assert info["chips"] == [2, -2]
    assert [r["chip_change"][0] for r in info["rounds"]] == [-1, 1, -1, 1, 2]
    assert env.rewards == {"player_0": 1.0, "player_1": -1.0}
    assert info["rounds"][4]["winner"] == 0


def test_chip_leader_wins_even_if_last_hand_is_lost() -> None:
    env = spiral_envs.env("KuhnPoker-v1", rounds=2, first_opener=0)
    env.reset(seed=0)
    env.game_state.cards = [2, 0]
    env.step("[bet]")
    env.step("[call]")  # player_0 +2
    env.step("[bet]")  # player_1 opens hand 2 and bets
    env.step("[fold]")  # player_0 folds: -1, last hand lost
    assert env.infos["player_0"]["chips"] == [1, -1]
    assert env.rewards == {"player_0": 1.0, "player_1": -1.0}


def test_equal_chips_is_a_draw() -> None:
    env = spiral_envs.env("KuhnPoker-v1", rounds=2, first_opener=0)
    env.reset(seed=0)
    env.step("[bet]")
    env.step("[fold]")  # player_0 +1
    env.step("[bet]")
    env.step("[fold]")  # player_1 +1
    assert env.rewards == {"player_0": 0.0, "player_1": 0.0}
    assert env.infos["player_0"]["outcome"] == "draw"


def test_legal_moves_follow_the_betting_tree() -> None:
    env = spiral_envs.env("KuhnPoker-v1", rounds=1)
    env.reset(seed=0)
    mask = lambda: env.observe(env.agent_selection)["action_mask"].tolist()
    assert mask() == [1, 1, 0, 0]
    env.step("[check]")
    assert mask() == [1, 1, 0, 0]
    env.step("[bet]")
    assert mask() == [0, 0, 1, 1]
    env.step("[fold]")
    assert all(env.terminations.values())


def test_opening_fold_is_invalid() -> None:
    env = spiral_envs.env("KuhnPoker-v1")
    env.reset(seed=0)
    env.step("I fold [fold]")
    assert env.infos["player_1"]["invalid_move"]
    assert "not a legal move" in env.infos["player_1"]["reason"]


def test_actions_are_case_insensitive() -> None:
    env = spiral_envs.env("KuhnPoker-v1", rounds=1)
    env.reset(seed=0)
    env.step("[ BET ]")
    env.step("[Call]")
    assert all(env.terminations.values())


@pytest.mark.parametrize("seed", range(40))
def test_opponent_card_never_leaks_before_showdown(seed: int) -> None:
    env = spiral_envs.env("KuhnPoker-v1")
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    while env.agents and not any(env.terminations.values()):
        for player in (0, 1):
            obs = env.observe(f"player_{player}")
            own = env.game_state.cards[player]
            assert obs["observation"][:3].tolist() == [float(c == own) for c in range(3)]
            hand = env.game_state.round
            current_hand_text = obs["text"].split(f"Hand {hand} of")[-1]
            assert f"is {'JQK'[env.game_state.cards[1 - player]]}." not in current_hand_text
        env.step(env.game_state.random_move(rng))


def test_bad_variants_are_rejected() -> None:
    for kwargs in ({"rounds": 0}, {"ante": 0}, {"first_opener": 2}, {"rounds": "5"}):
        with pytest.raises(ValueError):
            spiral_envs.env("KuhnPoker-v1", **kwargs)


def test_action_names_are_the_protocol() -> None:
    assert ACTION_NAMES == ("[check]", "[bet]", "[call]", "[fold]")


@pytest.mark.parametrize("deal", list(itertools.permutations(range(3), 2)))
@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize("ante", [1, 2])
def test_the_chips_reward_is_the_chips_won_over_the_most_a_player_can_win(deal: tuple[int, int], sequence: str, ante: int) -> None:
    env = spiral_envs.env("KuhnPoker-v1", rounds=1, ante=ante, reward="chips")
    env.reset(seed=0)
    env.game_state.cards = list(deal)
    for text in action_texts(sequence):
        env.step(text)
    chips = env.infos["player_0"]["chips"]
    assert chips[0] == -chips[1] != 0
    assert env.rewards == {"player_0": chips[0] / (ante + 1), "player_1": chips[1] / (ante + 1)}
    assert all(abs(r) <= 1 for r in env.rewards.values())
    outcome = "win" if chips[0] > 0 else "loss"
    assert env.infos["player_0"]["outcome"] == outcome  # who won is still who has more chips


def test_the_chips_reward_over_several_hands_and_its_rules_line() -> None:
    env = spiral_envs.env("KuhnPoker-v1", rounds=3, reward="chips")
    env.reset(seed=4)
    rng = np.random.default_rng(0)
    while not all(env.terminations.values()):
        env.step(env.game_state.random_move(rng))
    chips = env.infos["player_0"]["chips"]
    assert env.rewards["player_0"] == pytest.approx(chips[0] / 6) and sum(env.rewards.values()) == 0
    env.reset(seed=4)
    text = env.observe(env.agent_selection)["text"]
    assert "every chip counts" in text and "wins the game" not in text
    default = spiral_envs.env("KuhnPoker-v1", rounds=3)
    default.reset(seed=4)
    assert "Whoever has won more chips after the last hand wins the game" in default.observe(default.agent_selection)["text"]


def test_an_unknown_reward_is_refused() -> None:
    with pytest.raises(ValueError, match="reward must be one of"):
        spiral_envs.env("KuhnPoker-v1", reward="money")
