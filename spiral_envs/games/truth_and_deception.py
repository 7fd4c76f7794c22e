"""Truth and Deception rules: a deceiver talks a guesser into picking the false one of two facts.

Two statements, one true and one plausible but false, are drawn from a data set and shown to
both players as Fact 1 and Fact 2 in a random order; only Player 0 (the deceiver) is told
which one is true. The players talk in free text for a fixed number of turns, alternating,
Player 0 first. Player 1 (the guesser) takes the last turn, which must name the answer as
``[Fact 1]`` or ``[Fact 2]``; a bracketed guess on any other turn is an invalid move. The
guesser wins by naming the true fact; otherwise the deceiver wins.

The fact pairs ship as ``spiral_envs/data/truth_and_deception.jsonl`` (one JSON object a line:
``{"true": "...", "false": "...", "topic": "..."}``, ``topic`` optional); the ``facts_path``
variant reads a file of the same schema instead.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from spiral_envs.core import Game, GameState, Invalid, Parsed, bracketed, win_returns, winner_id

DECEIVER, GUESSER = 0, 1
CHAT = "chat"
"""The move of a conversation turn; a guess is the fact number, 1 or 2."""
DATA_FILE = "truth_and_deception.jsonl"

FactPair = tuple[str, str]
"""A (true statement, false statement) pair."""

_GUESS = re.compile(r"\s*fact\s*([0-9]+)\s*", re.IGNORECASE)
_LONGEST_GUESS = 40  # longer bracketed text is never a guess token; keeps the regex cheap
_CHAT_LINES = (
    (
        "I know which one is true, and I am happy to walk you through it.",
        "Fact 1 is the one that holds up; I checked it long ago.",
        "Fact 2 is correct. The other one is a common mix-up.",
        "Think about where you first heard each of these.",
        "Trust me on this one: the second statement is right.",
        "Honestly, the first statement is the true one.",
    ),
    (
        "Why should I believe you?",
        "Tell me what makes you so sure about Fact 1.",
        "Fact 2 sounds familiar to me. Convince me otherwise.",
        "Which detail in the false one gives it away?",
        "You would say that either way, would you not?",
        "Hmm. Let me think about it.",
    ),
)
_GUESS_LINES = ("My answer:", "I will go with this one.", "Final answer:", "")


def parse_facts(text: str, source: str) -> tuple[FactPair, ...]:
    """Read JSONL fact pairs; raise ``ValueError`` naming ``source`` and the line on bad input.

    Blank lines are skipped, whitespace inside a statement is collapsed to single spaces and
    keys other than ``"true"`` and ``"false"`` (such as ``"topic"``) are ignored.
    """
    pairs: list[FactPair] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{source}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):  # bad input files raise ValueError, as documented
            raise ValueError(  # noqa: TRY004
                f'{where}: expected a JSON object like {{"true": "...", "false": "..."}}'
            )
        missing = [key for key in ("true", "false") if key not in record]
        if missing:
            raise ValueError(f"{where}: missing key(s) {', '.join(map(repr, missing))}")
        statements = []
        for key in ("true", "false"):
            value = record[key]
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{where}: {key!r} must be a non-empty string")
            statements.append(" ".join(value.split()))
        if statements[0] == statements[1]:
            raise ValueError(f"{where}: the true and the false statement are the same")
        pairs.append((statements[0], statements[1]))
    if not pairs:
        raise ValueError(f"{source} holds no fact pairs")
    return tuple(pairs)


def load_facts(path: str | os.PathLike[str]) -> tuple[FactPair, ...]:
    """Fact pairs from a user's JSONL file (see :func:`parse_facts`)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"facts_path must be a path, got {path!r}")  # noqa: TRY004
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"facts file {os.fspath(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read facts file {os.fspath(path)!r}: {error}") from None
    return parse_facts(text, os.fspath(path))


@functools.cache
def default_facts() -> tuple[FactPair, ...]:
    """The fact pairs shipped with the package, read once per process."""
    resource = importlib.resources.files("spiral_envs").joinpath("data").joinpath(DATA_FILE)
    return parse_facts(resource.read_text(encoding="utf-8"), f"spiral_envs/data/{DATA_FILE}")


class TruthAndDeception(Game):
    """Player 0 knows which of two facts is true and tries to make Player 1 pick the other."""

    id = "TruthAndDeception-v1"
    actions = None
    relays_messages = True
    observation_shape = (4,)
    legend = "Player 0 (player_0) deceives, Player 1 (player_1) guesses"

    def __init__(self, turns: int = 6, facts_path: str | os.PathLike[str] | None = None) -> None:
        if not isinstance(turns, int) or isinstance(turns, bool) or turns < 2 or turns % 2:
            raise ValueError(
                f"turns must be an even int of at least 2 (the guesser takes the last turn), "
                f"got {turns!r}"
            )
        self.turns = turns
        self.max_turns = 4 * turns
        self.facts = default_facts() if facts_path is None else load_facts(facts_path)

    def _common_rules(self, player: int) -> str:
        return (
            f"You are Player {player} in Truth and Deception, a two-player zero-sum game. Two "
            "statements are shown to both players as Fact 1 and Fact 2: one is true, the other "
            "is false. Player 0, the deceiver, is told which one is true; Player 1, the guesser, "
            f"is not.\nThe players take {self.turns} turns in total, alternating, Player 0 "
            "first. Whatever you write on your turn is passed on word for word. Player 1's last "
            f"turn (turn {self.turns}) is the answer: it must contain [Fact 1] or [Fact 2], in "
            "square brackets. A bracketed [Fact 1] or [Fact 2] on any other turn, by either "
            "player, is an invalid move, so mention the facts without brackets while talking. "
            "If the guesser names the true fact the guesser wins; otherwise the deceiver wins.\n"
        )

    def _deceiver_rules(self) -> str:
        return (
            self._common_rules(DECEIVER)
            + "You are the deceiver: persuade Player 1 that the false fact is the true one. "
            "You may argue, invent reasons or bluff; Player 1 knows you want to mislead.\n"
        )

    def _guesser_rules(self) -> str:
        return (
            self._common_rules(GUESSER)
            + "You are the guesser: question Player 0, weigh the answers and your own "
            "knowledge, and remember that Player 0 wins only if you pick the false fact.\n"
        )

    def rules(self, player: int) -> str:
        return self._deceiver_rules() if player == DECEIVER else self._guesser_rules()

    def random_text_move(self, observation: dict[str, Any], rng: np.random.Generator) -> str:
        obs = observation["observation"]
        player = round(float(obs[1]))
        final = player == GUESSER and round(float(obs[0]) * self.turns) == self.turns - 1
        if final:
            return f"[Fact {1 + int(rng.integers(2))}]"
        lines = _CHAT_LINES[player]
        return lines[int(rng.integers(len(lines)))]

    def new_state(self, rng: np.random.Generator) -> TruthAndDeceptionState:
        true, false = self.facts[int(rng.integers(len(self.facts)))]
        true_fact = 1 + int(rng.integers(2))
        shown = (true, false) if true_fact == 1 else (false, true)
        return TruthAndDeceptionState(self, rng, shown, true_fact)


class TruthAndDeceptionState(GameState):
    game: TruthAndDeception

    def __init__(
        self,
        game: TruthAndDeception,
        rng: np.random.Generator,
        facts: tuple[str, str],
        true_fact: int,
    ) -> None:
        """``facts`` as shown (Fact 1, Fact 2); ``true_fact`` is 1 or 2."""
        super().__init__(game, rng)
        self.facts = facts
        self.true_fact = true_fact
        self.turns_taken = 0
        self.guess: int | None = None
        listing = f"Fact 1: {facts[0]}\nFact 2: {facts[1]}\n"
        false_fact = 3 - true_fact
        self._headers = (
            listing
            + f"Only you know: Fact {true_fact} is true and Fact {false_fact} is false. Your "
            f"goal: make Player 1 answer [Fact {false_fact}].\n",
            listing + "One of these is true; Player 0 knows which.\n",
        )

    @property
    def final_turn(self) -> bool:
        """Whether the move now due is the guesser's answer."""
        return self.turns_taken == self.game.turns - 1

    # --- moves -------------------------------------------------------------------------
    def parse(self, text: str) -> Parsed | Invalid:
        final = self.final_turn
        guess: int | None = None
        kept: list[str] = []
        start = 0
        for match in bracketed(text):
            content = match[1]
            token = _GUESS.fullmatch(content) if len(content) <= _LONGEST_GUESS else None
            if token is None:
                continue
            if not final:
                return Invalid(self._early_guess_reason())
            number = token[1]
            if number not in ("1", "2"):
                return Invalid(
                    f"there is no Fact {number[:12]}; the answer is [Fact 1] or [Fact 2]"
                )
            if guess is not None and guess != int(number):
                return Invalid("both [Fact 1] and [Fact 2] are written; name exactly one")
            guess = int(number)
            kept.append(text[start : match.start()])
            start = match.end()
        if guess is None:
            return Parsed(CHAT, text.strip())
        kept.append(text[start:])
        return Parsed(guess, " ".join(part.strip() for part in kept if part.strip()))

    def illegal_reason(self, move: Any) -> str | None:
        if self.final_turn:
            if move == CHAT:
                return "this is your final turn: name your answer with [Fact 1] or [Fact 2]"
            return None
        return None if move == CHAT else self._early_guess_reason()

    def _early_guess_reason(self) -> str:
        if self.current_player == DECEIVER:
            return (
                "only the guesser writes [Fact 1] or [Fact 2], as the answer on the last turn; "
                "mention the facts without brackets"
            )
        return (
            f"too early to answer: [Fact 1] or [Fact 2] belongs on your last turn (turn "
            f"{self.game.turns}), and this is turn {self.turns_taken + 1}; mention the facts "
            "without brackets until then"
        )

    def apply(self, move: Any) -> None:
        self.turns_taken += 1
        if move == CHAT:
            self.current_player = 1 - self.current_player
            return
        self.guess = move
        self.terminal = True
        self.log.game(
            f"Player 1 answers Fact {move}. Fact {self.true_fact} was the true one: "
            f"Player {self.winner()} wins."
        )

    def random_move(self, rng: np.random.Generator) -> str:
        if self.final_turn:
            lead = _GUESS_LINES[int(rng.integers(len(_GUESS_LINES)))]
            return f"{lead} [Fact {1 + int(rng.integers(2))}]".lstrip()
        lines = _CHAT_LINES[self.current_player]
        return lines[int(rng.integers(len(lines)))]

    # --- outcome -----------------------------------------------------------------------
    def winner(self) -> int | None:
        """The winning player once the guesser has answered, else ``None``."""
        if self.guess is None:
            return None
        return GUESSER if self.guess == self.true_fact else DECEIVER

    def returns(self) -> tuple[float, float]:
        return win_returns(self.winner())

    def details(self) -> dict[str, Any]:
        return {
            "facts": list(self.facts),
            "true_fact": self.true_fact,
            "guess": 0 if self.guess is None else self.guess,
            "winner": winner_id(self.winner()),
            "turns_taken": self.turns_taken,
        }

    # --- what players see ----------------------------------------------------------------
    def observation(self, player: int) -> np.ndarray:
        obs = np.zeros(4, dtype=np.float32)
        obs[0] = self.turns_taken / self.game.turns
        obs[1] = player
        if player == DECEIVER:
            obs[1 + self.true_fact] = 1.0
        return obs

    def state_text(self, player: int) -> str:
        return f"{self._headers[player]}Turns taken: {self.turns_taken} of {self.game.turns}."

    def moves_text(self) -> str:
        turn, turns = self.turns_taken + 1, self.game.turns
        if self.final_turn:
            return (
                f"Your final turn (turn {turn} of {turns}): write [Fact 1] or [Fact 2] to name "
                "the fact you believe is true; you may add a few words."
            )
        other = 1 - self.current_player
        return (
            f"Your turn (turn {turn} of {turns}): write your message to Player {other}. Mention "
            "the facts without brackets; [Fact 1] or [Fact 2] is only for the guesser's last turn."
        )

    def render(self) -> str:
        guess = "none yet" if self.guess is None else f"Fact {self.guess}"
        return (
            f"turn {self.turns_taken}/{self.game.turns}  Fact 1: {self.facts[0]}  "
            f"Fact 2: {self.facts[1]}  true: Fact {self.true_fact}  guess: {guess}"
        )
