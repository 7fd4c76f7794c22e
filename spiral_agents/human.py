"""A person at the terminal: shows the player's text and the legal moves, reads a move as the
game writes it, re-asks on bad input and tells the result at the end."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import spiral_envs
from spiral_agents.base import Observation

RULE = "-" * 60


class Quit(KeyboardInterrupt):
    """The person stopped playing (end of input): the run stops, as on Ctrl-C."""


def move_key(text: str) -> str:
    """A move's text reduced to what identifies it: ``[0 3]``, ``0, 3`` and `` 0  3 `` agree,
    as do ``[bet]`` and ``BET``."""
    inside = text.strip()
    if inside.startswith("[") and inside.endswith("]"):
        inside = inside[1:-1]
    return " ".join(inside.replace(",", " ").split()).lower()


class HumanAgent:
    """Asks for a move on the terminal (or through the given ``ask``/``show`` functions).

    In finite games the answer is a legal move as the game writes it, with or without its
    brackets (``[3]`` or ``3`` is cell 3 in TicTacToe, ``bet`` is ``[bet]``); anything else is
    asked again. In free-text games the answer is sent as written. End of input (Ctrl-D)
    raises :class:`Quit`, which stops the run rather than forfeiting the game.
    """

    name = "human"

    def __init__(
        self,
        game: str | None = None,
        seed: int | None = None,
        ask: Callable[[str], str] = input,
        show: Callable[[str], None] = print,
    ) -> None:
        self.actions = spiral_envs.make_game(game).actions if game else None
        self.ask, self.show = ask, show

    def _answer(self, prompt: str) -> str:
        try:
            return self.ask(prompt)
        except EOFError:
            raise Quit("end of input: the player quit") from None

    def act(self, observation: Observation) -> int | str:
        self.show("\n" + observation["text"])
        mask = observation.get("action_mask")
        if mask is None or self.actions is None:
            self.show(RULE)
            return self._answer("Your move (free text): ")
        legal = np.flatnonzero(mask).tolist()
        by_key = {move_key(self.actions[i]): i for i in legal}
        self.show(f"{RULE}\nLegal moves: {'  '.join(self.actions[i] for i in legal)}")
        while True:
            answer = self._answer("Your move, as written above (brackets optional): ")
            move = by_key.get(move_key(answer))
            if move is not None:
                return move
            self.show(f"Not a legal move: {answer.strip()!r}. Type one of the legal moves.")

    def game_over(self, observation: Observation, outcome: str, how: str) -> None:
        """Show the final position and the result."""
        result = {"win": "you won", "loss": "you lost", "draw": "a draw"}.get(outcome, outcome)
        detail = "" if how == "game over" else f" ({how})"
        self.show(f"\n{observation['text']}\n{RULE}\nGame over{detail}: {result}.")
