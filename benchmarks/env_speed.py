"""Environment speed: random legal play through each library's full public API.

Measures steps per second (every ``step`` call, including the AEC API's final ``None`` steps,
which TextArena does not have: compare with it by games per second) with the observation,
text included, fetched every step, against PettingZoo's ``tictactoe_v3`` and TextArena's
``TicTacToe-v0`` (a fresh env per game, its fastest use) in the same run; medians of
``--repeats`` runs. Also the memory of many live TicTacToe envs. Needs ``pip install
-e .[bench]``. Usage: ``python benchmarks/env_speed.py [--games 2000] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

import spiral_envs


def random_play(env: Any, games: int, choose: Callable[[Any, dict], Any]) -> tuple[float, float]:
    """Steps/s and games/s of an AEC env, reset per game, ``choose(env, observation)`` acting."""
    steps = 0
    start = time.perf_counter()
    for game in range(games):
        env.reset(seed=game)
        for _ in env.agent_iter():
            obs, _, termination, truncation, _ = env.last()
            env.step(None if termination or truncation else choose(env, obs))
            steps += 1
    return steps / (time.perf_counter() - start), games / (time.perf_counter() - start)


def pettingzoo_style(make_env: Callable, games: int, rng: random.Random) -> tuple[float, float]:
    """An AEC env acting by index on the observation's action mask."""

    def choose(env: Any, obs: dict) -> int:
        legal = obs["action_mask"].nonzero()[0]
        return int(legal[rng.randrange(len(legal))])

    return random_play(make_env(), games, choose)


def spiral_text_actions(game_id: str, games: int, rng: random.Random) -> tuple[float, float]:
    """A spiral env driven by text actions, as an LLM would drive it."""
    env = spiral_envs.env(game_id)
    names = env.game.actions
    np_rng = np.random.default_rng(rng.randrange(2**32))

    def choose(env: Any, obs: dict) -> str:
        if names is None:  # free-text game: a random valid message, offer or reply
            return env.game_state.random_move(np_rng)
        legal = obs["action_mask"].nonzero()[0]
        return names[legal[rng.randrange(len(legal))]]

    return random_play(env, games, choose)


def textarena_tictactoe(games: int, rng: random.Random) -> tuple[float, float]:
    import textarena

    steps = 0
    start = time.perf_counter()
    for game in range(games):
        env = textarena.make("TicTacToe-v0")
        env.reset(num_players=2, seed=game)
        done = False
        while not done:
            env.get_observation()
            board = env.state.game_state["board"]
            free = [r * 3 + c for r in range(3) for c in range(3) if board[r][c] == ""]
            done, _ = env.step(f"[{free[rng.randrange(len(free))]}]")
            steps += 1
        env.close()
    return steps / (time.perf_counter() - start), games / (time.perf_counter() - start)


def memory_per_env(count: int) -> float:
    """Bytes of Python heap per live, reset TicTacToe env (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    envs = [spiral_envs.env("TicTacToe-v0") for _ in range(count)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del envs
    return used / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--envs", type=int, default=100_000, help="live envs for the memory test")
    args = parser.parse_args()

    from pettingzoo.classic import tictactoe_v3

    cases: dict[str, Callable[[random.Random], tuple[float, float]]] = {
        "spiral TicTacToe-v0 (index actions)": lambda r: pettingzoo_style(
            lambda: spiral_envs.env("TicTacToe-v0"), args.games, r
        ),
        "spiral TicTacToe-v0 (text actions)": lambda r: spiral_text_actions(
            "TicTacToe-v0", args.games, r
        ),
        "PettingZoo tictactoe_v3": lambda r: pettingzoo_style(tictactoe_v3.env, args.games, r),
        "TextArena TicTacToe-v0 (fresh env per game)": lambda r: textarena_tictactoe(
            args.games, r
        ),
    }
    for game_id in sorted(spiral_envs.GAMES):
        if game_id == "TicTacToe-v0":
            continue
        if spiral_envs.GAMES[game_id].actions is not None:
            cases[f"spiral {game_id} (index actions)"] = lambda r, g=game_id: pettingzoo_style(
                lambda: spiral_envs.env(g), max(args.games // 4, 50), r
            )
        cases[f"spiral {game_id} (text actions)"] = lambda r, g=game_id: spiral_text_actions(
            g, max(args.games // 4, 50), r
        )

    results: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for repeat in range(args.repeats):  # interleave the cases so drift hits all alike
        for name, run in cases.items():
            results[name].append(run(random.Random(repeat)))
    steps = {name: statistics.median(s for s, _ in v) for name, v in results.items()}
    games = {name: statistics.median(g for _, g in v) for name, v in results.items()}
    pz, ta = "PettingZoo tictactoe_v3", "TextArena TicTacToe-v0 (fresh env per game)"

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}, "
          f"Python {platform.python_version()}; median of {args.repeats} runs, "
          f"{args.games} TicTacToe games per run")
    print("| case | steps/s | games/s | steps/s vs PettingZoo | games/s vs TextArena |")
    print("|---|---:|---:|---:|---:|")
    for name in cases:
        ratios = (
            f"{steps[name] / steps[pz]:.1f}x | {games[name] / games[ta]:.1f}x"
            if "icTacToe" in name or "tictactoe" in name
            else "- | -"
        )
        print(f"| {name} | {steps[name]:,.0f} | {games[name]:,.0f} | {ratios} |")
    per_env = memory_per_env(args.envs)
    print(f"\nmemory: {per_env:,.0f} bytes per live TicTacToe env; "
          f"{args.envs:,} envs = {per_env * args.envs / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
