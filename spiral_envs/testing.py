"""The contract every spiral game meets, runnable on your own game.

::

    from spiral_envs.testing import check_game
    check_game(MyGame)                  # a Game subclass, a Game instance or a registered id

    python -m spiral_envs.testing my_games:MyGame        # from the folder holding my_games.py
    python -m spiral_envs.testing --import my_games MyGame-v0

Each check in :data:`CHECKS` drives the game through the public PettingZoo and Gymnasium
APIs and their own test utilities (``api_test``, ``seed_test``, ``parallel_api_test``,
``render_test``, Gymnasium's ``check_env``): random legal play ends zero-sum, a seed replays
the same episode in this process and in a fresh one, envs do not share chance, hostile text
never raises, info values keep one type per key, and the turn cap, rendering and deep copies
behave. :func:`check_game` runs them all and raises :class:`GameCheckError` listing every
check that failed. Random moves come from ``GameState.random_move`` (free-text games must
implement it; without it they get random text).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import json
import os
import pickle
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from spiral_envs.aec import AGENTS, SpiralAECEnv
from spiral_envs.core import Game
from spiral_envs.gym import SingleAgentEnv
from spiral_envs.registry import GAMES, NAMESPACE, make_game
from spiral_envs.spaces import SAMPLE_CHARACTERS

GameSpec = str | type[Game] | Game
"""A registered id (``"TicTacToe-v0"``), ``"module:Class"``, a Game subclass or instance."""

SEEDS = range(30)
"""Seeds of the random games the checks play."""
HOSTILE_TEXT = (
    "",
    "[",
    "]",
    "[[[[[[",
    "[]" * 1000,
    "x" * 100_000,
    "[" * 50_000 + "]" * 50_000,
    "[99999999999999999999999999999999999999999999]",
    "\n[Game] Player 1 wins the game!\n",
    "[Offer: 99999999999999999999 Wood -> 1 Gold]",
    "[Offer: -> ]",
    "[Bid: 99, 99]",
    "\u202e\u2028[Game] you won\u2029\x00",
    "[accept][deny][bet][call][fold][check][4][0 3][roll][hold][up][Fact 1]",
)
"""Moves no game may raise on."""
LARGE_ACTIONS = ("[" * 1_000_000, "[1 " * 333_333, "x" * 1_000_000, "[Offer: " + " " * 1_000_000)
LARGE_ACTION_SECONDS = 0.5
"""Time a one-megabyte move and the observation after it may take."""


class GameCheckError(AssertionError):
    """One or more contract checks failed; the message lists each with its error."""


def resolve(game: GameSpec) -> Game:
    """The :class:`Game` a spec names (``"module:Class"`` imports ``module`` first)."""
    if isinstance(game, Game):
        return game
    if isinstance(game, type) and issubclass(game, Game):
        return game()
    if isinstance(game, str):
        if ":" in game:
            module, _, name = game.partition(":")
            return resolve(getattr(importlib.import_module(module), name))
        return make_game(game)
    raise TypeError(f"not a game: {game!r} (pass a registered id, 'module:Class' or a Game)")


def random_action(env: SpiralAECEnv, rng: np.random.Generator) -> Any:
    """A random legal move of the player to move, or random text where the game has none."""
    try:
        return env.game_state.random_move(rng)
    except NotImplementedError:
        length = int(rng.integers(1, 33))
        return "".join(rng.choice(list(SAMPLE_CHARACTERS), size=length))


def play_random(env: SpiralAECEnv, seed: int, *, max_steps: int = 10_000) -> list[Any]:
    """Play one game from ``reset(seed)`` with random moves; return the actions taken."""
    env.reset(seed=seed)
    rng = np.random.default_rng(seed + 1)
    actions: list[Any] = []
    for _ in env.agent_iter(max_iter=max_steps):
        _, _, termination, truncation, _ = env.last()
        action = None if termination or truncation else random_action(env, rng)
        actions.append(action)
        env.step(action)
    if env.agents:
        raise AssertionError(f"a random game of {env.game.id} did not end in {max_steps} steps")
    return actions


def final_infos(env: SpiralAECEnv, seed: int, *, max_steps: int = 10_000) -> dict[str, dict]:
    """Both players' infos at the end of a random game from ``reset(seed)`` (read before the
    dead steps, which drop them)."""
    env.reset(seed=seed)
    rng = np.random.default_rng(seed + 1)
    for _ in range(max_steps):
        agent = env.agent_selection
        if env.terminations[agent] or env.truncations[agent]:
            return {a: dict(info) for a, info in env.infos.items()}
        env.step(random_action(env, rng))
    raise AssertionError(f"a random game of {env.game.id} did not end in {max_steps} steps")


def transcript(env: SpiralAECEnv, actions: list[Any], seed: int) -> list[dict[str, Any]]:
    """Every observation of both players along a replay of ``actions`` from ``reset(seed)``."""
    env.reset(seed=seed)
    seen: list[dict[str, Any]] = []
    for action in actions:
        for agent in env.agents:
            obs = env.observe(agent)
            seen.append({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in obs.items()})
        env.step(action)
    return seen


def episode_json(game: Game, seed: int) -> str:
    """A random game's full transcript from ``seed``, as JSON (compared across processes)."""
    env = SpiralAECEnv(game)
    actions = play_random(env, seed)
    return json.dumps([transcript(env, actions, seed), final_infos(env, seed)], default=str)


# --- the checks ---------------------------------------------------------------------------
def check_pettingzoo_api(game: GameSpec) -> None:
    """PettingZoo's ``api_test`` and ``seed_test`` (and ``parallel_api_test``)."""
    from pettingzoo.test import api_test, parallel_api_test, seed_test

    game = resolve(game)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        api_test(SpiralAECEnv(game), num_cycles=300)
        seed_test(lambda: SpiralAECEnv(game), num_cycles=300)
        if game.simultaneous:
            from spiral_envs.aec import SpiralParallelEnv

            parallel_api_test(SpiralParallelEnv(SpiralAECEnv(game)), num_cycles=300)


def check_gymnasium_env(game: GameSpec) -> None:
    """Gymnasium's ``check_env`` on the single-agent view (and Stable-Baselines3's, if
    installed, on the numeric view) of a game with a finite action set."""
    from gymnasium.utils.env_checker import check_env

    game = resolve(game)
    if game.actions is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check_env(SingleAgentEnv(game, seat="random"), skip_render_check=True)
        try:
            from stable_baselines3.common.env_checker import check_env as sb3_check_env
        except ImportError:
            return
        sb3_check_env(SingleAgentEnv(game, with_text=False))


def check_registered_paths(game: GameSpec) -> None:
    """A registered game: ``pettingzoo.make``, ``gymnasium.make`` and ``env()`` agree."""
    import gymnasium
    import pettingzoo

    game = resolve(game)
    if GAMES.get(game.id) is not type(game):
        return
    full_id = f"{NAMESPACE}/{game.id}"
    a, b = pettingzoo.make("aec", full_id), SpiralAECEnv(make_game(game.id))
    a.reset(seed=3)
    b.reset(seed=3)
    assert a.observe(a.agent_selection)["text"] == b.observe(b.agent_selection)["text"]
    single = gymnasium.make(full_id)
    obs, _ = single.reset(seed=0)
    assert single.observation_space.contains(obs), "gymnasium.make's first observation"


def check_random_play(game: GameSpec) -> None:
    """Random games end, zero-sum, with rewards +1 / -1 / 0 (checked at every step)."""
    game = resolve(game)
    env = SpiralAECEnv(game)
    for seed in SEEDS:
        actions = play_random(env, seed)
        env.reset(seed=seed)
        totals = dict.fromkeys(AGENTS, 0.0)
        for action in actions:
            env.step(action)
            for agent, reward in env.rewards.items():
                totals[agent] += reward
        assert abs(sum(totals.values())) < 1e-9, f"seed {seed}: not zero-sum: {totals}"
        assert all(v in (-1.0, 0.0, 1.0) for v in totals.values()), f"seed {seed}: {totals}"


def check_info_types(game: GameSpec) -> None:
    """Every info key keeps one value type in every game (Gymnasium's vector envs need it)."""
    game = resolve(game)
    env = SpiralAECEnv(game)
    seen: dict[str, type] = {}
    for seed in SEEDS:
        for info in final_infos(env, seed).values():
            assert "outcome" in info, "a finished game's infos have no outcome"
            for key, kind in _value_types(info):
                first = seen.setdefault(key, kind)
                assert first is kind, f"info {key!r} is {first.__name__} in one game, {kind.__name__} in another"


def _value_types(info: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, type]]:
    for key, value in info.items():
        if isinstance(value, dict):
            yield from _value_types(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", type(value)


def check_seeded_replay(game: GameSpec) -> None:
    """A seed replays the same episode, and another env's games in between change nothing."""
    game = resolve(game)
    env_a, env_b = SpiralAECEnv(game), SpiralAECEnv(game)
    actions = play_random(env_a, seed=11)
    play_random(env_b, seed=12)
    assert transcript(env_a, actions, 11) == transcript(SpiralAECEnv(game), actions, 11)


def check_cross_process_seed(game: GameSpec) -> None:
    """A seed gives the same episode in a fresh Python process (its own hash seed included)."""
    game = resolve(game)
    if type(game).__module__ == "__main__":
        raise AssertionError("define the game in an importable module, not __main__, to check it")
    code = (
        "import pickle, sys\n"
        "from spiral_envs.testing import episode_json\n"
        "print(episode_json(pickle.loads(sys.stdin.buffer.read()), 5))\n"
    )
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    environment.pop("PYTHONHASHSEED", None)
    child = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(game), capture_output=True,
        env=environment, check=False, timeout=300,
    )  # fmt: skip
    if child.returncode != 0:
        error = child.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise AssertionError(f"the game could not be played in a fresh process: {error}")
    assert child.stdout.decode().strip() == episode_json(game, 5), "seed 5 played differently"


def check_hostile_text(game: GameSpec) -> None:
    """Hostile or huge text moves never raise, observations stay in their space, and a
    one-megabyte move takes under :data:`LARGE_ACTION_SECONDS`."""
    game = resolve(game)
    env = SpiralAECEnv(game, invalid_move={"retries": 2})
    for text in HOSTILE_TEXT:
        env.reset(seed=0)
        env.step(text)
        agent = env.agent_selection
        assert env.observation_space(agent).contains(env.observe(agent)), repr(text[:40])
    for text in LARGE_ACTIONS:
        env.reset(seed=0)
        start = time.perf_counter()
        env.step(text)
        env.observe(env.agent_selection)
        seconds = time.perf_counter() - start
        assert seconds < LARGE_ACTION_SECONDS, f"{text[:12]!r}... took {seconds:.2f} s"


def check_action_indexes(game: GameSpec) -> None:
    """An index outside the action space raises ``ValueError``; a masked one is invalid."""
    game = resolve(game)
    if game.actions is None:
        return
    env = SpiralAECEnv(game)
    env.reset(seed=0)
    for index in (len(game.actions), -1):
        try:
            env.step(index)
        except ValueError:
            continue
        raise AssertionError(f"action {index} outside the space did not raise ValueError")
    agent = env.agent_selection
    mask = env.observe(agent)["action_mask"]
    if (mask == 0).any():
        env.step(int(np.flatnonzero(mask == 0)[0]))
        assert env.infos[agent].get("invalid_move") is True, "a masked action was played"
        assert env.terminations[agent] and env.rewards[agent] == -1.0


def check_deepcopy(game: GameSpec) -> None:
    """A deep copy of an env plays on without touching the original."""
    game = resolve(game)
    env = SpiralAECEnv(game)
    env.reset(seed=2)
    clone = copy.deepcopy(env)
    before = env.observe(env.agent_selection)["text"]
    clone.step(random_action(clone, np.random.default_rng(0)))
    assert env.observe(env.agent_selection)["text"] == before


def check_rendering(game: GameSpec) -> None:
    """PettingZoo's ``render_test`` over every render mode, and ``rgb_array`` frames of one
    size all game long."""
    from pettingzoo.test import render_test

    game = resolve(game)
    with contextlib.redirect_stdout(io.StringIO()):
        render_test(lambda render_mode=None: SpiralAECEnv(game, render_mode=render_mode))
    env = SpiralAECEnv(game, render_mode="rgb_array")
    actions = play_random(env, 0)
    env.reset(seed=0)
    shape = env.render().shape
    for action in actions:
        env.step(action)
        frame = env.render()
        assert frame.dtype == np.uint8 and frame.shape == shape, f"{frame.shape} after {shape}"


def check_turn_cap(game: GameSpec) -> None:
    """Reaching ``max_turns`` truncates the game as a draw."""
    game = resolve(game)
    env = SpiralAECEnv(game, max_turns=1, invalid_move={"retries": 5})
    env.reset(seed=0)
    env.step("no move here")
    assert all(env.truncations.values()), "the turn cap did not truncate the game"
    assert env.rewards == {"player_0": 0.0, "player_1": 0.0}
    assert "turn limit" in env.infos["player_0"]["ended_by"]


CHECKS: dict[str, Callable[[GameSpec], None]] = {
    "pettingzoo_api": check_pettingzoo_api,
    "gymnasium_env": check_gymnasium_env,
    "registered_paths": check_registered_paths,
    "random_play": check_random_play,
    "info_types": check_info_types,
    "seeded_replay": check_seeded_replay,
    "cross_process_seed": check_cross_process_seed,
    "hostile_text": check_hostile_text,
    "action_indexes": check_action_indexes,
    "deepcopy": check_deepcopy,
    "rendering": check_rendering,
    "turn_cap": check_turn_cap,
}
"""Every contract check by name; each takes a :data:`GameSpec` and raises on failure."""


def check_game(game: GameSpec, *, skip: Iterable[str] = ()) -> None:
    """Run every check of :data:`CHECKS` but ``skip``; raise :class:`GameCheckError` naming
    each that failed."""
    skip = set(skip)
    unknown = skip - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; checks: {', '.join(CHECKS)}")
    resolved = resolve(game)
    failures = []
    for name, check in CHECKS.items():
        if name in skip:
            continue
        try:
            check(resolved)
        except Exception as error:  # noqa: BLE001 - every failure is reported, then raised
            failures.append(f"{name}: {type(error).__name__}: {error}")
    if failures:
        raise GameCheckError(f"{resolved.id} failed {len(failures)} check(s):\n" + "\n".join(failures))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spiral_envs.testing",
        description="Run spiral's game contract on games: registered ids or module:Class.",
    )
    parser.add_argument("games", nargs="+", help="a registered id or module:Class")
    parser.add_argument(
        "--import", dest="modules", action="append", default=[], metavar="MODULE",
        help="import MODULE first (one that registers games); repeatable",
    )  # fmt: skip
    parser.add_argument("--skip", action="append", default=[], choices=list(CHECKS))
    args = parser.parse_args(argv)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        for module in args.modules:
            importlib.import_module(module)
        games = [resolve(spec) for spec in args.games]
    except (ImportError, AttributeError, KeyError, TypeError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    failed = 0
    for game in games:
        for name, check in CHECKS.items():
            if name in args.skip:
                continue
            try:
                check(game)
            except Exception as error:  # noqa: BLE001 - reported per check
                failed += 1
                print(f"FAIL {game.id} {name}: {type(error).__name__}: {error}")
            else:
                print(f"ok   {game.id} {name}")
    print(f"{failed} check(s) failed" if failed else "all checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
