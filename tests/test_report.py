"""The end-of-run report: its four panels and its summary, from a synthetic history."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from spiral_train.report import learning_curves, write_report

WIN = "eval/KuhnPoker-v1/vs_random/win_rate"


def _history(population: bool) -> list[dict[str, float]]:
    """Ten training steps, evaluated at steps 0, 5 and 10 (as the trainer records them)."""
    history: list[dict[str, float]] = []
    for step in range(11):
        record: dict[str, float] = {"step": step}
        if step:
            record.update(
                {
                    "invalid_rate": 0.5 / step,
                    "KuhnPoker-v1/role0/return": 0.1 * step,
                    "KuhnPoker-v1/role1/return": -0.1 * step,
                    "KuhnPoker-v1/role0/baseline": 0.05,
                }
            )
        if step % 5 == 0:
            record.update({"eval/kuhn_exploitability": 0.4 - 0.02 * step, WIN: 0.5, WIN + "_low": 0.4, WIN + "_high": 0.6})
            if population:
                record["eval/kuhn_exploitability_population"] = 0.3 - 0.01 * step
                record["eval/kuhn_exploitability_average"] = 0.2 - 0.01 * step
        history.append(record)
    return history


def _lines(axis: plt.Axes) -> dict[str, tuple[list[float], list[float]]]:
    """Each plotted line of ``axis`` by label: its x and y values."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in axis.get_lines()}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_panels_have_units_reference_lines_and_every_curve() -> None:
    exploitability, win_rate, invalid, returns = learning_curves(_history(population=True)).axes

    assert exploitability.get_ylabel() == "exploitability (chips per hand)"
    lines = _lines(exploitability)
    assert lines["policy"] == ([0, 5, 10], pytest.approx([0.4, 0.3, 0.2]))
    assert lines["pool average"] == ([0, 5, 10], pytest.approx([0.3, 0.25, 0.2]))
    assert lines["average of every snapshot"] == ([0, 5, 10], pytest.approx([0.2, 0.15, 0.1]))
    assert set(lines["uniform random (0.458)"][1]) == {0.4583}
    assert set(lines["equilibrium (0)"][1]) == {0.0}
    assert set(lines["best card-blind play (0.333)"][1]) == {1 / 3}

    assert "win rate" in win_rate.get_ylabel()
    assert _lines(win_rate)["KuhnPoker-v1/vs_random"] == ([0, 5, 10], [0.5, 0.5, 0.5])
    assert len(win_rate.collections) == 1  # the Wilson interval band

    assert invalid.get_ylabel() == "invalid-move rate (share of turns)"
    assert _lines(invalid)["self-play"] == (list(range(1, 11)), pytest.approx([0.5 / step for step in range(1, 11)]))

    assert returns.get_ylabel() == "return per game (the env's reward)"
    role_lines = _lines(returns)
    assert role_lines["KuhnPoker-v1 role 0"] == (list(range(1, 11)), pytest.approx([0.1 * step for step in range(1, 11)]))
    assert role_lines["KuhnPoker-v1 role 1"][1][-1] == pytest.approx(-1.0)
    assert "KuhnPoker-v1 role 0 baseline" not in role_lines
    assert all(axis.get_xlabel() == "policy step" for axis in (exploitability, win_rate, invalid, returns))


def test_without_population_metrics_only_the_policy_is_plotted() -> None:
    exploitability = learning_curves(_history(population=False)).axes[0]

    assert set(_lines(exploitability)) == {"policy", "uniform random (0.458)", "best card-blind play (0.333)", "equilibrium (0)"}


def test_summary_names_each_change_and_the_png_is_written(tmp_path: Path) -> None:
    text = write_report(_history(population=True), tmp_path)

    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Kuhn Poker exploitability (policy): 0.400 at step 0 -> 0.200 at step 10" in text
    assert "Kuhn Poker exploitability (average of every snapshot): 0.200 at step 0 -> 0.100 at step 10" in text
    assert "KuhnPoker-v1/vs_random: win rate 0.500 [0.400, 0.600] -> 0.500 [0.400, 0.600]" in text
    assert "Invalid-move rate in self-play: 0.500 at step 1 -> 0.050 at step 10" in text
