"""Built-in agents and exact evaluation: each claim is checked, not sampled where it can be proved."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import spiral_agents
import spiral_envs
from spiral_agents import KuhnNashAgent, MinimaxAgent, RandomAgent, make_agent
from spiral_agents.exact import (
    _opener_value,
    kuhn_exploitability,
    kuhn_policy,
    tictactoe_optimal_move_share,
)
from spiral_agents.tictactoe import (
    board_from_observation,
    optimal_moves,
    position_value,
    reachable_positions,
)


def test_tictactoe_table_covers_all_5478_positions_and_the_game_is_a_draw() -> None:
    assert len(reachable_positions()) == 5478
    assert position_value((0,) * 9) == 0


@pytest.mark.parametrize("seat", ["player_0", "player_1"])
def test_minimax_never_loses_against_any_move_sequence(seat: str) -> None:
    """Exhaustive: every opponent move and every optimal choice of the agent, to the end."""
    env = spiral_envs.env("TicTacToe-v0")
    env.reset(seed=0)
    outcomes = {"win": 0, "draw": 0, "loss": 0}

    def explore(node: spiral_envs.SpiralAECEnv) -> None:
        if any(node.terminations.values()):
            outcomes[node.infos[seat]["outcome"]] += 1
            return
        observation = node.observe(node.agent_selection)
        if node.agent_selection == seat:
            moves = optimal_moves(board_from_observation(observation))
        else:
            moves = np.flatnonzero(observation["action_mask"]).tolist()
        for move in moves:
            child = copy.deepcopy(node)
            child.step(move)
            explore(child)

    explore(env)
    assert outcomes["loss"] == 0
    assert outcomes["win"] > 0 and outcomes["draw"] > 0


def test_minimax_agent_plays_only_optimal_moves() -> None:
    result = tictactoe_optimal_move_share(MinimaxAgent(seed=1), games=60, seed=3)
    assert result["optimal_share"] == 1.0 and result["moves"] > 100
    random_share = tictactoe_optimal_move_share(RandomAgent(seed=1), games=60, seed=3)
    assert 0.3 < random_share["optimal_share"] < 0.9


def test_optimal_move_share_scores_text_and_invalid_moves_as_llm_agents_write_them() -> None:
    minimax = MinimaxAgent(seed=1)

    def as_text(observation: dict) -> str:  # the optimal move, written as an LLM would
        return f"I take {spiral_envs.make_game('TicTacToe-v0').actions[minimax.act(observation)]}"

    assert tictactoe_optimal_move_share(as_text, games=10)["optimal_share"] == 1.0
    invalid = tictactoe_optimal_move_share(lambda o: spiral_envs.Invalid("no answer"), games=4)
    assert invalid == {"optimal_share": 0.0, "moves": 4}  # an invalid move ends the game


@pytest.mark.parametrize("alpha", [0.0, 0.1, 1 / 6, 1 / 3])
def test_kuhn_equilibrium_value_is_minus_one_eighteenth_for_the_first_actor(alpha: float) -> None:
    policy = kuhn_policy(KuhnNashAgent(alpha=alpha))
    assert _opener_value(policy.__getitem__) == pytest.approx(-1 / 18, abs=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.05, 1 / 6, 0.3, 1 / 3])
def test_equilibrium_family_has_zero_exploitability(alpha: float) -> None:
    assert kuhn_exploitability(KuhnNashAgent(alpha=alpha)) == pytest.approx(0.0, abs=1e-12)


def test_uniform_random_exploitability() -> None:
    assert kuhn_exploitability(RandomAgent()) == pytest.approx(0.4583333333333333, abs=1e-12)


def test_exploitability_of_a_deterministic_policy_is_positive() -> None:
    class AlwaysBet:
        def action_probabilities(self, observation: dict) -> np.ndarray:
            mask = observation["action_mask"].astype(float)
            p = np.zeros(4)
            p[1 if mask[1] else 2] = 1.0  # bet, else call
            return p

        def act(self, observation: dict) -> int:
            return int(np.argmax(self.action_probabilities(observation)))

    assert kuhn_exploitability(AlwaysBet()) > 0.3


class TextReader:
    """Bets, or calls, exactly when its text says it holds the K: a policy read from the text
    alone, as an LLM's is; it records the texts it was shown."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def action_probabilities(self, observation: dict) -> np.ndarray:
        self.texts.append(observation["text"])
        strong = "Your card: K." in observation["text"]
        p = np.zeros(4)
        if observation["action_mask"][1]:
            p[1 if strong else 0] = 1.0  # bet with the K, else check
        else:
            p[2 if strong else 3] = 1.0  # call with the K, else fold
        return p

    def act(self, observation: dict) -> int:
        return int(np.argmax(self.action_probabilities(observation)))


@pytest.mark.parametrize("first_opener", [0, 1])
@pytest.mark.parametrize("brief", [False, True])
def test_the_policy_is_read_on_the_texts_the_agent_plays(first_opener: int, brief: bool) -> None:
    reader = TextReader()
    policy = kuhn_policy(reader, {"first_opener": first_opener, "brief_text": brief, "reward": "chips"})
    assert len(reader.texts) == 12
    openings = [t for t in reader.texts if "Betting this hand: none yet" in t]
    assert len(openings) == 3
    if brief:
        assert not any("History:" in t or "Kuhn Poker" in t for t in reader.texts)
    else:
        assert all(f"You are Player {first_opener} " in t for t in openings)
        assert all(f"Player {first_opener} opens the first hand" in t for t in reader.texts)
    for card in range(3):  # every information set got the answer for its own card
        assert policy[(True, card, ())][1] == (card == 2)
        assert policy[(False, card, (1,))][2] == (card == 2)
    default, player_1 = kuhn_policy(TextReader()), kuhn_policy(TextReader(), {"first_opener": 1})
    assert all((default[key] == player_1[key]).all() for key in default)  # the env's default: Player 1 opens


def test_exploitability_rejects_mass_on_illegal_actions() -> None:
    class Broken:
        def action_probabilities(self, observation: dict) -> np.ndarray:
            return np.full(4, 0.25)

        def act(self, observation: dict) -> int:
            return 0

    with pytest.raises(ValueError, match="legal mask"):
        kuhn_exploitability(Broken())


def test_kuhn_nash_agent_validates_alpha() -> None:
    with pytest.raises(ValueError):
        KuhnNashAgent(alpha=0.5)


def test_random_agent_plays_free_text_games_legally_most_of_the_time() -> None:
    env = spiral_envs.env("SimpleNegotiation-v1")
    agent = RandomAgent("SimpleNegotiation-v1", seed=0)
    invalid = moves = 0
    for seed in range(30):
        env.reset(seed=seed)
        while not any(env.terminations.values()):
            seat = env.agent_selection
            env.step(agent.act(env.observe(seat)))
            moves += 1
            invalid += bool(env.infos[seat].get("invalid_move"))
    assert moves > 100 and invalid / moves < 0.2


def test_registry_names_specs_and_third_party_agents() -> None:
    assert {"random", "minimax", "kuhn-nash"} <= set(spiral_agents.AGENTS)
    agent = make_agent("kuhn-nash@alpha=0.25", "KuhnPoker-v1", seed=0)
    assert agent.alpha == 0.25
    third_party = make_agent("spiral_agents.tictactoe:MinimaxAgent@seed=3", "TicTacToe-v0")
    assert isinstance(third_party, MinimaxAgent)
    function_agent = make_agent("tests.test_agents:first_legal", "TicTacToe-v0")
    assert function_agent.act({"action_mask": np.array([0, 0, 1])}) == 2
    with pytest.raises(KeyError, match="built-in agents"):
        make_agent("grandmaster", "TicTacToe-v0")
    with pytest.raises(ValueError, match="plays TicTacToe-v0"):
        make_agent("minimax", "KuhnPoker-v1")
    with pytest.raises(ValueError, match="key=value"):
        make_agent("random@oops", "TicTacToe-v0")


def first_legal(observation: dict) -> int:
    """A third-party agent as a plain function."""
    return int(np.flatnonzero(observation["action_mask"])[0])


def test_act_batch_falls_back_to_act() -> None:
    observations = [{"action_mask": np.array([1, 0])}, {"action_mask": np.array([0, 1])}]
    agent = spiral_agents.as_agent(first_legal)
    assert spiral_agents.act_batch(agent, observations) == [0, 1]
    with pytest.raises(TypeError):
        spiral_agents.as_agent(42)
