"""``spiral-arena``: tournaments, replays and exact evaluation from the command line.

    spiral-arena play --game TicTacToe-v0 --agent minimax --agent random -n 200
    spiral-arena play --game all --agent random --agent kuhn-nash@alpha=0.1 --records games.jsonl
    spiral-arena replay games.jsonl --index 3
    spiral-arena exact --agent kuhn-nash          # Kuhn exploitability, TicTacToe optimality
    spiral-arena agents                           # built-in agent names
"""

from __future__ import annotations

import argparse
import csv
import json
import sys

import spiral_envs
from spiral_agents import AGENTS, make_agent
from spiral_agents.arena import (
    bradley_terry,
    format_table,
    read_records,
    replay,
    run_tournament,
    summarize,
    write_records,
)

TABLE_COLUMNS = [
    "game", "agent", "opponent", "games", "wins", "draws", "losses", "win_rate",
    "win_rate_low", "win_rate_high", "invalid_rate", "mean_length", "errors",
]  # fmt: skip


def _play(args: argparse.Namespace) -> int:
    games = sorted(spiral_envs.GAMES) if args.game == ["all"] else args.game
    env_kwargs = json.loads(args.env_kwargs) if args.env_kwargs else {}
    records = run_tournament(
        games,
        args.agent,
        args.games,
        seed=args.seed,
        workers=args.workers,
        env_kwargs=env_kwargs,
        move_timeout=args.move_timeout,
        progress=not args.quiet,
    )
    rows = [result.row() for result in summarize(records)]
    print(format_table(rows, TABLE_COLUMNS))
    ratings = bradley_terry(records)
    if len(ratings) > 2:
        print("\nBradley-Terry ratings (Elo scale, mean 0, over all games):")
        for name, rating in sorted(ratings.items(), key=lambda kv: -kv[1]):
            print(f"  {rating:+8.1f}  {name}")
    errors = [r for r in records if r.error]
    if errors:
        print(f"\n{len(errors)} game(s) ended by an agent failure, e.g.: {errors[0].error}")
    if args.records:
        write_records(records, args.records)
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"results": rows, "ratings": ratings}, out, indent=2)
    return 0


def _replay(args: argparse.Namespace) -> int:
    records = read_records(args.records)
    chosen = records if args.index is None else [records[args.index]]
    for record in chosen:
        replay(record, show=args.index is not None)
    print(f"{len(chosen)} game(s) replayed exactly.")
    return 0


def _exact(args: argparse.Namespace) -> int:
    from spiral_agents.exact import kuhn_exploitability, tictactoe_optimal_move_share

    try:
        kuhn = make_agent(args.agent, "KuhnPoker-v1", seed=args.seed)
        print(f"Kuhn Poker exploitability (chips/hand): {kuhn_exploitability(kuhn):.6f}")
    except (ValueError, AttributeError) as error:
        print(f"Kuhn Poker exploitability: not available ({error})")
    try:
        agent = make_agent(args.agent, "TicTacToe-v0", seed=args.seed)
        share = tictactoe_optimal_move_share(agent, games=args.games, seed=args.seed)
        print(
            f"TicTacToe optimal-move share vs random: {share['optimal_share']:.4f} "
            f"over {share['moves']} moves"
        )
    except ValueError as error:
        print(f"TicTacToe optimal-move share: not available ({error})")
    return 0


def _agents(args: argparse.Namespace) -> int:
    for name, entry in sorted(AGENTS.items()):
        games = ", ".join(entry.games) if entry.games else "all games"
        print(f"{name:<18} {entry.summary} [{games}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spiral-arena", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    play = commands.add_parser("play", help="round-robin tournament over games")
    play.add_argument("--game", action="append", required=True, help="game id, repeatable, or 'all'")
    play.add_argument("--agent", action="append", required=True, help="agent spec, repeatable")
    play.add_argument("-n", "--games", type=int, default=100, help="games per pairing and game")
    play.add_argument("--seed", type=int, default=0)
    play.add_argument("--workers", type=int, default=1, help="processes")
    play.add_argument("--move-timeout", type=float, default=60.0, help="seconds per move")
    play.add_argument("--env-kwargs", help='JSON, e.g. \'{"invalid_move": {"retries": 1}}\'')
    play.add_argument("--records", help="write one JSONL record per game here")
    play.add_argument("--csv", help="write the results table as CSV here")
    play.add_argument("--json", help="write results and ratings as JSON here")
    play.add_argument("--quiet", action="store_true", help="no progress bar")
    play.set_defaults(run=_play)

    rep = commands.add_parser("replay", help="re-play recorded games and check their outcome")
    rep.add_argument("records", help="JSONL file written by play --records")
    rep.add_argument("--index", type=int, help="show this game turn by turn")
    rep.set_defaults(run=_replay)

    exact = commands.add_parser("exact", help="exact scores on Kuhn Poker and TicTacToe")
    exact.add_argument("--agent", required=True)
    exact.add_argument("--games", type=int, default=200)
    exact.add_argument("--seed", type=int, default=0)
    exact.set_defaults(run=_exact)

    agents = commands.add_parser("agents", help="list built-in agents")
    agents.set_defaults(run=_agents)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (KeyError, ValueError, FileNotFoundError) as error:
        print(f"spiral-arena: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
