"""Agents by name, for the command line and configs: ``random``, ``minimax``, ``kuhn-nash``...

A spec is a registered name or a third-party ``module:attribute``, optionally followed by
keyword arguments after ``@``: ``kuhn-nash@alpha=0.2``, ``my_pkg.agents:Greedy@depth=3``.
Values are read as Python literals where they parse (numbers, booleans), else as strings.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spiral_agents.base import as_agent


@dataclass(frozen=True)
class AgentEntry:
    factory: Callable[..., Any]
    games: tuple[str, ...] | None
    """Game ids the agent can play; ``None`` for every game."""
    summary: str


AGENTS: dict[str, AgentEntry] = {}


def register_agent(
    name: str, factory: Callable[..., Any], games: tuple[str, ...] | None = None, summary: str = ""
) -> None:
    """Register ``factory(game=..., seed=..., **kwargs) -> agent`` under ``name``."""
    AGENTS[name] = AgentEntry(factory, games, summary)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``name@k=v,k=v`` into the name and its keyword arguments."""
    name, _, arguments = spec.partition("@")
    kwargs: dict[str, Any] = {}
    for item in filter(None, arguments.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(f"bad agent argument {item!r} in {spec!r}; expected key=value")
        try:
            kwargs[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = value.strip()
    return name.strip(), kwargs


def supports(spec: str, game_id: str) -> bool:
    """Whether the agent named by ``spec`` can play ``game_id`` (third-party agents: yes)."""
    entry = AGENTS.get(parse_spec(spec)[0])
    return entry is None or entry.games is None or game_id.removeprefix("spiral/") in entry.games


def make_agent(spec: str, game: str, seed: int | None = None, **overrides: Any) -> Any:
    """Build the agent ``spec`` names, for ``game``, with its own seeded RNG."""
    name, kwargs = parse_spec(spec)
    kwargs.update(overrides)
    entry = AGENTS.get(name)
    if entry is not None:
        if not supports(spec, game):
            raise ValueError(f"agent {name!r} plays {', '.join(entry.games or ())}, not {game}")
        kwargs.setdefault("seed", seed)  # a seed in the spec wins over the arena's
        return as_agent(entry.factory(game=game, **kwargs))
    if ":" not in name:
        known = ", ".join(sorted(AGENTS))
        raise KeyError(f"unknown agent {name!r}; built-in agents: {known}; or use module:attribute")
    module_name, _, attribute = name.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if isinstance(target, type):
        target = target(**kwargs)
    elif kwargs:
        target = target(**kwargs)
    return as_agent(target)
