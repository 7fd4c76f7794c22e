"""Game registry: every game is registered once, for PettingZoo and Gymnasium alike."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

import gymnasium
import pettingzoo

from spiral_envs.aec import InvalidMovePolicy, SpiralAECEnv, SpiralParallelEnv
from spiral_envs.core import Game

NAMESPACE = "spiral"
GAMES: dict[str, type[Game]] = {}
"""Registered game classes by id (without namespace)."""


def _game_id(game_id: str) -> str:
    name = game_id.removeprefix(NAMESPACE + "/")
    if name not in GAMES:
        known = ", ".join(sorted(GAMES))
        raise KeyError(f"unknown game {game_id!r}; registered games: {known}")
    return name


def make_game(game_id: str, **game_kwargs: Any) -> Game:
    """Build a registered game's rules object with its variant keyword arguments."""
    return GAMES[_game_id(game_id)](**game_kwargs)


def env(
    game_id: str,
    *,
    render_mode: str | None = None,
    invalid_move: InvalidMovePolicy | Mapping[str, Any] | None = None,
    max_turns: int | None = None,
    max_cycles: int | None = None,
    with_text: bool = True,
    brief_text: bool = False,
    **game_kwargs: Any,
) -> SpiralAECEnv:
    """A PettingZoo AEC env for ``game_id`` (``"TicTacToe-v0"`` or ``"spiral/TicTacToe-v0"``).

    The adapter's arguments are :class:`~spiral_envs.aec.SpiralAECEnv`'s; every other keyword
    is a variant of the game (e.g. ``rounds=1``).
    """
    return SpiralAECEnv(
        make_game(game_id, **game_kwargs),
        render_mode=render_mode,
        invalid_move=invalid_move,
        max_turns=max_turns,
        max_cycles=max_cycles,
        with_text=with_text,
        brief_text=brief_text,
    )


ADAPTER_KWARGS = tuple(
    p.name for p in inspect.signature(env).parameters.values() if p.kind is p.KEYWORD_ONLY
)
"""The keyword arguments of the env adapter (``render_mode``, ``invalid_move``, ...); every
other keyword of :func:`env` is the game's."""


def game_kwargs(env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The game's own keyword arguments among ``env_kwargs`` (the adapter's left out)."""
    return {k: v for k, v in env_kwargs.items() if k not in ADAPTER_KWARGS}


def parallel_env(game_id: str, **kwargs: Any) -> pettingzoo.ParallelEnv:
    """A PettingZoo Parallel env for a simultaneous-move game (same arguments as :func:`env`)."""
    aec_env = env(game_id, **kwargs)
    if not aec_env.game.simultaneous:
        raise ValueError(f"{game_id} is turn-based; use the AEC env")
    return SpiralParallelEnv(aec_env)


def register_game(game: type[Game]) -> type[Game]:
    """Register a game class under ``spiral/<id>`` in PettingZoo and Gymnasium.

    Third-party games call this once (it also works as a class decorator); the generic
    adapters do the rest.
    """
    GAMES[game.id] = game
    full_id = f"{NAMESPACE}/{game.id}"
    pettingzoo.register("aec", full_id, functools.partial(env, game.id))
    if game.simultaneous:
        pettingzoo.register("parallel", full_id, functools.partial(parallel_env, game.id))
    gymnasium.register(
        id=full_id, entry_point="spiral_envs.gym:SingleAgentEnv", kwargs={"game": game.id}
    )
    return game
