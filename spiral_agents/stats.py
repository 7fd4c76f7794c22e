"""Tournament statistics: per-pairing results with Wilson intervals and mean rewards (chips in
Kuhn Poker), Bradley-Terry ratings per game."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from spiral_agents.records import GameRecord

_Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class PairingResult:
    """Results of agent ``a`` against agent ``b`` on one game, from ``a``'s side."""

    game: str
    a: str
    b: str
    games: int = 0
    wins: int = 0
    draws: int = 0
    losses: int = 0
    a_moves: int = 0
    a_invalid: int = 0
    b_moves: int = 0
    b_invalid: int = 0
    turns: int = 0
    errors: int = 0
    reward_sum: float = 0.0
    reward_squares: float = 0.0
    """Sums of ``a``'s result per game (:meth:`GameRecord.result`) and of its square."""

    @property
    def win_rate(self) -> float:
        return self.wins / self.games if self.games else float("nan")

    @property
    def win_interval(self) -> tuple[float, float]:
        return wilson_interval(self.wins, self.games)

    @property
    def mean_reward(self) -> float:
        """``a``'s mean result per game: chips in games that count them, else the reward."""
        return self.reward_sum / self.games if self.games else float("nan")

    @property
    def reward_interval(self) -> tuple[float, float] | None:
        """A normal 95 % interval for :attr:`mean_reward`; ``None`` under two games."""
        if self.games < 2:
            return None
        mean = self.mean_reward
        variance = max(0.0, (self.reward_squares - self.games * mean * mean) / (self.games - 1))
        half = _Z95 * math.sqrt(variance / self.games)
        return (mean - half, mean + half)

    def row(self) -> dict[str, Any]:
        low, high = self.win_interval
        reward = self.reward_interval
        return {
            "game": self.game,
            "agent": self.a,
            "opponent": self.b,
            "games": self.games,
            "wins": self.wins,
            "draws": self.draws,
            "losses": self.losses,
            "win_rate": round(self.win_rate, 4),
            "win_rate_low": round(low, 4),
            "win_rate_high": round(high, 4),
            "mean_reward": round(self.mean_reward, 4),
            "mean_reward_low": None if reward is None else round(reward[0], 4),
            "mean_reward_high": None if reward is None else round(reward[1], 4),
            "invalid_rate": round(self.a_invalid / self.a_moves, 4) if self.a_moves else 0.0,
            "opponent_invalid_rate": round(self.b_invalid / self.b_moves, 4)
            if self.b_moves
            else 0.0,
            "mean_length": round(self.turns / self.games, 2) if self.games else 0.0,
            "errors": self.errors,
        }


def summarize(records: Iterable[GameRecord]) -> list[PairingResult]:
    """Per pairing and game, from the side of the pairing's first agent."""
    results: dict[tuple[str, str, str], PairingResult] = {}
    for record in records:
        specs = record.agents
        a, b = record.pairing or [specs["player_0"], specs["player_1"]]
        result = results.setdefault((record.game, a, b), PairingResult(record.game, a, b))
        seat_a = "player_0" if specs["player_0"] == a else "player_1"
        result.games += 1
        outcome = record.outcome.get(seat_a, "loss")
        result.wins += outcome == "win"
        result.draws += outcome == "draw"
        result.losses += outcome == "loss"
        result.errors += record.error is not None
        result.turns += len(record.moves)
        value = record.result(seat_a)
        result.reward_sum += value
        result.reward_squares += value * value
        for move in record.moves:
            if move["seat"] == seat_a:
                result.a_moves += 1
                result.a_invalid += move["invalid"]
            else:
                result.b_moves += 1
                result.b_invalid += move["invalid"]
    return list(results.values())


def _players(record: GameRecord) -> tuple[str, str] | None:
    a, b = record.agents["player_0"], record.agents["player_1"]
    return None if a == b else (a, b)


def _groups(records: list[GameRecord]) -> list[list[GameRecord]]:
    """``records`` split by the sets of agents linked by games played, directly or through
    other agents (in order of first appearance)."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for record in records:
        players = _players(record)
        if players:
            parent[root(players[0])] = root(players[1])
    groups: dict[str, list[GameRecord]] = {}
    for record in records:
        players = _players(record)
        if players:
            groups.setdefault(root(players[0]), []).append(record)
    return list(groups.values())


def rating_groups(records: Iterable[GameRecord]) -> dict[str, list[dict[str, float]]]:
    """Bradley-Terry ratings (:func:`bradley_terry`) per game, and within a game per group of
    agents linked by games played: ratings compare only agents that met on the same game,
    directly or through others. Game -> its groups, largest first."""
    by_game: dict[str, list[GameRecord]] = {}
    for record in records:
        by_game.setdefault(record.game, []).append(record)
    return {
        game: sorted((bradley_terry(group) for group in _groups(games)), key=len, reverse=True)
        for game, games in by_game.items()
    }


def bradley_terry(records: Iterable[GameRecord], iterations: int = 500) -> dict[str, float]:
    """Bradley-Terry strengths on the Elo scale from the games of one game id, between agents
    all linked by games played (draws count half); ``ValueError`` otherwise, as ratings of
    different games or of agents that never met would not compare (see :func:`rating_groups`).

    Ratings are centred on 0 (mean over agents); a 400-point gap means 10:1 odds.
    Minorisation-maximisation (Hunter 2004), with half a win added to every agent so that
    unbeaten or winless agents keep finite ratings.
    """
    records = list(records)
    games_seen = sorted({record.game for record in records})
    if len(games_seen) > 1:
        raise ValueError(
            f"Bradley-Terry ratings compare agents on one game, not over {', '.join(games_seen)}: "
            "use rating_groups for ratings per game"
        )
    if len(_groups(records)) > 1:
        raise ValueError(
            "these records hold agents that never met, directly or through others: their "
            "ratings would not compare (rating_groups rates each group)"
        )
    wins: dict[str, float] = {}
    games: dict[tuple[str, str], int] = {}
    for record in records:
        players = _players(record)
        if players is None:
            continue
        a, b = players
        for name in players:
            wins.setdefault(name, 0.5)
        score = {"win": 1.0, "draw": 0.5, "loss": 0.0}[record.outcome.get("player_0", "loss")]
        wins[a] += score
        wins[b] += 1 - score
        games[(a, b)] = games.get((a, b), 0) + 1
        games[(b, a)] = games.get((b, a), 0) + 1
    names = sorted(wins)
    if not names:
        return {}
    strength = {name: 1.0 for name in names}
    for _ in range(iterations):
        updated = {}
        for i in names:
            denominator = sum(
                n / (strength[i] + strength[j]) for (x, j), n in games.items() if x == i
            )
            updated[i] = wins[i] / denominator if denominator else strength[i]
        mean_log = sum(math.log(s) for s in updated.values()) / len(updated)
        strength = {k: math.exp(math.log(v) - mean_log) for k, v in updated.items()}
    return {name: 400 * math.log10(strength[name]) for name in names}


def format_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(c) for c in columns]] + [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths)))
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
