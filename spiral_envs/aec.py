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
from spiral_envs.spaces import TextSpace

AGENTS = ("player_0", "player_1")
RENDER_MODES = ["ansi", "human", "rgb_array"]
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


def turn_cap(game: Game, max_turns: int | None, max_cycles: int | None) -> int:
    """The adapter's turn cap: ``max_turns`` moves, or ``max_cycles`` moves of each player."""
    if max_turns is not None and max_cycles is not None:
        raise ValueError("pass max_turns or max_cycles, not both")
    for name, value in (("max_turns", max_turns), ("max_cycles", max_cycles)):
        if value is not None and (
            not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if max_cycles is not None:
        return 2 * int(max_cycles)
    return game.max_turns if max_turns is None else int(max_turns)


class SpiralAECEnv(AECEnv):
    """A two-player game as a PettingZoo AEC environment with text and numeric views.

    Observations are dicts: ``"observation"`` (numeric, what the player may know),
    ``"action_mask"`` (int8, finite-move games only; zeros off-turn) and, unless
    ``with_text=False``, ``"text"`` (the rules, the history as this player saw it, the state
    and the legal moves; with ``brief_text=True`` the state and the legal moves only, for
    models too small to read a long prompt: complete only where the game's state text carries
    everything a player knows, as in Kuhn Poker or TicTacToe). ``step`` takes an index into ``game.actions`` or the raw text a
    player wrote; ``Invalid(reason)`` submits a move that is invalid for a reason found outside
    the game (an LLM response with no answer). Every reason is folded onto one line
    (:func:`~spiral_envs.core.one_line`) before it is recorded or shown.

    The turn cap is ``max_turns`` submitted moves (the game's own cap by default), or
    ``max_cycles`` moves of each player, as PettingZoo envs take it. Render modes: ``"ansi"``
    (the spectator's text, with the result once the game is over), ``"human"`` (that text
    printed after every move under a separator line, with the legend at the start) and
    ``"rgb_array"`` (:meth:`~spiral_envs.core.GameState.render_rgb`).

    PettingZoo's ``state()`` (a global state) is not provided: the game's own state is
    ``game_state``.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": RENDER_MODES, "name": "spiral", "is_parallelizable": False,
        "render_fps": 2,
    }  # fmt: skip

    def __init__(
        self,
        game: Game,
        *,
        render_mode: str | None = None,
        invalid_move: InvalidMovePolicy | Mapping[str, Any] | None = None,
        max_turns: int | None = None,
        max_cycles: int | None = None,
        with_text: bool = True,
        brief_text: bool = False,
    ) -> None:
        super().__init__()
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
        self.game = game
        self.metadata = {**self.metadata, "name": game.id, "is_parallelizable": game.simultaneous}
        self.render_mode = render_mode
        self.invalid_move = InvalidMovePolicy.coerce(invalid_move)
        self.max_turns = turn_cap(game, max_turns, max_cycles)
        self.with_text = bool(with_text)
        self.brief_text = bool(brief_text)
        self.possible_agents = list(AGENTS)
        self._num_actions = None if game.actions is None else len(game.actions)
        self._no_moves = None if game.actions is None else np.zeros(len(game.actions), np.int8)
        note = LOG_NOTE + (RELAY_NOTE if game.relays_messages else "")
        self._rules = tuple(f"{game.rules(p).rstrip()}\n{note}" for p in range(2))
        self._spaces: tuple[dict[str, spaces.Space], dict[str, spaces.Space]] | None = None
        self._random = RandomSource()
        self.game_state: GameState | None = None
        self._result: str | None = None

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
                    act[agent] = TextSpace(MAX_TEXT_CHARS)
                if self.with_text:
                    parts["text"] = TextSpace(MAX_TEXT_CHARS)
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
        self.game_state = self.game.new_state(self._random)
        self.agents = list(AGENTS)
        self.rewards = {"player_0": 0.0, "player_1": 0.0}
        self._cumulative_rewards = {"player_0": 0.0, "player_1": 0.0}
        self.terminations = {"player_0": False, "player_1": False}
        self.truncations = {"player_0": False, "player_1": False}
        self.infos = {"player_0": {}, "player_1": {}}
        self.agent_selection = AGENTS[self.game_state.current_player]
        self.turns = 0
        self._invalid_streak = 0
        self._result = None
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
        if self.game_state is None:
            raise AssertionError("reset() needs to be called before agent_iter().")
        return super().agent_iter(max_iter)

    def observe(self, agent: str) -> dict[str, Any]:
        state = self.game_state
        if state is None:
            raise AssertionError("reset() needs to be called before observe.")
        player = 0 if agent == "player_0" else 1
        live = agent in self.agents and not (self.terminations[agent] or self.truncations[agent])
        my_turn = live and state.to_move(player)
        obs: dict[str, Any] = {"observation": state.observation(player)}
        if self._no_moves is not None:
            obs["action_mask"] = state.action_mask() if my_turn else self._no_moves.copy()
        if not self.with_text:
            return obs
        if my_turn:
            prompt = state.moves_text()
        elif not live or state.terminal:
            prompt = "The game is over."
        else:
            prompt = f"Waiting for Player {state.current_player} to move."
        if self.brief_text:
            obs["text"] = f"{state.state_text(player)}\n\n{prompt}"
            return obs
        obs["text"] = (
            f"{self._rules[player]}\n\nHistory:\n{state.log.view(player) or '(nothing yet)'}\n"
            f"{state.state_text(player)}\n\n{prompt}"
        )
        return obs

    def step(self, action: Any) -> None:
        state = self.game_state
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

        if reason is None:
            if message and self.game.relays_messages:
                state.log.say(player, message)
            rejected = state.apply(move)
            if rejected is not None:
                reason = rejected.reason
            else:
                self._invalid_streak = 0
                if state.terminal:
                    r0, r1 = state.returns()
                    rewards["player_0"], rewards["player_1"] = r0, r1
                    self._finish("game over", truncated=False)
                else:
                    self.agent_selection = AGENTS[state.current_player]
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
        state = self.game_state
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
        winner = {"win": "player_0 wins", "loss": "player_1 wins"}
        self._result = f"Result: {winner.get(self.infos['player_0']['outcome'], 'a draw')} ({why})."

    def render(self) -> str | np.ndarray | None:
        state = self.game_state
        if state is None:
            raise AssertionError("reset() needs to be called before render.")
        mode = self.render_mode
        if mode is None:
            return None
        if mode == "rgb_array":
            return state.render_rgb()
        result = self.result_line()
        text = state.render() if result is None else f"{state.render()}\n{result}"
        if mode == "ansi":
            return text
        header = f"---- {self.game.id}, turn {self.turns} ----"
        if self.turns == 0 and self.game.legend:
            header += f"\nLegend: {self.game.legend}"
        print(f"{header}\n{text}")
        return None

    def result_line(self) -> str | None:
        """``"Result: player_0 wins (game over)."`` once the game is over, else ``None``."""
        return self._result

    def close(self) -> None:
        pass


class SpiralParallelEnv(aec_to_parallel_wrapper):
    """A simultaneous-move game's AEC env as a PettingZoo Parallel env, with its order checks."""

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        aec = self.aec_env
        if aec.game_state is None:
            raise AssertionError("reset() needs to be called before step.")
        if not aec.agents:
            EnvLogger.warn_step_after_terminated_truncated()
            return {}, {}, {}, {}, {}
        return super().step(actions)
