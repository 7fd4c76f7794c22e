"""Re-playing recorded games to check everything the results table is built from.

:func:`verify` re-plays a record move by move from its seed and lists every difference: who
sits where (for tournament games), each move's seat, text and invalid flag, that the game is
over after the last move (or still on, for a forfeit, which must then be by the player to
move), the rewards, chips (in games that count them), outcome and how the game ended.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import spiral_envs
from spiral_agents.play import game_seed, over_limit_reason, seating
from spiral_agents.records import SEATS, GameRecord, game_scores, printable


class ReplayMismatch(AssertionError):
    """A record that does not replay as recorded; ``problems`` lists every difference."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def move_action(move: dict[str, Any]) -> Any:
    """What a recorded move submits to the env."""
    if move["action"] is None:
        return spiral_envs.Invalid(move["action_text"])
    if "action_chars" in move:
        return spiral_envs.Invalid(over_limit_reason(move["action_chars"], len(move["action"])))
    return move["action"]


def move_text(move: dict[str, Any]) -> str:
    """A recorded move as text: the action's name, the agent's text, or why it was invalid."""
    return move["action_text"] if "action_text" in move else str(move["action"])


def show_escaped(text: str) -> None:
    """Print ``text`` line by line with control characters escaped."""
    print("\n".join(printable(line) for line in text.split("\n")))


def _seating_problems(record: GameRecord) -> list[str]:
    if not record.pairing:
        return []
    a, b = record.pairing
    if sorted(record.agents.values()) != sorted(record.pairing):
        return [f"the agents {record.agents} are not the pairing {record.pairing}"]
    if record.index is None:
        return []
    problems = []
    expected = seating(a, b, record.index)
    if record.agents != expected:
        problems.append(
            f"game {record.index} of the pairing seats {expected['player_0']!r} as player_0, "
            f"the record seats {record.agents['player_0']!r}"
        )
    if record.tournament_seed is not None:
        try:
            seed = game_seed(record.tournament_seed, record.game, a, b, record.index)
        except ValueError as error:  # a negative tournament seed
            return [*problems, f"no game has tournament seed {record.tournament_seed}: {error}"]
        if seed != record.seed:
            problems.append(f"seed {record.seed} is not the seed of game {record.index} ({seed})")
    return problems


def _over(env: spiral_envs.SpiralAECEnv) -> bool:
    return env.terminations[env.agent_selection] or env.truncations[env.agent_selection]


def _text_problem(move: dict[str, Any], actions: tuple[str, ...] | None) -> str | None:
    action, text = move["action"], move.get("action_text")
    if isinstance(action, int) and actions is not None and 0 <= action < len(actions):
        if text is not None and text != actions[action]:
            return f"action {action} is {actions[action]!r}, the record says {text!r}"
    elif (
        isinstance(action, str)
        and text is not None
        and "action_chars" not in move
        and text != action
    ):
        return f"the text {action!r} is recorded as {text!r}"
    return None


def _ending_problems(record: GameRecord, env: spiral_envs.SpiralAECEnv) -> list[str]:
    problems = []
    if record.ended_by == "forfeit":
        if _over(env):
            return ["the record says forfeit, but the game is over after its last move"]
        if record.moves:
            loser = env.agent_selection
        else:  # before any move: building or resetting either agent may have failed
            loser = next((s for s in SEATS if record.outcome.get(s) == "loss"), env.agent_selection)
        winner = SEATS[1 - SEATS.index(loser)]
        rewards, outcome = {loser: -1.0, winner: 1.0}, {loser: "loss", winner: "win"}
        scores: dict[str, float] = {}
        if not record.error:
            problems.append("the record says forfeit but gives no reason")
    else:
        if not _over(env):
            return [
                f"the game is not over after the last recorded move ({len(record.moves)} moves)"
            ]
        rewards = {seat: float(env._cumulative_rewards[seat]) for seat in SEATS}
        scores = game_scores(env)
        outcome = {seat: env.infos[seat]["outcome"] for seat in SEATS}
        ended_by = env.infos[SEATS[0]]["ended_by"]
        if record.ended_by != ended_by:
            problems.append(f"the game ended by {ended_by!r}, the record says {record.ended_by!r}")
        if record.error is not None:
            problems.append("the record gives an agent error, but nobody forfeited")
    if rewards != record.rewards:
        problems.append(f"replay ended with rewards {rewards}, the record says {record.rewards}")
    if scores != record.scores:
        problems.append(f"replay ended with chips {scores}, the record says {record.scores}")
    if outcome != record.outcome:
        problems.append(f"replay ended with outcome {outcome}, the record says {record.outcome}")
    return problems


def verify(record: GameRecord, *, show: Callable[[str], None] | None = None) -> list[str]:
    """Re-play ``record`` and return every way it differs from the replay (empty: exact).

    ``show`` gets each observation and move as the replay goes, for a turn-by-turn view.
    """
    problems = _seating_problems(record)
    try:
        env = spiral_envs.env(record.game, **record.env_kwargs)
        env.reset(seed=record.seed)
    except Exception as error:  # noqa: BLE001 - a record naming a game or variant that fails
        return [*problems, f"the game cannot be set up: {type(error).__name__}: {error}"]
    actions = env.game.actions
    for number, move in enumerate(record.moves, 1):
        seat = env.agent_selection
        if _over(env):
            problems.append(
                f"the game is over after move {number - 1}, "
                f"the record goes on to move {len(record.moves)}"
            )
            break
        if move["seat"] != seat:
            problems.append(f"move {number}: recorded for {move['seat']}, but {seat} is to move")
            break
        problem = _text_problem(move, actions)
        if problem:
            problems.append(f"move {number}: {problem}")
        if show is not None:
            show(f"--- move {number}: {seat} ({record.agents.get(seat)}) sees ---")
            show(env.observe(seat)["text"])
            show(f">>> plays {move_text(move)!r}\n")
        try:
            env.step(move_action(move))
        except Exception as error:  # noqa: BLE001 - a recorded action the game cannot take
            problems.append(f"move {number}: the game cannot play {move_text(move)!r}: {error}")
            break
        invalid = bool(env.infos[seat].get("invalid_move"))
        if invalid != move["invalid"]:
            said, found = ("invalid", "valid") if move["invalid"] else ("valid", "invalid")
            problems.append(f"move {number}: recorded as {said}, the replay finds it {found}")
    else:
        problems += _ending_problems(record, env)
        if show is not None:
            show(env.observe(SEATS[0])["text"].rsplit("History:\n", 1)[-1])
            show(f"rewards: {record.rewards}")
    return problems


def replay(record: GameRecord, *, show: bool = False) -> GameRecord:
    """Re-play a recorded game move by move; raises :class:`ReplayMismatch` listing every
    difference if it does not end the same way (``show``: print it turn by turn)."""
    problems = verify(record, show=show_escaped if show else None)
    if problems:
        raise ReplayMismatch(problems)
    return record
