"""Shared test helpers: random legal play through the public AEC API, a free loopback port,
a loopback HTTP server run in a thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import HTTPServer
from typing import Any, TypeVar

import numpy as np

import spiral_envs


def play_random(env: spiral_envs.SpiralAECEnv, seed: int, *, max_steps: int = 10_000) -> list[Any]:
    """Play one game with uniformly random legal moves; return the actions taken."""
    env.reset(seed=seed)
    rng = np.random.default_rng(seed + 1)
    actions: list[Any] = []
    for agent in env.agent_iter(max_iter=max_steps):
        _, _, termination, truncation, _ = env.last()
        if termination or truncation:
            action = None
        else:
            action = env.game_state.random_move(rng)
        actions.append(action)
        env.step(action)
    assert not env.agents, "game did not finish"
    return actions


def final_rewards(env: spiral_envs.SpiralAECEnv, actions: list[Any], seed: int) -> dict[str, float]:
    """Replay ``actions`` from ``reset(seed)`` and return each agent's total reward."""
    env.reset(seed=seed)
    totals = {a: 0.0 for a in env.possible_agents}
    for action in actions:
        env.step(action)
        for agent, r in env.rewards.items():
            totals[agent] += r
    return totals


def transcript(env: spiral_envs.SpiralAECEnv, actions: list[Any], seed: int) -> list[Any]:
    """Every observation (both players) along a replay, for determinism checks."""
    env.reset(seed=seed)
    seen: list[Any] = []
    for action in actions:
        for agent in env.agents:
            obs = env.observe(agent)
            seen.append({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obs.items()})
        env.step(action)
    return seen


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


Server = TypeVar("Server", bound=HTTPServer)


def serving(server: Server) -> Iterator[Server]:
    """Serve ``server`` in a thread for the body of a fixture (``yield from serving(...)``),
    then shut it down and close its socket."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
