"""Framework-free building blocks shared by every game's rules module.

A game is two small classes, in the spirit of OpenSpiel's Python games:

* a :class:`Game` declares its properties (id, discrete action set or free text, numeric
  observation layout, turn cap) and writes the rules each player is shown;
* a :class:`GameState` holds one play-through: whose turn it is, the legal moves, how text
  parses into a move, what a move does, the returns, and what each player may see.

Nothing here imports PettingZoo or Gymnasium: the adapters in :mod:`spiral_envs.aec` and
:mod:`spiral_envs.gym` serve every game, so adding a game needs no adapter code.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from spiral_envs.render import text_frame

NUM_PLAYERS = 2
MAX_MESSAGE_CHARS = 2000
"""Relayed free text longer than this is cut (and marked as cut)."""
QUOTE_CHARS = 40
"""Player text quoted in the reason for an invalid move is cut to this many characters."""

_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
# Characters that could make untrusted text look like something else: every character of the
# Unicode categories Cc (controls), Cf (format: bidirectional overrides and isolates,
# zero-width marks, invisible tag characters), Cs (lone surrogates, which cannot be encoded)
# and Zl/Zp (line and paragraph separators), plus the unassigned code points among them. They
# are listed as ranges because deriving them from unicodedata at import takes 0.15 s;
# tests/test_text_folding.py checks the list against the running Python's Unicode database.
# Controls and separators become spaces, the rest is dropped.
_HIDDEN_RANGES = (
    (0x0000, 0x001F), (0x007F, 0x009F), (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C),
    (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E),
    (0x200B, 0x200F), (0x2028, 0x202E), (0x2060, 0x206F), (0xD800, 0xDFFF), (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE007F),
)  # fmt: skip
_HIDDEN: dict[int, str | None] = {
    code: " " if code < 0xA0 or code in (0x2028, 0x2029) else None
    for low, high in _HIDDEN_RANGES
    for code in range(low, high + 1)
}


def bracketed(text: str) -> Iterator[re.Match[str]]:
    """Yield every innermost ``[...]`` segment of ``text``, left to right, in linear time."""
    return _BRACKETED.finditer(text)


def one_line(
    text: str,
    limit: int = MAX_MESSAGE_CHARS,
    cut_mark: str = " [...message cut]",
    *,
    keep_spaces: bool = False,
) -> str:
    """Fold untrusted text so that it is safe to show inside a single line.

    Every player's text that reaches an observation, an info or a reason passes through here:
    every kind of line break and whitespace run becomes one space, control, bidirectional and
    invisible formatting characters are dropped, and text over ``limit`` characters is cut and
    ends with ``cut_mark``. Linear time; only the first ``4 * limit`` characters are read.
    ``keep_spaces=True`` (for one line of a board drawn by a wrapped engine) leaves runs of
    spaces as they are and strips only the line's end; line breaks still become spaces.
    """
    cut = len(text) > 4 * limit
    text = text[: 4 * limit].translate(_HIDDEN)
    text = text.rstrip() if keep_spaces else " ".join(text.split())
    if cut or len(text) > limit:
        text = (text[:limit].rstrip() + cut_mark).lstrip()
    return text


def quote(text: str) -> str:
    """Player text folded by :func:`one_line` and cut to :data:`QUOTE_CHARS`, for a reason."""
    return one_line(text, QUOTE_CHARS, "...")


NO_WINNER = -1
"""The ``winner`` in a game's infos when nobody won (a draw, or a game cut short): infos keep
one type per key, as Gymnasium's vector envs need."""


def winner_id(winner: int | None) -> int:
    """``winner`` for infos: the winning player's number, or :data:`NO_WINNER`."""
    return NO_WINNER if winner is None else winner


def win_returns(winner: int | None) -> tuple[float, float]:
    """Terminal rewards: +1 to the winner and -1 to the loser; 0 each for a draw (``None``)."""
    if winner is None:
        return (0.0, 0.0)
    return (1.0, -1.0) if winner == 0 else (-1.0, 1.0)


class RandomSource:
    """A numpy ``Generator`` made on first use, standing in for it everywhere.

    Seeding a Generator costs about 9 microseconds, as much as a whole TicTacToe game step;
    most games never draw chance, so an env's ``reset(seed=...)`` only records the seed.
    """

    __slots__ = ("_generator", "seed")

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._generator: np.random.Generator | None = None

    @property
    def generator(self) -> np.random.Generator:
        if self._generator is None:
            self._generator = np.random.default_rng(self.seed)
        return self._generator

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.generator, name)


class MessageLog:
    """The public record of a game, with each player's view rendered incrementally.

    An entry is addressed to everyone or to one player. Game announcements start with
    ``[Game]``; a player's relayed words sit on one line that starts with ``[Player N]``
    and can hold no line break, so no player can forge a line from the game.
    """

    __slots__ = ("_views",)

    def __init__(self) -> None:
        self._views = ["", ""]

    def game(self, text: str, to: int | None = None) -> None:
        """Record an announcement from the game, to everyone (``to=None``) or one player."""
        line = "[Game] " + text + "\n"
        if to is None:
            self._views[0] += line
            self._views[1] += line
        else:
            self._views[to] += line

    def say(self, player: int, message: str, to: int | None = None) -> None:
        """Relay a player's free text, attributed to that player, to both players (``to=None``)
        or to one."""
        message = one_line(message)
        if message:
            line = f"[Player {player}] {message}\n"
            if to is None:
                self._views[0] += line
                self._views[1] += line
            else:
                self._views[to] += line

    def view(self, player: int) -> str:
        """Everything ``player`` has been told so far, one entry a line."""
        return self._views[player]


@dataclass(frozen=True, slots=True)
class Invalid:
    """A move that cannot be played, with the reason the offender is told."""

    reason: str


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a player's text means: a move and the free text around it."""

    move: Any
    message: str = ""


class Game(ABC):
    """A two-player zero-sum game's rules and declared properties.

    Subclasses set the class attributes and implement :meth:`new_state` and :meth:`rules`.
    Constructor keyword arguments are the game's variants (e.g. ``rounds=1``).
    """

    id: ClassVar[str]
    """Registered id without namespace, e.g. ``"TicTacToe-v0"``."""
    actions: tuple[str, ...] | None
    """The discrete action set in protocol syntax (``"[4]"``), or ``None`` for free-text moves."""
    observation_shape: tuple[int, ...]
    observation_low: float = 0.0
    observation_high: float = 1.0
    observation_dtype: type = np.float32
    max_turns: int = 50
    """Moves submitted (invalid ones included) after which the game is truncated."""
    relays_messages: bool = False
    """Whether a player's free text around a move is passed on to the opponent."""
    legend: str = ""
    """What the symbols of :meth:`GameState.render` mean, shown once by human rendering."""
    simultaneous: bool = False
    """Both players choose each round before the state advances (also offered as a
    PettingZoo Parallel env). The state alternates ``current_player`` within a round, keeps
    the first choice hidden until the round resolves, and reports both players as
    :meth:`GameState.to_move` while their choice is pending."""

    @abstractmethod
    def new_state(self, rng: np.random.Generator) -> GameState:
        """Start a game; all chance must come from ``rng``."""

    @abstractmethod
    def rules(self, player: int) -> str:
        """The rules and action syntax, addressed to ``player``."""

    def random_text_move(self, observation: dict[str, Any], rng: np.random.Generator) -> str:
        """A random, normally legal move of a free-text game, from one player's observation.

        Agents only see observations; finite games need no such hook (they have the mask).
        """
        raise NotImplementedError(f"{self.id} has no random text move")


class GameState(ABC):
    """One play-through of a game.

    Subclasses keep ``current_player`` (0 or 1) and ``terminal`` up to date and write game
    events to ``log``. Every move a state receives from the adapter has passed
    :meth:`illegal_reason`.
    """

    current_player: int
    terminal: bool
    log: MessageLog

    def __init__(self, game: Game, rng: np.random.Generator) -> None:
        self.game = game
        self.rng = rng
        self.current_player = 0
        self.terminal = False
        self.log = MessageLog()

    # --- moves -------------------------------------------------------------------------
    def to_move(self, player: int) -> bool:
        """Whether ``player`` has a move to make now (both players in a simultaneous round)."""
        return not self.terminal and player == self.current_player

    def legal_actions(self) -> list[int]:
        """Indexes into ``game.actions`` the player to move may play (finite games).

        In a simultaneous game this is the set for every player still to choose this round.
        """
        raise NotImplementedError(f"{self.game.id} has free-text moves")

    def action_mask(self) -> np.ndarray:
        """int8 mask over ``game.actions`` of :meth:`legal_actions` (override to make it cheaper)."""
        mask = np.zeros(len(self.game.actions), dtype=np.int8)  # type: ignore[arg-type]
        mask[self.legal_actions()] = 1
        return mask

    def parse(self, text: str) -> Parsed | Invalid:
        """Read a move from a player's text; by default the first bracketed action name."""
        actions = self.game.actions
        assert actions is not None, "free-text games must override parse()"
        index = _action_index(actions)
        for match in bracketed(text):
            move = index.get("[" + " ".join(match[1].split()).lower() + "]")
            if move is not None:
                return Parsed(move)
        return Invalid(f"no move found; write one of {', '.join(actions)}")

    def illegal_reason(self, move: Any) -> str | None:
        """Why ``move`` cannot be played now, or ``None`` if it can."""
        if move in self.legal_actions():
            return None
        legal = ", ".join(self.game.actions[a] for a in self.legal_actions())  # type: ignore[index]
        return f"{self.game.actions[move]} is not a legal move now; legal moves: {legal}"  # type: ignore[index]

    @abstractmethod
    def apply(self, move: Any) -> Invalid | None:
        """Play a legal move for the current player (and any chance that follows).

        A state that can tell a move is invalid only by playing it (a wrapped engine) returns
        ``Invalid(reason)`` instead, with the same player still to move.
        """

    def random_move(self, rng: np.random.Generator) -> Any:
        """A uniformly random legal move, as an action index or action text."""
        legal = self.legal_actions()
        return legal[int(rng.integers(len(legal)))]

    # --- outcome -----------------------------------------------------------------------
    @abstractmethod
    def returns(self) -> tuple[float, float]:
        """Terminal rewards of players 0 and 1: +1 win, -1 loss, 0 draw."""

    def details(self) -> dict[str, Any]:
        """Game facts for ``infos`` at the end (scores, chips, why it ended)."""
        return {}

    # --- what players see ----------------------------------------------------------------
    @abstractmethod
    def observation(self, player: int) -> np.ndarray:
        """Numeric view of exactly what ``player`` may know."""

    @abstractmethod
    def state_text(self, player: int) -> str:
        """The current board or state, as ``player`` sees it."""

    def moves_text(self) -> str:
        """How the current player may move, shown under the state on their turn."""
        names = self.game.actions
        assert names is not None, "free-text games must override moves_text()"
        return "Your legal moves: " + ", ".join(names[a] for a in self.legal_actions())

    def render(self) -> str:
        """A spectator's view of the whole state, hidden information included."""
        return self.state_text(self.current_player)

    def render_rgb(self) -> np.ndarray:
        """:meth:`render` as a picture: ``uint8`` (height, width, 3), one size all game long.

        By default the text drawn in a fixed-size frame; board games draw their boards.
        """
        return text_frame(self.render())


_ACTION_INDEXES: dict[tuple[str, ...], dict[str, int]] = {}


def _action_index(actions: tuple[str, ...]) -> dict[str, int]:
    index = _ACTION_INDEXES.get(actions)
    if index is None:
        index = _ACTION_INDEXES[actions] = {a.lower(): i for i, a in enumerate(actions)}
    return index
