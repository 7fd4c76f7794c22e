"""The end of a run: a learning-curve PNG and a short summary of what changed.

Four panels over policy steps: the exact Kuhn Poker exploitability (the policy's, and where
the run logs them, its pool's average and the average of every snapshot taken), the win rates against
the evaluation opponents with their Wilson 95 % intervals, the invalid-move rate of the
self-play turns, and each role's mean return in self-play.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

UNIFORM_RANDOM_EXPLOITABILITY = 0.4583
"""Exploitability of uniformly random play in single-hand Kuhn Poker (11/24 chips per hand)."""

CARD_BLIND_EXPLOITABILITY = 1 / 3
"""The least exploitability of a Kuhn Poker policy that ignores its card, in chips per hand
(always bet and call is one; found by a grid search over the four card-blind probabilities)."""

EXPLOITABILITY_LINES = {
    "eval/kuhn_exploitability": "policy",
    "eval/kuhn_exploitability_population": "pool average",
    "eval/kuhn_exploitability_average": "average of every snapshot",
}
"""The exploitability metrics plotted, and their labels."""

ROLE_RETURN = re.compile(r"^(?!eval/)(?P<game>.+)/role(?P<role>\d+)/return$")


def write_report(history: list[dict[str, Any]], output_dir: str | Path) -> str:
    """Plot the run's curves to ``learning_curve.png`` in ``output_dir``; return the summary
    text."""
    import matplotlib.pyplot as plt

    output = Path(output_dir)
    figure = learning_curves(history)
    figure.savefig(output / "learning_curve.png", dpi=100)
    plt.close(figure)
    return summary(history, output / "learning_curve.png")


def learning_curves(history: list[dict[str, Any]]) -> Figure:
    """The four panels of a run's history (records ``{"step": n, **metrics}``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals, training = _split(history)
    win_keys = sorted({k for h in evals for k in h if _is_win_rate(k)})
    return_keys = sorted({k for h in training for k in h if ROLE_RETURN.match(k)})
    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    exploitability, win_rate, invalid, returns = axes.flat

    for key, label in EXPLOITABILITY_LINES.items():
        points = [(h["step"], h[key]) for h in evals if key in h]
        if points:
            exploitability.plot(*zip(*points), marker="o", label=label)
    exploitability.axhline(UNIFORM_RANDOM_EXPLOITABILITY, color="grey", linestyle="--", label="uniform random (0.458)")
    exploitability.axhline(CARD_BLIND_EXPLOITABILITY, color="grey", linestyle="-.", label="best card-blind play (0.333)")
    exploitability.axhline(0.0, color="black", linestyle=":", label="equilibrium (0)")
    exploitability.set_title("Kuhn Poker exploitability (exact, lower is better)")
    exploitability.set_ylabel("exploitability (chips per hand)")
    exploitability.legend(loc="lower left")

    for key in win_keys:
        rows = [h for h in evals if key in h]
        steps = [h["step"] for h in rows]
        label = key.removeprefix("eval/").removesuffix("/win_rate")
        win_rate.plot(steps, [h[key] for h in rows], marker="o", label=label)
        win_rate.fill_between(steps, [h[key + "_low"] for h in rows], [h[key + "_high"] for h in rows], alpha=0.2)
    win_rate.set_title("Win rate against fixed opponents, Wilson 95 % interval")
    win_rate.set_ylabel("win rate (share of games)")
    win_rate.set_ylim(0, 1)
    if win_keys:
        win_rate.legend()

    invalid.plot([h["step"] for h in training], [h["invalid_rate"] for h in training], label="self-play")
    invalid.set_title("Invalid moves in self-play")
    invalid.set_ylabel("invalid-move rate (share of turns)")
    invalid.set_ylim(0, 1)

    for key in return_keys:
        rows = [h for h in training if key in h]
        match = ROLE_RETURN.match(key)
        returns.plot([h["step"] for h in rows], [h[key] for h in rows], label=f"{match['game']} role {match['role']}")
    returns.axhline(0.0, color="black", linestyle=":", linewidth=0.8)
    returns.set_title("Mean return per role in self-play")
    returns.set_ylabel("return per game (the env's reward)")
    if return_keys:
        returns.legend()

    for axis in axes.flat:
        axis.set_xlabel("policy step")
    figure.tight_layout()
    return figure


def summary(history: list[dict[str, Any]], picture: Path) -> str:
    """What changed from the first evaluation (and training step) to the last."""
    evals, training = _split(history)
    win_keys = sorted({k for h in evals for k in h if _is_win_rate(k)})
    lines = [f"Learning curve: {picture}"]
    for key, label in EXPLOITABILITY_LINES.items():
        rows = [h for h in evals if key in h]
        if len(rows) >= 2:
            lines.append(
                f"Kuhn Poker exploitability ({label}): {rows[0][key]:.3f} at step {rows[0]['step']} -> "
                f"{rows[-1][key]:.3f} at step {rows[-1]['step']} (exact, chips per hand; uniform "
                "random play is 0.458, equilibrium 0)"
            )
    for key in win_keys:
        rows = [h for h in evals if key in h]
        if len(rows) >= 2:
            first, last = rows[0], rows[-1]
            lines.append(
                f"{key.removeprefix('eval/').removesuffix('/win_rate')}: win rate "
                f"{first[key]:.3f} [{first[key + '_low']:.3f}, {first[key + '_high']:.3f}] -> "
                f"{last[key]:.3f} [{last[key + '_low']:.3f}, {last[key + '_high']:.3f}]"
            )
    if training:
        first, last = training[0], training[-1]
        lines.append(
            f"Invalid-move rate in self-play: {first['invalid_rate']:.3f} at step {first['step']} -> "
            f"{last['invalid_rate']:.3f} at step {last['step']}"
        )
    return "\n".join(lines)


def _split(history: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The evaluation records and the training-step records of ``history``."""
    evals = [h for h in history if any(k in h for k in EXPLOITABILITY_LINES) or any(_is_win_rate(k) for k in h)]
    return evals, [h for h in history if "invalid_rate" in h]


def _is_win_rate(key: str) -> bool:
    return key.startswith("eval/") and key.endswith("/win_rate")
