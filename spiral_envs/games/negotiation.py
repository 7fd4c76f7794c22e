"""Simple Negotiation rules: trade resources by free-text offers; the larger gain in value wins.

Players alternate for a fixed number of actions. A turn is free text (relayed to the
opponent) holding at most one structured token: ``[Offer: 3 Wood -> 2 Gold]`` (what I give ->
what I ask), ``[Accept]`` or ``[Deny]``. Only the player an offer was made to may accept it;
any reply without ``[Accept]`` discards it. Holdings are checked when an offer is made and
again when it is accepted. Each player values the resources privately; the winner is the
player whose inventory gained more value by their own values; equal gains are a draw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral_envs.core import Game, GameState, Invalid, Parsed, bracketed, quote

ACCEPT, DENY, CHAT = "accept", "deny", "chat"
_ITEM = re.compile(r"(\d{1,6})\s*([a-z]+)")


@dataclass(frozen=True, slots=True)
class Offer:
    """Quantities per resource the proposer gives and asks for."""

    give: tuple[int, ...]
    ask: tuple[int, ...]


class SimpleNegotiation(Game):
    """Shared rules of both versions; subclasses say how holdings and values are drawn."""

    actions = None
    relays_messages = True
    legend = "lists are [player_0, player_1]; gains are counted at each player's own values"
    resources: tuple[str, ...]

    def __init__(self, turns: int = 10) -> None:
        if not isinstance(turns, int) or turns < 1:
            raise ValueError(f"turns must be a positive int, got {turns!r}")
        self.turns = turns
        self.max_turns = 4 * turns
        self.observation_shape = (4 * len(self.resources) + 2,)
        self.observation_high = float(max(100, turns))
        self._names = {r.lower(): i for i, r in enumerate(self.resources)}

    def rules(self, player: int) -> str:
        resources = ", ".join(self.resources)
        first, second = self.resources[:2]
        return (
            f"You are Player {player} in Simple Negotiation, a two-player zero-sum trading game "
            f"against Player {1 - player}. Each player holds some {resources} and values each "
            "resource privately; your own values are shown below, your opponent's are not.\n"
            f"The players take {self.turns} turns in total, alternating, Player 0 first. On your "
            "turn write anything you like to your opponent; it is passed on word for word. To "
            "act, include exactly one of:\n"
            f"  [Offer: 3 {first} -> 2 {second}]  propose a trade: what you give -> what you ask "
            "(several resources per side are separated by commas);\n"
            "  [Accept]  accept the offer your opponent just made to you;\n"
            "  [Deny]    turn it down.\n"
            "An offer stands only until the next turn: any reply without [Accept] discards it. "
            "Both sides must hold the resources when the offer is made and when it is "
            "accepted.\n"
            "When the turns run out, each player's gain is the change in the value of their "
            "inventory, counted at their own values. The larger gain wins; equal gains are a "
            "draw.\n"
        )

    def new_state(self, rng: np.random.Generator) -> NegotiationState:
        holdings, values = self.deal(rng)
        return NegotiationState(self, rng, holdings, values)

    def deal(self, rng: np.random.Generator) -> tuple[list[list[int]], list[list[int]]]:
        """Starting holdings and private values of both players."""
        raise NotImplementedError

    def random_text_move(self, observation: dict[str, Any], rng: np.random.Generator) -> str:
        n = len(self.resources)
        obs = observation["observation"]
        held = obs[:n].astype(int)
        choices = ["Let us keep talking."]
        if obs[4 * n]:  # an offer stands for me
            choices.append("[Deny]")
            if all(held >= obs[3 * n : 4 * n]):
                choices.append("[Accept]")
        give, ask = rng.choice(n, size=2, replace=False)
        if held[give]:
            g, a = int(rng.integers(1, held[give] + 1)), int(rng.integers(1, 4))
            choices.append(f"[Offer: {g} {self.resources[give]} -> {a} {self.resources[ask]}]")
        return str(choices[int(rng.integers(len(choices)))])

    def describe(self, counts: tuple[int, ...] | list[int]) -> str:
        items = [f"{n} {name}" for n, name in zip(counts, self.resources) if n]
        return ", ".join(items) or "nothing"


class SimpleNegotiationV1(SimpleNegotiation):
    """SPIRAL's version: 10 Wood and 10 Gold each; Player 0 values Wood 5, Gold 15, Player 1
    the reverse, so both start at value 200."""

    id = "SimpleNegotiation-v1"
    resources = ("Wood", "Gold")

    def deal(self, rng: np.random.Generator) -> tuple[list[list[int]], list[list[int]]]:
        return [[10, 10], [10, 10]], [[5, 15], [15, 5]]


class SimpleNegotiationV0(SimpleNegotiation):
    """Five resources; each player holds a random 5-25 of each and values each at its base
    value (5, 10, 15, 25, 40) plus or minus up to 20 %, rounded, at least 5."""

    id = "SimpleNegotiation-v0"
    resources = ("Wheat", "Wood", "Sheep", "Brick", "Ore")
    base_values = (5, 10, 15, 25, 40)

    def deal(self, rng: np.random.Generator) -> tuple[list[list[int]], list[list[int]]]:
        holdings = rng.integers(5, 26, size=(2, len(self.resources))).tolist()
        noise = rng.uniform(0.8, 1.2, size=(2, len(self.resources)))
        values = [[max(5, round(b * f)) for b, f in zip(self.base_values, row)] for row in noise]
        return holdings, values


class NegotiationState(GameState):
    game: SimpleNegotiation

    def __init__(
        self,
        game: SimpleNegotiation,
        rng: np.random.Generator,
        holdings: list[list[int]],
        values: list[list[int]],
    ) -> None:
        super().__init__(game, rng)
        self.holdings = holdings
        self.values = values
        self.start_worth = [self.worth(p) for p in range(2)]
        self.turns_taken = 0
        self.standing: Offer | None = None  # always made by the player who moved last
        self.trades: list[dict[str, Any]] = []

    def worth(self, player: int) -> int:
        return sum(n * v for n, v in zip(self.holdings[player], self.values[player]))

    # --- moves -------------------------------------------------------------------------
    def parse(self, text: str) -> Parsed | Invalid:
        for match in bracketed(text):
            content = " ".join(match[1].split()).lower()
            if content in (ACCEPT, DENY):
                move: Any = content
            elif content.startswith("offer") and content[5:6] in ("", ":", " "):
                move = self._read_offer(content[5:].lstrip(" :"))
                if isinstance(move, Invalid):
                    return move
            else:
                continue
            return Parsed(move, (text[: match.start()] + " " + text[match.end() :]).strip())
        return Parsed(CHAT, text.strip())

    def _read_offer(self, body: str) -> Offer | Invalid:
        sides = body.split("->")
        if len(sides) != 2:
            return Invalid("an offer needs the form [Offer: 3 Wood -> 2 Gold]")
        counts = []
        for side in sides:
            total = [0] * len(self.game.resources)
            for item in filter(None, (part.strip() for part in re.split(r",|\band\b|\+", side))):
                match = _ITEM.fullmatch(item)
                index = self._resource(match[2]) if match else None
                if index is None:
                    names = ", ".join(self.game.resources)
                    return Invalid(f"could not read '{quote(item)}'; write e.g. '3 Wood' ({names})")
                if total[index]:
                    return Invalid(f"{self.game.resources[index]} appears twice on one side")
                total[index] = int(match[1])
            if not any(total):
                return Invalid("each side of an offer needs at least one resource, e.g. 3 Wood")
            counts.append(tuple(total))
        give, ask = counts
        if any(g and a for g, a in zip(give, ask)):
            return Invalid("a resource cannot be on both sides of an offer")
        return Offer(give, ask)

    def _resource(self, name: str) -> int | None:
        names = self.game._names
        return names.get(name, names.get(name[:-1]) if name.endswith("s") else None)

    def illegal_reason(self, move: Any) -> str | None:
        player = self.current_player
        if isinstance(move, Offer):
            return self._shortfall(player, move)
        if move in (ACCEPT, DENY):
            if self.standing is None:
                return f"there is no offer to {move}"
            if move == ACCEPT:
                return self._shortfall(1 - player, self.standing)
        return None

    def _shortfall(self, proposer: int, offer: Offer) -> str | None:
        for who, side in ((proposer, offer.give), (1 - proposer, offer.ask)):
            for index, n in enumerate(side):
                if n > self.holdings[who][index]:
                    owner = "the proposer" if who == proposer else "the other player"
                    return f"{owner} does not hold {n} {self.game.resources[index]}"
        return None

    def apply(self, move: Any) -> None:
        player = self.current_player
        describe = self.game.describe
        standing, self.standing = self.standing, None
        if isinstance(move, Offer):
            self.standing = move
            self.log.game(
                f"Player {player} offers {describe(move.give)} in exchange for "
                f"{describe(move.ask)}."
            )
        elif move == ACCEPT:
            assert standing is not None
            proposer = 1 - player
            for index, (g, a) in enumerate(zip(standing.give, standing.ask)):
                self.holdings[proposer][index] += a - g
                self.holdings[player][index] += g - a
            self.trades.append(
                {"proposer": proposer, "give": list(standing.give), "ask": list(standing.ask)}
            )
            self.log.game(f"Player {player} accepts: the trade is done.")
        elif move == DENY:
            self.log.game(f"Player {player} turns the offer down.")
        elif standing is not None:
            self.log.game(f"Player {player} did not accept; the offer is withdrawn.")
        self.turns_taken += 1
        if self.turns_taken >= self.game.turns:
            self.terminal = True
            g0, g1 = self.gains()
            result = "a draw" if g0 == g1 else f"Player {0 if g0 > g1 else 1} wins"
            self.log.game(f"No turns are left. Gains: Player 0 {g0:+d}, Player 1 {g1:+d}: {result}.")
        else:
            self.current_player = 1 - player

    def random_move(self, rng: np.random.Generator) -> str:
        player = self.current_player
        choices = ["Let us see.", "[Deny]", "[Accept]"] if self.standing else ["Hello."]
        n = len(self.game.resources)
        give, ask = int(rng.integers(n)), int(rng.integers(n))
        if give != ask and self.holdings[player][give] and self.holdings[1 - player][ask]:
            g = int(rng.integers(1, self.holdings[player][give] + 1))
            a = int(rng.integers(1, self.holdings[1 - player][ask] + 1))
            res = self.game.resources
            choices.append(f"How about this? [Offer: {g} {res[give]} -> {a} {res[ask]}]")
        move = choices[int(rng.integers(len(choices)))]
        if move == "[Accept]" and self._shortfall(1 - player, self.standing) is not None:
            return "[Deny]"
        return move

    # --- outcome -----------------------------------------------------------------------
    def gains(self) -> tuple[int, int]:
        return (self.worth(0) - self.start_worth[0], self.worth(1) - self.start_worth[1])

    def returns(self) -> tuple[float, float]:
        g0, g1 = self.gains()
        return (0.0, 0.0) if g0 == g1 else ((1.0, -1.0) if g0 > g1 else (-1.0, 1.0))

    def details(self) -> dict[str, Any]:
        return {
            "inventory": [list(h) for h in self.holdings],
            "values": [list(v) for v in self.values],
            "inventory_value": [self.worth(0), self.worth(1)],
            "gains": list(self.gains()),
            "trades": list(self.trades),
        }

    # --- what players see ----------------------------------------------------------------
    def observation(self, player: int) -> np.ndarray:
        n = len(self.game.resources)
        obs = np.zeros(4 * n + 2, dtype=np.float32)
        obs[:n] = self.holdings[player]
        obs[n : 2 * n] = self.values[player]
        if self.standing is not None and self.current_player == player:
            obs[2 * n : 3 * n] = self.standing.give  # what the opponent would give me
            obs[3 * n : 4 * n] = self.standing.ask
            obs[4 * n] = 1.0
        obs[4 * n + 1] = self.game.turns - self.turns_taken
        return obs

    def state_text(self, player: int) -> str:
        game = self.game
        values = ", ".join(f"{r} {v}" for r, v in zip(game.resources, self.values[player]))
        worth, gain = self.worth(player), self.worth(player) - self.start_worth[player]
        text = (
            f"Your inventory: {game.describe(self.holdings[player])} (worth {worth} at your "
            f"values; change so far {gain:+d}).\nYour values per unit: {values}.\n"
            f"Turns left: {game.turns - self.turns_taken} of {game.turns}."
        )
        if self.standing is not None and self.current_player == player:
            text += (
                f"\nStanding offer to you: Player {1 - player} gives "
                f"{game.describe(self.standing.give)} and asks for "
                f"{game.describe(self.standing.ask)}."
            )
        return text

    def moves_text(self) -> str:
        first, second = self.game.resources[:2]
        reply = "[Accept] or [Deny] the standing offer, or make" if self.standing else "Make"
        return (
            f"Your turn: write your message. {reply} an offer such as "
            f"[Offer: 3 {first} -> 2 {second}] (what you give -> what you ask)."
        )

    def render(self) -> str:
        return (
            f"turn {self.turns_taken}/{self.game.turns}  holdings={self.holdings}  "
            f"values={self.values}  gains={list(self.gains())}  standing={self.standing}"
        )
