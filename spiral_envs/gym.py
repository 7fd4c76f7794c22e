"""The one single-agent Gymnasium adapter: the learner takes a seat, the opponent plays inside ``step``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from spiral_envs.aec import AGENTS, RENDER_MODES, InvalidMovePolicy, SpiralAECEnv
from spiral_envs.core import Game

Seat = Literal["player_0", "player_1", "random"]
Opponent = Callable[[dict[str, Any]], Any]
_TEXTLESS_CALLERS = ("stable_baselines3.", "sb3_contrib.")
"""Libraries that take no text space: asked for the default view, they are told what to pass."""
_CALLER_DEPTH = 64
_DIGIT_KEYS = 10


class SingleAgentEnv(gymnasium.Env):
    """One seat of a two-player game as a Gymnasium environment.

    Args:
        game: a registered game id (``"TicTacToe-v0"``) or a :class:`~spiral_envs.core.Game`.
        opponent: plays the other seat: any callable ``observation -> action``, or an object
            with ``act(observation)`` (and optionally ``reset()``, called at every episode
            start). Default: uniformly random legal moves drawn from the env's seeded RNG.
        seat: ``"player_0"``, ``"player_1"`` or ``"random"`` (drawn every episode).
        with_text: whether observations keep the ``"text"`` key (the default keeps it). Pass
            ``False`` for Stable-Baselines3, which takes no text space: asked for the
            observation space of the default view, Stable-Baselines3 and sb3-contrib get a
            ``ValueError`` that says so; an explicit ``True`` is left to the caller.
        render_mode, invalid_move, max_turns, max_cycles: as for
            :class:`~spiral_envs.aec.SpiralAECEnv` (``render_mode="rgb_array"`` too).
        **game_kwargs: the game's own variants (e.g. ``rounds=1``).

    The reward is the learner's own: the sum of what it received since its last move,
    including the game's end on the opponent's move. ``action_masks()`` serves sb3-contrib's
    MaskablePPO; ``get_keys_to_action()`` serves ``gymnasium.utils.play``. ``step`` or
    ``render`` before ``reset`` raise Gymnasium's ``ResetNeeded``, as its ``OrderEnforcing``
    wrapper does; ``step`` after the episode ended raises ``RuntimeError``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": RENDER_MODES, "render_fps": 2}

    def __init__(
        self,
        game: str | Game,
        *,
        opponent: Opponent | Any | None = None,
        seat: Seat = "player_0",
        with_text: bool | None = None,
        render_mode: str | None = None,
        invalid_move: InvalidMovePolicy | Mapping[str, Any] | None = None,
        max_turns: int | None = None,
        max_cycles: int | None = None,
        **game_kwargs: Any,
    ) -> None:
        from spiral_envs.registry import make_game

        if seat not in ("player_0", "player_1", "random"):
            raise ValueError(f"seat must be 'player_0', 'player_1' or 'random', got {seat!r}")
        if not isinstance(game, Game):
            game = make_game(game, **game_kwargs)
        elif game_kwargs:
            raise TypeError("game variants go to the Game itself when a Game instance is passed")
        self._text_by_default = with_text is None
        self.with_text = with_text is not False
        # The opponent sees the text whatever the learner sees; the random default needs none.
        self.aec = SpiralAECEnv(
            game,
            render_mode=render_mode,
            invalid_move=invalid_move,
            max_turns=max_turns,
            max_cycles=max_cycles,
            with_text=self.with_text or opponent is not None,
        )
        self.render_mode = render_mode
        self.seat = seat
        self.opponent = opponent
        self._opponent_act = getattr(opponent, "act", opponent)
        if opponent is not None and not callable(self._opponent_act):
            raise TypeError("opponent must be callable or have an act(observation) method")
        obs_space = self.aec.observation_space("player_0")
        if not self.with_text and "text" in obs_space.spaces:
            obs_space = spaces.Dict({k: v for k, v in obs_space.items() if k != "text"})
        self._observation_space = obs_space
        self.action_space = self.aec.action_space("player_0")
        self.learner = "player_0"
        self._done = True

    @property
    def observation_space(self) -> spaces.Dict:
        if self._text_by_default:
            _refuse_textless_caller(self.aec.game.id)
        return self._observation_space

    def _observe(self) -> dict[str, Any]:
        obs = self.aec.observe(self.learner)
        if not self.with_text:
            obs.pop("text", None)
        return obs

    def _play_opponent(self) -> float:
        """Let the opponent move until it is the learner's turn or the game is over."""
        aec, learner, reward = self.aec, self.learner, 0.0
        while not (aec.terminations[learner] or aec.truncations[learner]):
            if aec.agent_selection == learner:
                break
            opponent = aec.agent_selection
            if self._opponent_act is None:
                try:
                    action = aec.game_state.random_move(self.np_random)
                except NotImplementedError:
                    raise TypeError(
                        f"{aec.game.id} has no random move for the default opponent: pass "
                        "opponent=<a callable or an agent>"
                    ) from None
            else:
                action = self._opponent_act(aec.observe(opponent))
            aec.step(action)
            reward += aec.rewards[learner]
        return reward

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self.aec.reset(seed=int(self.np_random.integers(2**63)))
        self.learner = (
            AGENTS[int(self.np_random.integers(2))] if self.seat == "random" else self.seat
        )
        reset_opponent = getattr(self.opponent, "reset", None)
        if callable(reset_opponent):
            reset_opponent()
        self._play_opponent()
        self._done = False
        return self._observe(), {"seat": self.learner}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._done:
            if self.aec.game_state is None:
                raise ResetNeeded("Cannot call env.step() before calling env.reset()")
            raise RuntimeError("the episode is over: call reset() before step()")
        aec, learner = self.aec, self.learner
        aec.step(action)
        reward = aec.rewards[learner] + self._play_opponent()
        terminated = aec.terminations[learner]
        truncated = aec.truncations[learner]
        self._done = terminated or truncated
        info = dict(aec.infos[learner])
        info["seat"] = learner
        return self._observe(), float(reward), terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """Legal-move mask of the learner (all False when it cannot move)."""
        if self.aec.game.actions is None:
            raise TypeError(f"{self.aec.game.id} has free-text moves and no action mask")
        mask = np.zeros(len(self.aec.game.actions), dtype=bool)
        if not self._done and self.aec.agent_selection == self.learner:
            mask[self.aec.game_state.legal_actions()] = True
        return mask

    def get_keys_to_action(self) -> dict[str, int]:
        """Keys for ``gymnasium.utils.play``: digit key ``i`` plays action ``i``."""
        actions = self.aec.game.actions
        if actions is None:
            raise TypeError(f"{self.aec.game.id} has free-text moves: no key plays them")
        if len(actions) > _DIGIT_KEYS:
            raise ValueError(
                f"{self.aec.game.id} has {len(actions)} actions, more than the {_DIGIT_KEYS} "
                "digit keys: pass keys_to_action to gymnasium.utils.play"
            )
        return {str(i): i for i in range(len(actions))}

    def render(self) -> str | np.ndarray | None:
        if self.aec.game_state is None:
            raise ResetNeeded("Cannot call env.render() before calling env.reset()")
        return self.aec.render()


def _refuse_textless_caller(game_id: str) -> None:
    """Raise the one line that tells Stable-Baselines3 users what to pass, when it is asking."""
    frame = sys._getframe(2)
    for _ in range(_CALLER_DEPTH):
        if frame is None:
            return
        if frame.f_globals.get("__name__", "").startswith(_TEXTLESS_CALLERS):
            raise ValueError(
                f"spiral/{game_id} observations keep their text by default and "
                "Stable-Baselines3 takes no text space: make the env with with_text=False "
                "(make_vec_env(..., env_kwargs={'with_text': False}))"
            )
        frame = frame.f_back
