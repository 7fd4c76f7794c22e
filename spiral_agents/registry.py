"""Agents by name, for the command line and configs: ``random``, ``minimax``, ``kuhn-nash``...

A spec is a registered name or a third-party ``module:attribute``, optionally followed by
keyword arguments after ``@``: ``kuhn-nash@alpha=0.2``, ``my_pkg.agents:Greedy@depth=3``.
Values are read as Python literals where they parse (numbers, booleans, tuples), else as
strings; commas inside brackets or quotes do not split arguments (``nim@piles=(1,2)``).
A spec that does not resolve raises :class:`AgentSpecError` with one line naming what exists.
A spec never holds a secret (``api_key=``, ``password=``, ``secret=``, ``access_token=``): specs
are written into game records, tables and messages, so such a spec is refused without being
shown; keys come from the environment (``openai@...,api_key_env=NAME``).

The user's own modules (games and agents that register themselves on import) are imported with
:func:`import_user_modules`; they, and the modules of ``module:attribute`` specs, are found on
``sys.path`` and then in the current folder, as ``python -m`` would find them.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from spiral_agents.base import as_agent
from spiral_agents.records import cut

_MAX_LISTED = 20
_MAX_MESSAGE = 500
_CLOSERS = {"(": ")", "[": "]", "{": "}"}
_SECRET = re.compile(r"(?i)[@,]\s*(api[-_]?key|password|secret|access[-_]?token)\s*=")
"""Arguments a spec may not carry: specs are written into records, tables and messages."""


@dataclass(frozen=True)
class AgentEntry:
    factory: Callable[..., Any]
    games: tuple[str, ...] | None
    """Game ids the agent can play; ``None`` for every game."""
    summary: str


AGENTS: dict[str, AgentEntry] = {}


class AgentSpecError(ValueError):
    """An agent spec that does not name a buildable agent."""


class UnknownAgentError(AgentSpecError, KeyError):
    """A spec whose name is neither registered nor ``module:attribute``."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_agent(
    name: str, factory: Callable[..., Any], games: tuple[str, ...] | None = None, summary: str = ""
) -> None:
    """Register ``factory(game=..., seed=..., **kwargs) -> agent`` under ``name``."""
    AGENTS[name] = AgentEntry(factory, games, summary)


def _split_arguments(arguments: str, spec: str) -> list[str]:
    """Split at the commas outside brackets and quotes."""
    items, depth, quote, start = [], [], "", 0
    for position, char in enumerate(arguments):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in _CLOSERS:
            depth.append(_CLOSERS[char])
        elif depth and char == depth[-1]:
            depth.pop()
        elif char == "," and not depth:
            items.append(arguments[start:position])
            start = position + 1
    if quote or depth:
        raise AgentSpecError(f"unclosed {quote or 'bracket'} in the arguments of {spec!r}")
    items.append(arguments[start:])
    return items


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``name@k=v,k=v`` into the name and its keyword arguments."""
    name, _, arguments = spec.partition("@")
    name = name.strip()
    secret = _SECRET.search(spec)
    if secret:  # the spec itself is not shown: it holds the secret
        raise AgentSpecError(
            f"agent {name!r}: a spec may not hold {secret[1]}= (specs are written into game "
            "records and tables): put the key in an environment variable and pass "
            "api_key_env=NAME"
        )
    if not name:
        raise AgentSpecError(f"agent spec {spec!r} has no agent name")
    kwargs: dict[str, Any] = {}
    for item in filter(str.strip, _split_arguments(arguments, spec)):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise AgentSpecError(f"bad agent argument {item!r} in {spec!r}; expected key=value")
        if key in kwargs:
            raise AgentSpecError(f"agent argument {key!r} given twice in {spec!r}")
        kwargs[key] = _value(value.strip())
    return name, kwargs


def supports(spec: str, game_id: str) -> bool:
    """Whether the agent named by ``spec`` can play ``game_id`` (third-party agents: yes)."""
    return unsupported_reason(spec, game_id) is None


def unsupported_reason(spec: str, game_id: str) -> str | None:
    """Why the agent named by ``spec`` cannot play ``game_id``, or ``None`` if it can."""
    name = parse_spec(spec)[0]
    entry = AGENTS.get(name)
    if entry is None or entry.games is None or game_id.removeprefix("spiral/") in entry.games:
        return None
    return f"{name} plays only {', '.join(entry.games)}"


# --- the user's modules ------------------------------------------------------------------

_USER_MODULES: list[str] = []


class UserModuleError(ValueError):
    """A user module that cannot be imported (the message says why, on one line)."""


def _import(module_name: str) -> ModuleType:
    """Import ``module_name`` from ``sys.path`` or, failing that, the current folder.

    The current folder goes on the end of ``sys.path`` (installed modules keep precedence),
    where it stays for the modules the user's module imports, and for worker processes.
    """
    folder = os.getcwd()
    if folder not in sys.path:
        sys.path.append(folder)
        importlib.invalidate_caches()
    return importlib.import_module(module_name)


def import_user_modules(names: Iterable[str]) -> list[ModuleType]:
    """Import the user's modules, so the games and agents they register can be named.

    Each is looked up on ``sys.path``, then in the current folder. The arena's worker
    processes import the same modules before they play. Raises :class:`UserModuleError` with
    one line naming the module and what went wrong.
    """
    modules = []
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise UserModuleError(f"{name!r} is not a module name (e.g. my_games or pkg.games)")
        try:
            modules.append(_import(name))
        except ImportError as error:
            missing = getattr(error, "name", None)
            if missing and (name == missing or name.startswith(missing + ".")):
                raise UserModuleError(
                    f"cannot import {name!r}: no module named {missing!r} on sys.path or in "
                    f"the current folder ({os.getcwd()})"
                ) from None
            raise UserModuleError(f"cannot import {name!r}: {error}") from None
        except Exception as error:  # noqa: BLE001 - the user's module fails as it loads
            message = cut(f"{type(error).__name__}: {error}", _MAX_MESSAGE)
            raise UserModuleError(f"importing {name!r} raised {message}") from None
        if name not in _USER_MODULES:
            _USER_MODULES.append(name)
    return modules


def user_modules() -> list[str]:
    """Names of the user modules imported so far, in order (the workers import them too)."""
    return list(_USER_MODULES)


def _public_callables(module: Any) -> list[str]:
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and callable(value)
        and getattr(value, "__module__", None) == module.__name__
    )


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def resolve(spec: str) -> tuple[str, Callable[..., Any] | Any, dict[str, Any]]:
    """The spec's name, what it names (a registered factory or the imported attribute) and
    its keyword arguments, without building the agent."""
    name, kwargs = parse_spec(spec)
    entry = AGENTS.get(name)
    if entry is not None:
        return name, entry.factory, kwargs
    known = _listed(sorted(AGENTS))
    if ":" not in name:
        raise UnknownAgentError(
            f"unknown agent {name!r}; built-in agents: {known}; or use module:attribute"
        )
    module_name, _, attribute = name.partition(":")
    try:
        target: Any = _import(module_name)
    except ImportError as error:
        missing = getattr(error, "name", None)
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise AgentSpecError(
                f"agent {spec!r}: no module named {missing!r}; built-in agents: {known}"
            ) from None
        raise AgentSpecError(f"agent {spec!r}: importing {module_name!r} failed: {error}") from None
    except Exception as error:  # noqa: BLE001 - a third-party module that fails to import
        raise AgentSpecError(
            f"agent {spec!r}: importing {module_name!r} raised {type(error).__name__}: {error}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            where = getattr(target, "__name__", module_name)
            has = _public_callables(target) if inspect.ismodule(target) else []
            listing = f"; it has: {_listed(has)}" if has else ""
            raise AgentSpecError(f"agent {spec!r}: {where!r} has no attribute {part!r}{listing}")
        target = getattr(target, part)
    return name, target, kwargs


@functools.lru_cache(maxsize=256)
def _accepted_keywords(factory: Any) -> tuple[str, ...] | None:
    """Keyword arguments ``factory`` takes, or ``None`` where it takes any."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): let the call decide
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _check_keywords(spec: str, factory: Any, kwargs: dict[str, Any], given: set[str]) -> None:
    try:
        accepted = _accepted_keywords(factory)
    except TypeError:  # an unhashable callable object
        accepted = _accepted_keywords.__wrapped__(factory)
    if accepted is None:
        return
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        options = [name for name in accepted if name not in given]
        takes = f"it takes: {', '.join(options)}" if options else "it takes no arguments"
        raise AgentSpecError(f"agent {spec!r} does not take {', '.join(unknown)}; {takes}")


def make_agent(spec: str, game: str, seed: int | None = None, **overrides: Any) -> Any:
    """Build the agent ``spec`` names, for ``game``, with its own seeded RNG."""
    name, target, kwargs = resolve(spec)
    kwargs.update(overrides)
    entry = AGENTS.get(name)
    if entry is not None:
        if not supports(spec, game):
            raise AgentSpecError(f"agent {name!r} plays {', '.join(entry.games or ())}, not {game}")
        kwargs.setdefault("seed", seed)  # a seed in the spec wins over the arena's
        chosen = kwargs["seed"]
        if chosen is not None and not (isinstance(chosen, int) and not isinstance(chosen, bool)):
            raise AgentSpecError(f"agent {spec!r}: seed must be an integer, got {chosen!r}")
        _check_keywords(spec, target, kwargs, {"game"})
        return _build(spec, game, lambda: target(game=game, **kwargs))
    if isinstance(target, type) or kwargs:
        _check_keywords(spec, target, kwargs, set())
        return _build(spec, game, lambda: target(**kwargs))
    return _build(spec, game, lambda: target)


def _build(spec: str, game: str, build: Callable[[], Any]) -> Any:
    try:
        return as_agent(build())
    except Exception as error:  # any failure to build is a bad spec
        message = cut(f"{type(error).__name__}: {error}", _MAX_MESSAGE)
        raise AgentSpecError(f"agent {spec!r} cannot be built for {game}: {message}") from error
