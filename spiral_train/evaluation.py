"""What the controller reports of a run's evaluation: win rates against fixed opponents (Wilson
95 % intervals) and mean rewards, per game and opponent, from the evaluation games' records.
The games themselves run on generator 0 (:meth:`spiral_train.workers.GeneratorWorker.
evaluation_games`), the exact Kuhn exploitability on the learner ranks."""

from __future__ import annotations

from collections.abc import Sequence

from spiral_agents.arena import GameRecord, summarize


def game_metrics(records: Sequence[GameRecord]) -> dict[str, float]:
    """``eval/<game>/vs_<opponent>/...`` metrics of the policy's evaluation games."""
    metrics: dict[str, float] = {}
    for result in summarize(list(records)):
        low, high = result.win_interval
        prefix = f"eval/{result.game}/vs_{result.b}/"
        metrics[prefix + "win_rate"] = result.win_rate
        metrics[prefix + "win_rate_low"] = low
        metrics[prefix + "win_rate_high"] = high
        metrics[prefix + "non_loss_rate"] = (result.wins + result.draws) / result.games
        metrics[prefix + "invalid_rate"] = result.a_invalid / max(result.a_moves, 1)
        metrics[prefix + "mean_reward"] = result.mean_reward  # chips in Kuhn Poker
        if result.reward_interval is not None:
            metrics[prefix + "mean_reward_low"], metrics[prefix + "mean_reward_high"] = result.reward_interval
    return metrics
