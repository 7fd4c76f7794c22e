"""spiral_envs: two-player zero-sum text games as PettingZoo and Gymnasium environments.

Importing this package registers every game under ``spiral/<id>``::

    import pettingzoo, gymnasium, spiral_envs
    env = pettingzoo.make("aec", "spiral/TicTacToe-v0")
    env = spiral_envs.env("KuhnPoker-v1", rounds=1)
    env = gymnasium.make("spiral/TicTacToe-v0", seat="random")

``from_textarena``, ``to_textarena`` and ``register_textarena`` (the TextArena bridge of
:mod:`spiral_envs.textarena`) import TextArena on first use.
"""

from typing import Any

from spiral_envs.aec import AGENTS, InvalidMovePolicy, SpiralAECEnv, SpiralParallelEnv
from spiral_envs.core import Game, GameState, Invalid, MessageLog, Parsed
from spiral_envs.games.connect_four import ConnectFour
from spiral_envs.games.kuhn_poker import KuhnPoker
from spiral_envs.games.liars_dice import LiarsDice
from spiral_envs.games.negotiation import SimpleNegotiationV0, SimpleNegotiationV1
from spiral_envs.games.nim import Nim
from spiral_envs.games.pig_dice import PigDice, PigDiceV0
from spiral_envs.games.snake import Snake
from spiral_envs.games.tictactoe import TicTacToe
from spiral_envs.games.truth_and_deception import TruthAndDeception
from spiral_envs.gym import SingleAgentEnv
from spiral_envs.registry import GAMES, env, make_game, parallel_env, register_game

_BUILT_IN_GAMES = (
    TicTacToe,
    KuhnPoker,
    SimpleNegotiationV1,
    SimpleNegotiationV0,
    PigDice,
    PigDiceV0,
    LiarsDice,
    TruthAndDeception,
    ConnectFour,
    Nim,
    Snake,
)
for _game in _BUILT_IN_GAMES:
    register_game(_game)

_TEXTARENA_BRIDGE = ("from_textarena", "register_textarena", "to_textarena")


def __getattr__(name: str) -> Any:
    if name in _TEXTARENA_BRIDGE:
        from spiral_envs import textarena

        return getattr(textarena, name)
    raise AttributeError(f"module 'spiral_envs' has no attribute {name!r}")


__all__ = [
    "AGENTS",
    "GAMES",
    "Game",
    "GameState",
    "Invalid",
    "InvalidMovePolicy",
    "MessageLog",
    "Parsed",
    "SingleAgentEnv",
    "SpiralAECEnv",
    "SpiralParallelEnv",
    "env",
    "from_textarena",
    "make_game",
    "parallel_env",
    "register_game",
    "register_textarena",
    "to_textarena",
]
