"""The agent protocol: an observation in, an action out.

An agent is anything with ``act(observation) -> action`` or any plain callable
``observation -> action``. The observation is the env's dict (``"observation"``,
``"action_mask"`` where moves are finite, ``"text"``); the action is an index into the game's
action set or the text a player writes. Optional hooks, used when present:

* ``reset()`` — called at the start of every game;
* ``act_batch(observations) -> actions`` — many decisions in one call (LLM agents);
* ``batcher`` — a function ``(agents, observations) -> actions`` that agents able to decide
  together share: the arena plays their games side by side and sends every request of
  agents with the same ``batcher`` in one call (LLM agents: one generation call for all the
  games waiting on one model). An item of the result may be an exception instead of an
  action: that agent forfeits its game;
* ``action_probabilities(observation) -> np.ndarray`` — the agent's distribution over the
  game's discrete actions (needed for exact evaluation such as Kuhn Poker exploitability);
* ``game_over(observation, outcome, how)`` — called at the end of each game with the
  player's last observation, ``"win"``/``"draw"``/``"loss"`` and how the game ended
  (exceptions are ignored: the game is decided).
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

import spiral_envs

Observation = dict[str, Any]
Action = int | str


@runtime_checkable
class Agent(Protocol):
    """Anything that picks an action for one player's observation."""

    def act(self, observation: Observation) -> Action: ...


class CallableAgent:
    """Adapts a plain function ``observation -> action`` to the :class:`Agent` protocol."""

    def __init__(self, fn: Callable[[Observation], Action], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable")

    def act(self, observation: Observation) -> Action:
        return self.fn(observation)


def as_agent(agent: Any) -> Agent:
    """Return ``agent`` if it has ``act``, wrap it if it is a plain callable, else raise."""
    if callable(getattr(agent, "act", None)):
        return agent
    if callable(agent):
        return CallableAgent(agent)
    raise TypeError(
        f"{reprlib.repr(agent)} is not an agent: it needs act(observation) or to be callable"
    )


def reset_agent(agent: Any) -> None:
    """Call the agent's optional ``reset`` hook."""
    reset = getattr(agent, "reset", None)
    if callable(reset):
        reset()


def act_batch(agent: Any, observations: Sequence[Observation]) -> list[Action]:
    """Decide for many observations at once, with ``act_batch`` if the agent has it."""
    batched = getattr(agent, "act_batch", None)
    if callable(batched):
        actions = list(batched(observations))
        if len(actions) != len(observations):
            raise ValueError(f"act_batch returned {len(actions)} actions for {len(observations)}")
        return actions
    return [agent.act(obs) for obs in observations]


def sample_from(probabilities: np.ndarray, rng: np.random.Generator) -> int:
    """Draw an action index from a probability vector."""
    return int(rng.choice(len(probabilities), p=probabilities / probabilities.sum()))


class RandomAgent:
    """Uniformly random legal moves.

    Finite games: uniform over the action mask. Free-text games: the game's own random
    legal-looking move for that observation (:meth:`Game.random_text_move`).
    """

    name = "random"

    def __init__(self, game: str | spiral_envs.Game | None = None, seed: int | None = None) -> None:
        self.game = spiral_envs.make_game(game) if isinstance(game, str) else game
        self.rng = np.random.default_rng(seed)

    def act(self, observation: Observation) -> Action:
        mask = observation.get("action_mask")
        if mask is not None:
            legal = np.flatnonzero(mask)
            if len(legal) == 0:
                raise ValueError("no legal action: the agent was asked to act off-turn")
            return int(legal[self.rng.integers(len(legal))])
        if self.game is None:
            raise ValueError("RandomAgent needs its game for free-text moves: RandomAgent(game=...)")
        return self.game.random_text_move(observation, self.rng)

    def action_probabilities(self, observation: Observation) -> np.ndarray:
        mask = np.asarray(observation["action_mask"], dtype=np.float64)
        return mask / mask.sum()
