"""The end of a run: a learning-curve PNG and a short summary of what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_report(history: list[dict[str, Any]], output_dir: str | Path) -> str:
    """Plot evaluation metrics over steps to ``learning_curve.png``; return the summary text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output = Path(output_dir)
    evals = [h for h in history if "eval/kuhn_exploitability" in h or any(k.endswith("/win_rate") and k.startswith("eval/") for k in h)]
    win_keys = sorted({k for h in evals for k in h if k.startswith("eval/") and k.endswith("/win_rate")})
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = [h["step"] for h in evals]
    if any("eval/kuhn_exploitability" in h for h in evals):
        axes[0].plot(steps, [h.get("eval/kuhn_exploitability") for h in evals], marker="o")
        axes[0].axhline(0.4583, color="grey", linestyle="--", label="uniform random (0.458)")
        axes[0].set_title("Kuhn Poker exploitability of the policy (exact, lower is better)")
        axes[0].set_xlabel("policy step")
        axes[0].legend()
    for key in win_keys:
        rate = [h.get(key) for h in evals]
        low = [h.get(key + "_low") for h in evals]
        high = [h.get(key + "_high") for h in evals]
        label = key.removeprefix("eval/").removesuffix("/win_rate")
        axes[1].plot(steps, rate, marker="o", label=label)
        axes[1].fill_between(steps, low, high, alpha=0.2)
    axes[1].set_title("Win rate with Wilson 95% interval")
    axes[1].set_xlabel("policy step")
    axes[1].set_ylim(0, 1)
    if win_keys:
        axes[1].legend()
    figure.tight_layout()
    figure.savefig(output / "learning_curve.png", dpi=100)
    plt.close(figure)

    lines = [f"Learning curve: {output / 'learning_curve.png'}"]
    if len(evals) >= 2:
        first, last = evals[0], evals[-1]
        if "eval/kuhn_exploitability" in first and "eval/kuhn_exploitability" in last:
            lines.append(
                f"Kuhn Poker exploitability: {first['eval/kuhn_exploitability']:.3f} at step "
                f"{first['step']} -> {last['eval/kuhn_exploitability']:.3f} at step {last['step']} "
                "(exact; uniform random play is 0.458, equilibrium 0)"
            )
        for key in win_keys:
            if key in first and key in last:
                lines.append(
                    f"{key.removeprefix('eval/').removesuffix('/win_rate')}: win rate "
                    f"{first[key]:.3f} [{first[key + '_low']:.3f}, {first[key + '_high']:.3f}] -> "
                    f"{last[key]:.3f} [{last[key + '_low']:.3f}, {last[key + '_high']:.3f}]"
                )
    return "\n".join(lines)
