"""Play every registered game between random legal agents and print what happened.

Usage: ``python -m spiral_envs.demo [--games 200] [--seed 0] [--show TicTacToe-v0]``
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

import spiral_envs


def play(game_id: str, games: int, seed: int) -> dict[str, float]:
    """Play ``games`` seeded games with uniformly random legal moves; summarise the results."""
    env = spiral_envs.env(game_id)
    rng = np.random.default_rng(seed)
    outcomes: Counter[str] = Counter()
    turns = steps = 0
    start = time.perf_counter()
    for game in range(games):
        env.reset(seed=seed + game)
        while not (env.terminations[env.agent_selection] or env.truncations[env.agent_selection]):
            env.last()  # build the observation every step, as a learner would see it
            env.step(env.game_state.random_move(rng))
            steps += 1
        outcomes[_result(env.infos)] += 1
        turns += env.infos["player_0"]["turns"]
    seconds = time.perf_counter() - start
    return {
        "games": games,
        "player_0 wins": outcomes["player_0"],
        "draws": outcomes["draw"],
        "player_1 wins": outcomes["player_1"],
        "mean turns": turns / games,
        "steps/s": steps / seconds,
    }


def _result(infos: dict[str, dict]) -> str:
    outcome = infos["player_0"]["outcome"]
    return {"win": "player_0", "loss": "player_1"}.get(outcome, "draw")


def show_game(game_id: str, seed: int) -> None:
    """Print one game as player 0 sees it, move by move."""
    env = spiral_envs.env(game_id)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    print(env.observe("player_0")["text"])
    print()
    while not any(env.terminations.values()) and not any(env.truncations.values()):
        move = env.game_state.random_move(rng)
        text = move if isinstance(move, str) else env.game.actions[move]
        print(f">>> {env.agent_selection} plays: {text}")
        env.step(move)
    print()
    print(env.observe("player_0")["text"].split("History:\n", 1)[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=200, help="games per registered game")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", default="TicTacToe-v0", help="print one game of this id")
    args = parser.parse_args(argv)

    if args.show:
        print(f"=== One {args.show} game between random legal agents (player 0's view) ===")
        show_game(args.show, args.seed)
        print()
    print(f"=== {args.games} games of every registered game, random legal agents ===")
    columns = ["games", "player_0 wins", "draws", "player_1 wins", "mean turns", "steps/s"]
    print(f"{'game':<24}" + "".join(f"{c:>15}" for c in columns))
    for game_id in sorted(spiral_envs.GAMES):
        row = play(game_id, args.games, args.seed)
        cells = [f"{row[c]:,.0f}" if c != "mean turns" else f"{row[c]:.1f}" for c in columns]
        print(f"{game_id:<24}" + "".join(f"{c:>15}" for c in cells))


if __name__ == "__main__":
    main()
