"""Train sb3-contrib MaskablePPO on TicTacToe against the random agent, then play it in the arena.

    pip install -c constraints-cpu.txt -e ".[sb3,arena]"   # sb3-contrib, Stable-Baselines3, tqdm
    python examples/train_maskable_ppo.py --steps 100000 --out runs/ttt_ppo.zip

The learner sits in a random seat each episode (Gymnasium view, numeric observation and
action mask, no text); the saved model then plays as ``sb3@model=runs/ttt_ppo.zip`` against
``random`` for ``--eval-games`` games with seats alternating, and the non-loss rate is printed
with its Wilson 95 % interval.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium
import torch
from sb3_contrib import MaskablePPO

import spiral_envs  # noqa: F401  (registers the spiral/ ids)
from spiral_agents.arena import run_tournament, summarize, wilson_interval


def train(steps: int, out: Path, seed: int) -> float:
    torch.set_num_threads(1)  # tiny networks: threads cost more than they give
    env = gymnasium.make("spiral/TicTacToe-v0", with_text=False, seat="random")
    model = MaskablePPO(
        "MultiInputPolicy", env, seed=seed, n_steps=1024, batch_size=256, gamma=0.99,
        learning_rate=1e-3, ent_coef=0.01, verbose=0, device="cpu",
    )  # fmt: skip
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("runs/ttt_ppo.zip"))
    parser.add_argument("--eval-games", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    seconds = train(args.steps, args.out, args.seed)
    records = run_tournament(
        ["TicTacToe-v0"], [f"sb3@model={args.out}", "random"], args.eval_games,
        seed=args.seed + 1, progress=False,
    )  # fmt: skip
    (result,) = summarize(records)
    non_losses = result.wins + result.draws
    low, high = wilson_interval(non_losses, result.games)
    print(
        f"trained {args.steps} steps in {seconds:.0f} s; vs random over {result.games} games: "
        f"wins {result.wins}, draws {result.draws}, losses {result.losses}; "
        f"non-loss rate {non_losses / result.games:.3f} (95% CI {low:.3f}-{high:.3f})"
    )


if __name__ == "__main__":
    main()
