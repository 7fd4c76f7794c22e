"""TextArena both ways: its games as spiral envs, and spiral's games behind TextArena's env API.

* :func:`from_textarena` wraps a two-player TextArena game as a spiral PettingZoo AEC env
  (:class:`~spiral_envs.aec.SpiralAECEnv`): text observations, a text action space, no action
  mask, spiral's invalid-move policy and turn cap. :func:`register_textarena` also registers
  it under ``spiral/TextArena-<id>``, so the arena, the rollout engine and the trainer can
  name it.
* :func:`to_textarena` gives a spiral game TextArena's env API: ``reset(num_players, seed)``,
  ``get_observation() -> (player_id, text)``, ``step(text) -> (done, info)`` and
  ``close() -> (rewards, game_info)``, with ``env.state.error_allowance`` honoured.

Seeding a wrapped TextArena game: TextArena games draw chance from Python's global ``random``
module (some from numpy's global generator too), and ``reset(seed)`` seeds only ``random``.
Each wrapped game keeps its own copy of both global generator states and swaps it in around
every call into TextArena, seeded from the spiral env's seed before the TextArena env is even
built, so a seed replays the same game in any process, however many envs interleave. What
stays out of reach: a game that draws from a generator of its own seeded from the clock or
the OS, iterates over a ``set`` of strings (its order changes between processes), or asks an
online model (LLM juries), and the wall-clock time it may read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

try:
    import textarena as ta
    from textarena.envs.registration import ENV_REGISTRY
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "spiral_envs.textarena needs TextArena: pip install 'textarena>=0.7.4'"
    ) from error

from spiral_envs.aec import AGENTS, InvalidMovePolicy, SpiralAECEnv
from spiral_envs.core import Game, GameState, Invalid, Parsed, one_line
from spiral_envs.registry import GAMES, make_game, register_game

ID_PREFIX = "TextArena-"
"""Spiral ids of registered TextArena games: ``TextArena-TicTacToe-v0``."""
TEXTARENA_TURN_CAP = 1000
"""The adapter's turn cap for wrapped TextArena games (their own limits end most games)."""
TEXTARENA_ERROR_ALLOWANCE = 1
"""TextArena's default: one invalid move is forgiven, the next ends the game."""


class _PrivateRandom:
    """Python's and numpy's global generator states of one TextArena game."""

    __slots__ = ("_numpy", "_python")

    def __init__(self, seed: int) -> None:
        saved = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed % 2**32)
        self._python, self._numpy = random.getstate(), np.random.get_state()
        random.setstate(saved[0])
        np.random.set_state(saved[1])

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Run the block with this game's generator states in the global generators."""
        saved = random.getstate(), np.random.get_state()
        random.setstate(self._python)
        np.random.set_state(self._numpy)
        try:
            yield
        finally:
            self._python, self._numpy = random.getstate(), np.random.get_state()
            random.setstate(saved[0])
            np.random.set_state(saved[1])


def _check_id(env_id: Any) -> str:
    if not isinstance(env_id, str) or env_id not in ENV_REGISTRY:
        raise ValueError(
            f"{env_id!r} is not a TextArena {ta.__version__} id (textarena.envs.registration."
            "ENV_REGISTRY lists them)"
        )
    return env_id


class TextArenaGame(Game):
    """A two-player TextArena game as a spiral :class:`~spiral_envs.core.Game`.

    Args:
        textarena_id: a registered TextArena id, e.g. ``"TicTacToe-v0"``; the default wrappers
            of that id that change actions (such as ``ActionFormattingWrapper``) apply.
        **textarena_kwargs: the TextArena env's own keyword arguments.

    Moves are free text, checked by TextArena itself: a move it calls invalid is an invalid
    move under the spiral env's policy, with TextArena's reason. Observation: ``(1,)``
    float32, 1 while the player is to move. Both players see every message TextArena sends
    them, game lines as ``[Game]`` lines and players' moves as ``[Player N]`` lines.
    """

    actions = None
    relays_messages = True
    observation_shape = (1,)
    max_turns = TEXTARENA_TURN_CAP
    textarena_id: str = ""

    def __init__(self, textarena_id: str | None = None, **textarena_kwargs: Any) -> None:
        self.textarena_id = _check_id(self.textarena_id if textarena_id is None else textarena_id)
        self.id = ID_PREFIX + self.textarena_id
        self.textarena_kwargs = dict(textarena_kwargs)
        try:
            self._make(0)
        except Exception as error:  # any failure means the game cannot be wrapped
            raise ValueError(
                f"TextArena's {self.textarena_id} cannot be played by two players here: "
                f"{type(error).__name__}: {one_line(str(error), 300, '...')}"
            ) from error

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (self.textarena_id, self.textarena_kwargs)

    def _make(self, seed: int) -> tuple[Any, _PrivateRandom]:
        """A TextArena env reset for two players with ``seed``, and its generator states."""
        chance = _PrivateRandom(seed)
        with chance.active():
            env = ta.make(self.textarena_id, **self.textarena_kwargs)
            env.reset(num_players=2, seed=seed)
        return env, chance

    def rules(self, player: int) -> str:
        return (
            f"You are Player {player} in {self.textarena_id}, a two-player game from TextArena, "
            f"against Player {1 - player}. The game's own instructions and messages follow "
            "under History; write your move as they ask.\n"
        )

    def new_state(self, rng: np.random.Generator) -> TextArenaState:
        env, chance = self._make(int(rng.integers(2**31)))
        return TextArenaState(self, rng, env, chance)


def _rebuild(textarena_id: str, textarena_kwargs: dict[str, Any]) -> TextArenaGame:
    return TextArenaGame(textarena_id, **textarena_kwargs)


class TextArenaState(GameState):
    """One TextArena game in progress, driven through the (possibly wrapped) TextArena env."""

    game: TextArenaGame

    def __init__(
        self, game: TextArenaGame, rng: np.random.Generator, env: Any, chance: _PrivateRandom
    ) -> None:
        super().__init__(game, rng)
        self.env = env
        self.chance = chance
        self.inner = env.state
        self.invalid_reason: str | None = None
        self.inner.set_invalid_move = self._record_invalid
        self.current_player = int(self.inner.current_player_id)
        self._relay()

    def _record_invalid(self, reason: str = "", *args: Any, **kwargs: Any) -> bool:
        """Stands in for TextArena's ``set_invalid_move``: the spiral env's policy decides."""
        self.invalid_reason = str(reason) or "TextArena rejected the move"
        self.inner.made_invalid_move = True
        return False

    def _relay(self) -> None:
        """Move the messages TextArena queued for each player into their views."""
        queues = self.inner.observations
        for player in (0, 1):
            messages, queues[player] = queues.get(player, []), []
            for sender, message, _ in messages:
                if sender in (0, 1):
                    self.log.say(sender, str(message), to=player)
                    continue
                for line in str(message).splitlines():
                    line = one_line(line, keep_spaces=True)
                    if line.strip():
                        self.log.game(line, to=player)

    def parse(self, text: str) -> Parsed | Invalid:
        return Parsed(text)

    def illegal_reason(self, move: Any) -> str | None:
        return None

    def apply(self, move: Any) -> Invalid | None:
        self.invalid_reason = None
        done = False
        with self.chance.active():
            try:
                done, _ = self.env.step(action=move)
            except Exception as error:  # noqa: BLE001 - a crash on a text makes it invalid
                self.invalid_reason = (
                    f"TextArena could not play it ({type(error).__name__}: "
                    f"{one_line(str(error), 200, '...')})"
                )
        self._relay()
        if self.invalid_reason is not None:
            return Invalid(self.invalid_reason)
        self.terminal = bool(done)
        if not done:
            self.current_player = int(self.inner.current_player_id)
        return None

    def returns(self) -> tuple[float, float]:
        rewards = self.inner.rewards or {}
        return (float(rewards.get(0, 0.0)), float(rewards.get(1, 0.0)))

    def details(self) -> dict[str, Any]:
        info = self.inner.game_info.get(0, {})
        return {
            "textarena_id": self.game.textarena_id,
            "textarena_reason": one_line(str(info.get("reason", ""))),
            "textarena_turns": int(self.inner.turn),
        }

    def observation(self, player: int) -> np.ndarray:
        return np.array([float(self.to_move(player))], dtype=np.float32)

    def state_text(self, player: int) -> str:
        return f"TextArena turn {self.inner.turn}; you are Player {player}."

    def moves_text(self) -> str:
        return "Your turn: write your move in the form the game's messages above ask for."

    def render(self) -> str:
        board = getattr(self.env, "get_board_str", None)
        if callable(board):
            with self.chance.active():
                return str(board())
        status = "over" if self.terminal else f"Player {self.current_player} to move"
        return f"{self.game.textarena_id}: turn {self.inner.turn}, {status}"


def from_textarena(
    env_id: str,
    *,
    render_mode: str | None = None,
    invalid_move: InvalidMovePolicy | Mapping[str, Any] | None = None,
    max_turns: int | None = None,
    max_cycles: int | None = None,
    with_text: bool = True,
    brief_text: bool = False,
    **textarena_kwargs: Any,
) -> SpiralAECEnv:
    """A two-player TextArena game as a spiral PettingZoo AEC env.

    The adapter arguments are :class:`~spiral_envs.aec.SpiralAECEnv`'s; the rest go to the
    TextArena env. A TextArena id that is unknown, or cannot be reset for two players,
    raises ``ValueError``.
    """
    return SpiralAECEnv(
        TextArenaGame(env_id, **textarena_kwargs),
        render_mode=render_mode,
        invalid_move=invalid_move,
        max_turns=max_turns,
        max_cycles=max_cycles,
        with_text=with_text,
        brief_text=brief_text,
    )


def register_textarena(env_id: str) -> str:
    """Register a TextArena game as ``spiral/TextArena-<env_id>`` everywhere spiral's games are
    (PettingZoo, Gymnasium, ``spiral_envs.GAMES``); return its spiral id."""
    game_id = ID_PREFIX + _check_id(env_id)
    if game_id not in GAMES:
        name = "TextArena_" + "".join(c if c.isalnum() else "_" for c in env_id)
        register_game(type(name, (TextArenaGame,), {"id": game_id, "textarena_id": env_id}))
    return game_id


class SpiralTextArenaState:
    """What TextArena code reads from ``env.state`` of a :class:`SpiralTextArenaEnv`.

    ``error_allowance`` is the spiral env's invalid-move retries (setting it changes them for
    the rest of the game, as in TextArena); ``game_state`` is the spiral game's state.
    """

    num_players = 2

    def __init__(self, aec: SpiralAECEnv) -> None:
        self._aec = aec
        self.game_state = aec.game_state
        self.role_mapping = {0: "Player 0", 1: "Player 1", ta.GAME_ID: "GAME"}
        self.max_turns = aec.max_turns
        self.turn = 0
        self.done = False
        self.current_player_id = AGENTS.index(aec.agent_selection)
        self.rewards: dict[int, float] | None = None
        self.game_info: dict[int, dict[str, Any]] = {
            p: {"role": f"Player {p}", "invalid_move": False, "turn_count": 0} for p in (0, 1)
        }

    @property
    def error_allowance(self) -> int:
        return self._aec.invalid_move.retries

    @error_allowance.setter
    def error_allowance(self, value: int) -> None:
        self._aec.invalid_move = dataclasses.replace(self._aec.invalid_move, retries=value)


class SpiralTextArenaEnv(ta.Env):
    """A spiral game with TextArena's env API (see :func:`to_textarena`)."""

    def __init__(
        self,
        game: str | Game,
        *,
        invalid_move: InvalidMovePolicy | Mapping[str, Any] | None = None,
        max_turns: int | None = None,
        **game_kwargs: Any,
    ) -> None:
        if not isinstance(game, Game):
            game = make_game(game, **game_kwargs)
        elif game_kwargs:
            raise TypeError("game variants go to the Game itself when a Game instance is passed")
        self.env_id = game.id
        if invalid_move is None:
            invalid_move = InvalidMovePolicy(retries=TEXTARENA_ERROR_ALLOWANCE)
        self._policy = InvalidMovePolicy.coerce(invalid_move)
        self._aec = SpiralAECEnv(game, invalid_move=self._policy, max_turns=max_turns)
        self.state: SpiralTextArenaState | None = None

    def reset(self, num_players: int, seed: int | None = None) -> None:
        if num_players != 2:
            raise ValueError(f"{self.env_id} is a two-player game: reset(num_players=2)")
        self._aec.invalid_move = self._policy
        self._aec.reset(seed=seed)
        self.state = SpiralTextArenaState(self._aec)

    def _started(self) -> SpiralTextArenaState:
        if self.state is None:
            raise RuntimeError(f"{self.env_id}: call reset(num_players=2) first")
        return self.state

    def get_observation(self) -> tuple[int, str]:
        """The player to move and everything they see: rules, history, state, legal moves."""
        state = self._started()
        return state.current_player_id, self._aec.observe(AGENTS[state.current_player_id])["text"]

    def step(self, action: str) -> tuple[bool, dict[str, Any]]:
        """Play the current player's move; return whether the game is over and their info."""
        state = self._started()
        if state.done:
            return True, {}
        aec = self._aec
        agent = aec.agent_selection
        aec.step(action)
        player = AGENTS.index(agent)
        state.turn += 1
        state.game_info[player]["turn_count"] += 1
        info = dict(aec.infos[agent])
        if aec.terminations[agent] or aec.truncations[agent]:
            state.done = True
            state.rewards = {p: float(aec.rewards[AGENTS[p]]) for p in (0, 1)}
            reason = aec.result_line() or ""
            for p in (0, 1):
                state.game_info[p]["reason"] = reason
            if aec.infos[agent].get("invalid_move") and info["ended_by"].startswith("invalid"):
                state.game_info[player]["invalid_move"] = True
        else:
            state.current_player_id = AGENTS.index(aec.agent_selection)
        return state.done, info

    def close(self) -> tuple[dict[int, float] | None, dict[int, dict[str, Any]]]:
        """The rewards (``None`` before the game is over) and each player's game info."""
        state = self._started()
        return state.rewards, state.game_info


def to_textarena(
    game_id: str | Game,
    *,
    invalid_move: InvalidMovePolicy | Mapping[str, Any] | None = None,
    max_turns: int | None = None,
    **game_kwargs: Any,
) -> SpiralTextArenaEnv:
    """A spiral game (an id or a :class:`~spiral_envs.core.Game`) with TextArena's env API.

    ``get_observation()`` returns the full text a player sees (spiral's prompt: rules,
    history, state and legal moves), as TextArena's default observation wrapper does, so
    TextArena's own observation wrappers, which read raw message lists, do not apply; its
    action wrappers do. Invalid moves follow TextArena's default (one retry, then the game
    ends at -1 / +1) unless ``invalid_move`` or ``env.state.error_allowance`` says otherwise.
    """
    return SpiralTextArenaEnv(
        game_id, invalid_move=invalid_move, max_turns=max_turns, **game_kwargs
    )
