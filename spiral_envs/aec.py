"""The PettingZoo adapters that serve every game in :mod:`spiral_envs.games`: AEC and Parallel.

Both enforce the call order that PettingZoo's ``OrderEnforcingWrapper`` does, with its exact
errors, at the cost of a comparison or two a call instead of a wrapper around every attribute:
``step``, ``observe``, ``last``, ``agent_iter`` and ``render`` before ``reset`` raise its
``AssertionError`` (``last``: its ``AttributeError``), and ``step`` once no agent is left logs
its warning and does nothing. The AEC attributes (``rewards``, ``agents``...) are not set
before ``reset``, so reading them raises ``AttributeError`` as the wrapper does, with Python's
own message: a ``__getattr__`` would turn off CPython's specialized attribute loads, which
cost a fifth of the env's speed when measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv
from pettingzoo.utils.conversions import aec_to_parallel_wrapper
from pettingzoo.utils.env import AECIterable
from pettingzoo.utils.env_logger import EnvLogger

from spiral_envs.core import Game, GameState, Invalid, RandomSource, one_line

AGENTS = ("player_0", "player_1")
MAX_TEXT_CHARS = 1_000_000
LOG_NOTE = "Lines starting with [Game] come from the game."
RELAY_NOTE = " A line starting with [Player N] holds Player N's own words up to its end."
MAX_REASON_CHARS = 500
"""The reason for an invalid move, as recorded and shown, is cut to this many characters."""


@dataclass(frozen=True)
class InvalidMovePolicy:
    """What happens when a player submits a move that cannot be played.

    The offender is told the reason and may try again ``retries`` times in a row; the next
    invalid move ends the game with the given rewards. SPIRAL's training used
    ``InvalidMovePolicy.spiral_training()`` (no retry, -1.5 / +0.5).
    """

    retries: int = 0
    offender_reward: float = -1.0
    opponent_reward: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be a non-negative int, got {self.retries!r}")

    @classmethod
    def spiral_training(cls) -> InvalidMovePolicy:
        """The SPIRAL trainer's setting: first invalid move ends the game at -1.5 / +0.5."""
        return cls(retries=0, offender_reward=-1.5, opponent_reward=0.5)

    @classmethod
    def coerce(cls, value: InvalidMovePolicy | Mapping[str, Any] | None) -> InvalidMovePolicy:
        """Accept a policy, a mapping of its fields (e.g. from a config file) or ``None``."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls(**value)
        raise TypeError(f"invalid_move must be an InvalidMovePolicy or a mapping, got {value!r}")


class TextSpace(spaces.Text):
    """A Text space that holds any Python string up to ``max_length`` characters.

    Gymnasium's Text checks each character against a fixed charset; the text shown to a
    language model (and relayed opponent messages) can hold any Unicode character.
    """

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length


class SpiralAECEnv(AECEnv):
    """A two-player game as a PettingZoo AEC environment with text and numeric views.

    Observations are dicts: ``"observation"`` (numeric, what the player may know),
    ``"action_mask"`` (int8, finite-move games only; zeros off-turn) and ``"text"`` (the rules,
    the history as this player saw it, the state and the legal moves). ``step`` takes an index
    into ``game.actions`` or the raw text a player wrote; ``Invalid(reason)`` submits a move
    that is invalid for a reason found outside the game (an LLM response with no answer).
    Every reason is folded onto one line (:func:`~spiral_envs.core.one_line`) before it is
    recorded or shown.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["ansi", "human"], "name": "spiral", "is_parallelizable": False
    }

    def __init__(
        self,
        game: Game,
        *,
        render_mode: str | None = None,
        invalid_move: InvalidMovePolicy | Mapping[str, Any] | None = None,
        max_turns: int | None = None,
    ) -> None:
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.game = game
        self.metadata = {**self.metadata, "name": game.id, "is_parallelizable": game.simultaneous}
        self.render_mode = render_mode
        self.invalid_move = InvalidMovePolicy.coerce(invalid_move)
        self.max_turns = game.max_turns if max_turns is None else int(max_turns)
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self.possible_agents = list(AGENTS)
        self._num_actions = None if game.actions is None else len(game.actions)
        self._no_moves = None if game.actions is None else np.zeros(len(game.actions), np.int8)
        note = LOG_NOTE + (RELAY_NOTE if game.relays_messages else "")
        self._rules = tuple(f"{game.rules(p).rstrip()}\n{note}" for p in range(2))
        self._spaces: tuple[dict[str, spaces.Space], dict[str, spaces.Space]] | None = None
        self._random = RandomSource()
        self.state: GameState | None = None

    # --- spaces (built on first use, then cached: most envs in a large batch never ask) ----
    def _build_spaces(self) -> tuple[dict[str, spaces.Space], dict[str, spaces.Space]]:
        if self._spaces is None:
            game = self.game
            obs, act = {}, {}
            for agent in AGENTS:
                parts: dict[str, spaces.Space] = {
                    "observation": spaces.Box(
                        game.observation_low,
                        game.observation_high,
                        game.observation_shape,
                        game.observation_dtype,
                    )
                }
                if self._num_actions is not None:
                    parts["action_mask"] = spaces.Box(0, 1, (self._num_actions,), np.int8)
                    act[agent] = spaces.Discrete(self._num_actions)
                else:
                    act[agent] = TextSpace(MAX_TEXT_CHARS, min_length=0)
                parts["text"] = TextSpace(MAX_TEXT_CHARS, min_length=0)
                obs[agent] = spaces.Dict(parts)
            self._spaces = (obs, act)
        return self._spaces

    def observation_space(self, agent: str) -> spaces.Space:
        return self._build_spaces()[0][agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._build_spaces()[1][agent]

    # --- the AEC cycle ------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self._random = RandomSource(seed)
        self.state = self.game.new_state(self._random)
        self.agents = list(AGENTS)
        self.rewards = {"player_0": 0.0, "player_1": 0.0}
        self._cumulative_rewards = {"player_0": 0.0, "player_1": 0.0}
        self.terminations = {"player_0": False, "player_1": False}
        self.truncations = {"player_0": False, "player_1": False}
        self.infos = {"player_0": {}, "player_1": {}}
        self.agent_selection = AGENTS[self.state.current_player]
        self.turns = 0
        self._invalid_streak = 0
        if self.render_mode == "human":
            self.render()

    def last(self, observe: bool = True) -> tuple[dict[str, Any] | None, float, bool, bool, dict]:
        try:
            agent = self.agent_selection
        except AttributeError:
            raise AttributeError("agent_selection cannot be accessed before reset") from None
        return (
            self.observe(agent) if observe else None,
            self._cumulative_rewards[agent],
            self.terminations[agent],
            self.truncations[agent],
            self.infos[agent],
        )

    def agent_iter(self, max_iter: int = 2**63) -> AECIterable:
        if self.state is None:
            raise AssertionError("reset() needs to be called before agent_iter().")
        return super().agent_iter(max_iter)

    def observe(self, agent: str) -> dict[str, Any]:
        state = self.state
        if state is None:
            raise AssertionError("reset() needs to be called before observe.")
        player = 0 if agent == "player_0" else 1
        live = agent in self.agents and not (self.terminations[agent] or self.truncations[agent])
        my_turn = live and state.to_move(player)
        obs: dict[str, Any] = {"observation": state.observation(player)}
        if self._no_moves is not None:
            obs["action_mask"] = state.action_mask() if my_turn else self._no_moves.copy()
        if my_turn:
            prompt = state.moves_text()
        elif not live or state.terminal:
            prompt = "The game is over."
        else:
            prompt = f"Waiting for Player {state.current_player} to move."
        obs["text"] = (
            f"{self._rules[player]}\n\nHistory:\n{state.log.view(player) or '(nothing yet)'}\n"
            f"{state.state_text(player)}\n\n{prompt}"
        )
        return obs

    def step(self, action: Any) -> None:
        state = self.state
        if state is None:
            raise AssertionError("reset() needs to be called before step.")
        if not self.agents:
            EnvLogger.warn_step_after_terminated_truncated()
            return
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        player = state.current_player
        if isinstance(action, str):
            parsed = state.parse(action)
            if isinstance(parsed, Invalid):
                move, message, reason = None, "", parsed.reason
            else:
                move, message = parsed.move, parsed.message
                reason = state.illegal_reason(move)
        elif isinstance(action, Invalid):  # e.g. an LLM response with no answer, and why
            if not isinstance(action.reason, str):
                raise TypeError(f"Invalid(reason) takes a str, got {type(action.reason).__name__}")
            move, message, reason = None, "", action.reason
        else:
            move, message = self._action_index(action), ""
            reason = state.illegal_reason(move)
        self.turns += 1
        self._cumulative_rewards[agent] = 0.0
        rewards = self.rewards
        rewards["player_0"] = rewards["player_1"] = 0.0

        if reason is not None:
            reason = one_line(reason, MAX_REASON_CHARS, "...") or "no reason given"
            self._invalid_streak += 1
            self.infos[agent] = {"invalid_move": True, "reason": reason}
            left = self.invalid_move.retries - self._invalid_streak + 1
            if left > 0:
                state.log.game(
                    f"Your move was invalid: {reason}. Try again ({left} attempt(s) left).",
                    to=player,
                )
            else:
                policy = self.invalid_move
                state.log.game(f"Player {player} made an invalid move ({reason}); the game ends.")
                rewards[agent] = policy.offender_reward
                rewards[AGENTS[1 - player]] = policy.opponent_reward
                self._finish(f"invalid move by {agent}: {reason}", truncated=False, player=player)
        else:
            self._invalid_streak = 0
            if message and self.game.relays_messages:
                state.log.say(player, message)
            state.apply(move)
            if state.terminal:
                r0, r1 = state.returns()
                rewards["player_0"], rewards["player_1"] = r0, r1
                self._finish("game over", truncated=False)
            else:
                self.agent_selection = AGENTS[state.current_player]
        if self.turns >= self.max_turns and not self.terminations[agent]:
            state.log.game(f"The turn limit ({self.max_turns}) is reached: a draw.")
            rewards["player_0"] = rewards["player_1"] = 0.0
            self._finish("turn limit", truncated=True)
        self._cumulative_rewards["player_0"] += rewards["player_0"]
        self._cumulative_rewards["player_1"] += rewards["player_1"]
        if self.render_mode == "human":
            self.render()

    def _action_index(self, action: Any) -> int:
        """Check an action index from code; out-of-space or non-integer actions raise."""
        n = self._num_actions
        if isinstance(action, np.ndarray) and action.ndim == 0:
            action = action.item()
        if not isinstance(action, (int, np.integer)) or isinstance(action, (bool, np.bool_)):
            # ValueError like every action outside the space, as the README documents
            raise ValueError(  # noqa: TRY004
                f"{self.game.id} takes an action index or the player's text, "
                f"got {type(action).__name__}"
            )
        if n is None:
            raise ValueError(f"{self.game.id} takes text actions, not {action!r}")
        if not 0 <= action < n:
            raise ValueError(f"action {action} is outside Discrete({n}) of {self.game.id}")
        return int(action)

    def _finish(self, why: str, *, truncated: bool, player: int | None = None) -> None:
        state = self.state
        details = state.details()
        r = self.rewards
        for i, agent in enumerate(AGENTS):
            info = self.infos[agent] if player == i else {}
            outcome = "win" if r[agent] > r[AGENTS[1 - i]] else "loss" if r[agent] < r[AGENTS[1 - i]] else "draw"
            info.update(details, outcome=outcome, ended_by=why, turns=self.turns)
            self.infos[agent] = info
            if truncated:
                self.truncations[agent] = True
            else:
                self.terminations[agent] = True
        self.agent_selection = AGENTS[1 - state.current_player]

    def render(self) -> str | None:
        if self.state is None:
            raise AssertionError("reset() needs to be called before render.")
        if self.render_mode is None:
            return None
        text = self.state.render()
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        pass


class SpiralParallelEnv(aec_to_parallel_wrapper):
    """A simultaneous-move game's AEC env as a PettingZoo Parallel env, with its order checks."""

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        aec = self.aec_env
        if aec.state is None:
            raise AssertionError("reset() needs to be called before step.")
        if not aec.agents:
            EnvLogger.warn_step_after_terminated_truncated()
            return {}, {}, {}, {}, {}
        return super().step(actions)
