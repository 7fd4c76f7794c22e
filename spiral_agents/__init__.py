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
from spiral_agents.liars_dice import LiarsDiceBidder
from spiral_agents.llm.agent import llm_agent, openai_agent
from spiral_agents.negotiation import ValueTrader
from spiral_agents.nim import NimSumAgent
from spiral_agents.pig_dice import HoldAtAgent, PigOptimalAgent
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
register_agent(
    "human", HumanAgent, summary="you, at the terminal: type moves as the game writes them"
)
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
register_agent(
    "hold-at-20",
    HoldAtAgent,
    ("PigDice-v1", "PigDice-v0"),
    "rolls until the turn total reaches threshold=20 or holding wins",
)
register_agent(
    "pig-optimal",
    PigOptimalAgent,
    ("PigDice-v1", "PigDice-v0"),
    "maximises the probability of winning (exact table, turn cap included)",
)
register_agent(
    "llm",
    llm_agent,
    summary="a local model: llm@model=PATH_OR_ID,backend=transformers|vllm,max_tokens=...",
)
register_agent(
    "openai",
    openai_agent,
    summary="a model behind an OpenAI-compatible server: openai@base_url=URL,model=NAME",
)
register_agent(
    "liars-dice-prob",
    LiarsDiceBidder,
    ("LiarsDice-v1",),
    "calls bids true with probability below threshold=0.5, else makes the likeliest raise",
)

__all__ = [
    "AGENTS",
    "Agent",
    "AlphaBetaAgent",
    "CallableAgent",
    "HoldAtAgent",
    "HumanAgent",
    "KuhnNashAgent",
    "LiarsDiceBidder",
    "MinimaxAgent",
    "NimSumAgent",
    "PigOptimalAgent",
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
