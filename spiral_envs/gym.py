"""The one single-agent Gymnasium adapter: the learner takes a seat, the opponent plays inside ``step``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from spiral_envs.aec import AGENTS, InvalidMovePolicy, SpiralAECEnv
from spiral_envs.core import Game

Seat = Literal["player_0", "player_1", "random"]
Opponent = Callable[[dict[str, Any]], Any]


class SingleAgentEnv(gymnasium.Env):
    """One seat of a two-player game as a Gymnasium environment.

    Args:
        game: a registered game id (``"TicTacToe-v0"``) or a :class:`~spiral_envs.core.Game`.
        opponent: plays the other seat: any callable ``observation -> action``, or an object
            with ``act(observation)`` (and optionally ``reset()``, called at every episode
            start). Default: uniformly random legal moves drawn from the env's seeded RNG.
        seat: ``"player_0"``, ``"player_1"`` or ``"random"`` (drawn every episode).
        with_text: keep the ``"text"`` key in observations; pass ``False`` for
            Stable-Baselines3, which does not accept Text spaces.
        render_mode, invalid_move, max_turns: as for :class:`~spiral_envs.aec.SpiralAECEnv`.
        **game_kwargs: the game's own variants (e.g. ``rounds=1``).

    The reward is the learner's own: the sum of what it received since its last move,
    including the game's end on the opponent's move. ``action_masks()`` serves sb3-contrib's
    MaskablePPO. ``step`` or ``render`` before ``reset`` raise Gymnasium's ``ResetNeeded``, as
    its ``OrderEnforcing`` wrapper does; ``step`` after the episode ended raises
    ``RuntimeError``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"]}

    def __init__(
        self,
        game: str | Game,
        *,
        opponent: Opponent | Any | None = None,
        seat: Seat = "player_0",
        with_text: bool = True,
        render_mode: str | None = None,
        invalid_move: InvalidMovePolicy | Mapping[str, Any] | None = None,
        max_turns: int | None = None,
        **game_kwargs: Any,
    ) -> None:
        from spiral_envs.registry import make_game

        if seat not in ("player_0", "player_1", "random"):
            raise ValueError(f"seat must be 'player_0', 'player_1' or 'random', got {seat!r}")
        if not isinstance(game, Game):
            game = make_game(game, **game_kwargs)
        elif game_kwargs:
            raise TypeError("game variants go to the Game itself when a Game instance is passed")
        self.aec = SpiralAECEnv(
            game, render_mode=render_mode, invalid_move=invalid_move, max_turns=max_turns
        )
        self.render_mode = render_mode
        self.seat = seat
        self.with_text = with_text
        self.opponent = opponent
        self._opponent_act = getattr(opponent, "act", opponent)
        if opponent is not None and not callable(self._opponent_act):
            raise TypeError("opponent must be callable or have an act(observation) method")
        obs_space = self.aec.observation_space("player_0")
        if not with_text:
            obs_space = spaces.Dict({k: v for k, v in obs_space.items() if k != "text"})
        self.observation_space = obs_space
        self.action_space = self.aec.action_space("player_0")
        self.learner = "player_0"
        self._done = True

    def _observe(self) -> dict[str, Any]:
        obs = self.aec.observe(self.learner)
        if not self.with_text:
            del obs["text"]
        return obs

    def _play_opponent(self) -> float:
        """Let the opponent move until it is the learner's turn or the game is over."""
        aec, learner, reward = self.aec, self.learner, 0.0
        while not (aec.terminations[learner] or aec.truncations[learner]):
            if aec.agent_selection == learner:
                break
            opponent = aec.agent_selection
            if self._opponent_act is None:
                action = aec.state.random_move(self.np_random)
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
            if self.aec.state is None:
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
            mask[self.aec.state.legal_actions()] = True
        return mask

    def render(self) -> str | None:
        if self.aec.state is None:
            raise ResetNeeded("Cannot call env.render() before calling env.reset()")
        return self.aec.render()
