"""Pig Dice agents: the classic hold-at-20 rule and the policy that maximises the chance to win.

Both read the position from the numeric observation ``[my banked, opponent banked, turn
total, turns played]``. The first three are integers divided by the target (and clipped at 1),
the last is completed turns divided by the game's turn cap, so multiplying back and rounding
recovers the exact integers (:func:`read_position`). A clipped turn total reads as the target,
which is all the agents need: holding it wins at once.

The optimal policy includes the game's turn cap. With ``t`` turns left (both players' turns
together, the current one included) the value of a position depends only on the values with
``t - 1`` turns left once the turn ends, so the table is solved exactly by backward induction,
one sweep per turn: value iteration run for exactly the number of turns the game can last.
When a sweep no longer changes any value (the cap is too far away to matter), the remaining
sweeps are skipped and the last table stands for every longer horizon; with a long cap this is
the uncapped optimum of Neller and Presser (2004), under which the first player of a 100-point
game wins with probability 0.5306.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from typing import cast

import numpy as np

import spiral_envs
from spiral_agents.base import Observation
from spiral_envs.games.pig_dice import HOLD, ROLL, PigDice

GAME_IDS = ("PigDice-v1", "PigDice-v0")
CONVERGED = 1e-13
"""A sweep that changes no value by more than this ends the backward induction early."""


@dataclass(frozen=True)
class Position:
    """One decision point, in exact integers."""

    my_score: int
    opponent_score: int
    turn_total: int
    turns_played: int | None
    """``None`` where the turn cap was not decoded."""


def read_variant(game: str | None, target: int | None, max_game_turns: int | None) -> PigDice:
    """The Pig Dice variant an agent plays: ``game`` (default PigDice-v1) with any overrides."""
    game_id = (game or GAME_IDS[0]).removeprefix("spiral/")
    if game_id not in GAME_IDS:
        raise ValueError(f"Pig Dice agents play {', '.join(GAME_IDS)}, not {game}")
    overrides = {
        name: value
        for name, value in (("target", target), ("max_game_turns", max_game_turns))
        if value is not None
    }
    return cast(PigDice, spiral_envs.make_game(game_id, **overrides))  # validates overrides


def read_position(observation: Observation, variant: PigDice, with_turns: bool = True) -> Position:
    """The exact position of a Pig Dice observation: each entry times its scale, rounded.

    Raises ``ValueError`` when the values are not whole multiples of ``1 / target`` (and of
    ``1 / max_game_turns`` when ``with_turns``): an observation from another variant; or
    off-turn.
    """
    mask = observation.get("action_mask")
    if mask is not None and not any(mask):
        raise ValueError("no legal action: the agent was asked to act off-turn")
    array = np.asarray(observation["observation"], dtype=np.float64)
    if array.shape != (4,):
        raise ValueError(f"not a Pig Dice observation: shape {array.shape}, expected (4,)")
    values = array.tolist()
    target, turns = variant.target, variant.max_game_turns
    scales = (target, target, target, turns) if with_turns else (target, target, target)
    scaled = [v * scale for v, scale in zip(values, scales)]
    exact = [round(x) for x in scaled]
    if any(abs(x - e) > 1e-3 for x, e in zip(scaled, exact)) or max(exact[:2]) >= target:
        turn_cap = f" and {turns} turns" if with_turns else ""
        raise ValueError(
            f"observation {values} does not fit Pig Dice with target {target}{turn_cap}; "
            "pass the variant played"
        )
    return Position(*exact, *([] if with_turns else [None]))


class HoldAtAgent:
    """Rolls until the turn total reaches ``threshold`` (default 20), then holds; also holds
    as soon as holding reaches the target, which wins at once.

    Options: ``threshold`` (a positive int); ``target`` overrides the game's target (pass the
    variant the env was built with). The turn cap is ignored.
    """

    name = "hold-at-20"

    def __init__(
        self,
        game: str | None = None,
        seed: int | None = None,
        threshold: int = 20,
        target: int | None = None,
    ) -> None:
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
            raise ValueError(f"threshold must be a positive int, got {threshold!r}")
        self.threshold = threshold
        self.variant = read_variant(game, target, None)
        self.rng = np.random.default_rng(seed)

    def act(self, observation: Observation) -> int:
        position = read_position(observation, self.variant, with_turns=False)
        banked = position.my_score + position.turn_total
        if position.turn_total >= self.threshold or banked >= self.variant.target:
            return HOLD
        return ROLL

    def action_probabilities(self, observation: Observation) -> np.ndarray:
        probabilities = np.zeros(2)
        probabilities[self.act(observation)] = 1.0
        return probabilities


class PigSolution:
    """Optimal values of Pig Dice with a given target and turn cap.

    ``start_values[t][i, j]`` is the probability that the player to move wins (a draw at the
    cap counting one half, so that the opponent's value is one minus the mover's) with scores
    ``i`` (own) and ``j`` (opponent's), a turn total of 0 and ``t`` turns left, under optimal
    play by both. Horizons beyond the last row (the values converged) share the last row.
    """

    def __init__(self, target: int, max_game_turns: int) -> None:
        self.target = target
        self.max_game_turns = max_game_turns
        n = target
        scores = np.arange(n)
        # no turn left: the higher banked score wins, equal scores draw
        rows = [(np.sign(np.subtract.outer(scores, scores)) + 1.0) / 2]
        for _ in range(max_game_turns):
            # after[i, j]: the mover's value once its turn ends with banked i against j
            # (the opponent to move, one turn fewer left); 1 from the target on
            after = np.ones((2 * n, n))
            after[:n] = 1.0 - rows[-1].T
            bust = after[:n]
            ahead = [np.ones((n, n))] * 6  # values at turn totals k+1..k+6
            for k in range(n - 1, -1, -1):
                roll = (bust + sum(ahead[1:])) / 6
                # holding 0 just passes, which rolling never does worse than: a 1 does the same
                value = np.maximum(after[k : k + n], roll) if k else roll
                ahead = [value, *ahead[:5]]
            rows.append(value)
            if np.abs(rows[-1] - rows[-2]).max() < CONVERGED:
                break
        self.start_values = np.stack(rows)

    def turn_values(self, my_score: int, opponent_score: int, turns_left: int) -> np.ndarray:
        """``(hold, roll)`` values (columns) of every turn total ``0..target - my_score - 1``
        (rows), with ``turns_left`` turns left, the current one included."""
        scores_valid = 0 <= my_score < self.target and 0 <= opponent_score < self.target
        if turns_left < 1 or not scores_valid:
            raise ValueError(f"no decision at {my_score} to {opponent_score}, {turns_left} left")
        return _turn_values(self, my_score, opponent_score, turns_left)

    def win_probability(self, position: Position) -> float:
        """Value of a position for the player to move, under optimal play by both."""
        i, j, k = position.my_score, position.opponent_score, position.turn_total
        if position.turns_played is None:
            raise ValueError("the value depends on the turns played; decode them too")
        if i + k >= self.target:
            return 1.0
        turns_left = self.max_game_turns - position.turns_played
        return float(self.turn_values(i, j, turns_left)[k].max())


@lru_cache(maxsize=10_000)
def _turn_values(solution: PigSolution, i: int, j: int, turns_left: int) -> np.ndarray:
    rows = solution.start_values
    opponent_next = rows[min(turns_left, len(rows)) - 1][j]  # the opponent to move, j vs i'
    room = solution.target - i  # from a turn total of room on, holding wins
    values = np.empty((room, 2))
    ahead = [1.0] * 6
    for k in range(room - 1, -1, -1):
        hold = 1.0 - opponent_next[i + k]
        roll = (1.0 - opponent_next[i] + sum(ahead[1:])) / 6
        values[k] = hold, roll
        ahead = [max(hold, roll) if k else roll, *ahead[:5]]
    values.flags.writeable = False  # shared through the cache
    return values


@cache
def solve(target: int, max_game_turns: int) -> PigSolution:
    """The optimal-play table for one variant, computed once per process."""
    return PigSolution(target, max_game_turns)


class PigOptimalAgent:
    """Maximises the probability of winning (a draw at the turn cap counting one half).

    Options: ``target`` and ``max_game_turns`` override the game's (pass the variant the env
    was built with). The table (:class:`PigSolution`) is solved on first use and cached per
    variant: about 0.1 s for PigDice-v1, under a second for PigDice-v0. Rolls when rolling is
    strictly better than holding, and always at a turn total of 0; the policy is deterministic.
    """

    name = "pig-optimal"

    def __init__(
        self,
        game: str | None = None,
        seed: int | None = None,
        target: int | None = None,
        max_game_turns: int | None = None,
    ) -> None:
        self.variant = read_variant(game, target, max_game_turns)
        self.solution = solve(self.variant.target, self.variant.max_game_turns)
        self.rng = np.random.default_rng(seed)

    def act(self, observation: Observation) -> int:
        position = read_position(observation, self.variant)
        i, j, k = position.my_score, position.opponent_score, position.turn_total
        if i + k >= self.variant.target:
            return HOLD
        if k == 0:
            return ROLL
        turns_left = self.variant.max_game_turns - cast(int, position.turns_played)
        hold, roll = self.solution.turn_values(i, j, turns_left)[k]
        return ROLL if roll > hold else HOLD

    def action_probabilities(self, observation: Observation) -> np.ndarray:
        probabilities = np.zeros(2)
        probabilities[self.act(observation)] = 1.0
        return probabilities
