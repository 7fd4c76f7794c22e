"""A person at the terminal: shows the player's text, lists legal moves, re-asks on bad input."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import spiral_envs
from spiral_agents.base import Observation


class HumanAgent:
    """Asks for a move on the terminal (or through the given ``ask``/``show`` functions).

    In finite games the answer may be a move's number in the list or its text (``[4]``);
    anything else is asked again. In free-text games the answer is sent as written.
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

    def act(self, observation: Observation) -> int | str:
        self.show("\n" + observation["text"])
        mask = observation.get("action_mask")
        if mask is None or self.actions is None:
            return self.ask("Your move (free text): ")
        legal = np.flatnonzero(mask).tolist()
        by_text = {self.actions[i].lower(): i for i in legal}
        self.show("  ".join(f"{n}) {self.actions[i]}" for n, i in enumerate(legal)))
        while True:
            answer = self.ask("Your move (number or text): ").strip()
            if answer.isdigit() and int(answer) < len(legal):
                return legal[int(answer)]
            if answer.lower() in by_text:
                return by_text[answer.lower()]
            if f"[{answer.lower()}]" in by_text:
                return by_text[f"[{answer.lower()}]"]
            self.show(f"Not a legal move: {answer!r}. Pick a number from 0 to {len(legal) - 1}.")
