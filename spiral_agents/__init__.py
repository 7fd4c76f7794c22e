"""spiral_agents: the agent protocol, built-in agents, the arena and exact evaluation."""

from spiral_agents.base import (
    Agent,
    CallableAgent,
    RandomAgent,
    act_batch,
    as_agent,
    reset_agent,
)
from spiral_agents.connect_four import AlphaBetaAgent
from spiral_agents.human import HumanAgent
from spiral_agents.kuhn_poker import KuhnNashAgent
from spiral_agents.negotiation import ValueTrader
from spiral_agents.nim import NimSumAgent
from spiral_agents.registry import AGENTS, make_agent, parse_spec, register_agent
from spiral_agents.sb3 import SB3Agent
from spiral_agents.tictactoe import MinimaxAgent

register_agent("random", RandomAgent, summary="uniformly random legal moves (any game)")
register_agent("minimax", MinimaxAgent, ("TicTacToe-v0",), "perfect TicTacToe, never loses")
register_agent(
    "kuhn-nash", KuhnNashAgent, ("KuhnPoker-v1",), "Kuhn Poker equilibrium (alpha=1/6 default)"
)
register_agent(
    "trader",
    ValueTrader,
    ("SimpleNegotiation-v1", "SimpleNegotiation-v0"),
    "accepts exactly the offers that raise its own value, proposes such offers",
)
register_agent("human", HumanAgent, summary="you, at the terminal")
register_agent("sb3", SB3Agent, summary="a saved stable-baselines3 model: sb3@model=path.zip")
register_agent(
    "nim-optimal", NimSumAgent, ("Nim-v0",), "perfect Nim by nim-sum: wins every winnable position"
)
register_agent(
    "connect-four-alphabeta",
    AlphaBetaAgent,
    ("ConnectFour-v0",),
    "negamax with alpha-beta pruning, depth=4 plies by default, any board size",
)

__all__ = [
    "AGENTS",
    "Agent",
    "AlphaBetaAgent",
    "CallableAgent",
    "HumanAgent",
    "KuhnNashAgent",
    "MinimaxAgent",
    "NimSumAgent",
    "RandomAgent",
    "SB3Agent",
    "ValueTrader",
    "act_batch",
    "as_agent",
    "make_agent",
    "parse_spec",
    "register_agent",
    "reset_agent",
]
