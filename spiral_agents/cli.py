"""``spiral-arena``: tournaments, replays and exact evaluation from the command line.

    spiral-arena play --game TicTacToe-v0 --agent minimax --agent random -n 200
    spiral-arena play --game all --agent random --agent kuhn-nash@alpha=0.1 --records games.jsonl
    spiral-arena replay games.jsonl --index 3
    spiral-arena exact --agent kuhn-nash          # Kuhn exploitability, TicTacToe optimality
    spiral-arena agents                           # built-in agent names
    spiral-arena play --import my_games --game MyGame-v0 --agent random --agent my_agents:Greedy
    spiral-arena play --game KuhnPoker-v1 --agent kuhn-nash \
        --agent llm@model=Qwen/Qwen3-4B-Base,backend=vllm,max_tokens=1024
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import spiral_envs
from spiral_agents import AGENTS, make_agent
from spiral_agents.arena import (
    Unplayable,
    format_table,
    rating_groups,
    run_tournament,
    scan_records,
    summarize,
)
from spiral_agents.human import Quit
from spiral_agents.records import (
    RecordError,
    RecordWriter,
    check_output_path,
    open_output,
    printable,
)
from spiral_agents.registry import import_user_modules, unsupported_reason
from spiral_agents.replay import show_escaped, verify
from spiral_agents.supervisor import WorkerError

TABLE_COLUMNS = [
    "game", "agent", "opponent", "games", "wins", "draws", "losses", "win_rate",
    "win_rate_low", "win_rate_high", "mean_reward", "mean_reward_low", "mean_reward_high",
    "invalid_rate", "mean_length", "errors",
]  # fmt: skip


class CommandError(Exception):
    """A problem with the command's input, reported on one line (exit status 2)."""


def _number(kind: type, low: int, *, above: bool = False) -> Any:
    """An argparse type: a ``kind`` number at least ``low`` (or ``above`` it)."""

    noun = "an integer" if kind is int else "a number"
    bound = f"above {low}" if above else f"at least {low}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if not (value > low if above else value >= low):  # NaN fails both
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _env_kwargs(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CommandError(f"--env-kwargs is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise CommandError(f'--env-kwargs must be a JSON object, e.g. {{"rounds": 1}}, not {text}')
    return value


def _outputs(args: argparse.Namespace) -> dict[str, Path]:
    """Check every output path before any game is played."""
    given = {"--records": args.records, "--csv": args.csv, "--json": args.json}
    outputs = {
        option: check_output_path(path, overwrite=args.overwrite)
        for option, path in given.items()
        if path
    }
    seen: dict[Path, str] = {}
    for option, path in outputs.items():
        resolved = path.resolve()
        if resolved in seen:
            raise CommandError(f"{seen[resolved]} and {option} name the same file, {path}")
        seen[resolved] = option
    return outputs


def _play(args: argparse.Namespace) -> int:
    games = sorted(spiral_envs.GAMES) if args.game == ["all"] else args.game
    env_kwargs = _env_kwargs(args.env_kwargs)
    outputs = _outputs(args)
    records_path = outputs.get("--records")
    writer = RecordWriter(records_path, overwrite=args.overwrite) if records_path else None
    skipped: list[Unplayable] = []
    try:
        records = run_tournament(
            games,
            args.agent,
            args.games,
            seed=args.seed,
            workers=args.workers,
            env_kwargs=env_kwargs,
            move_timeout=args.move_timeout,
            progress=not args.quiet,
            on_record=writer.write if writer else None,
            on_skip=skipped.append,
        )
    except KeyboardInterrupt as stop:
        why = "quit at the end of input" if isinstance(stop, Quit) else "interrupted"
        kept = f"; {writer.written} finished game(s) are in {writer.path}" if writer else ""
        print(f"spiral-arena: {why}{kept}", file=sys.stderr)
        return 0 if isinstance(stop, Quit) else 130
    finally:
        if writer is not None:
            writer.close()
    rows = [result.row() for result in summarize(records)]
    print(format_table(rows, TABLE_COLUMNS))
    print(
        "mean_reward: the agent's mean result per game (normal 95 % interval): chips in games "
        "that count them (Kuhn Poker), else the reward (+1 win, 0 draw, -1 loss), which is also "
        "what a game ended by a forfeit or an invalid move counts."
    )
    if skipped:
        print(f"\nNot played ({len(skipped)} pairing(s)):")
        for pairing in skipped:
            print(printable(f"  {pairing}"))
    ratings = rating_groups(records)
    for game, groups in ratings.items():
        for number, group in enumerate(groups, 1):
            if len(group) <= 2:
                continue
            part = f", group {number} of {len(groups)} (agents that met)" if len(groups) > 1 else ""
            print(f"\nBradley-Terry ratings on {game}{part} (Elo scale, mean 0):")
            for name, rating in sorted(group.items(), key=lambda kv: -kv[1]):
                print(printable(f"  {rating:+8.1f}  {name}"))
    errors = [r for r in records if r.error]
    if errors:
        example = printable(errors[0].error or "")
        print(f"\n{len(errors)} game(s) ended by an agent failure, e.g.: {example}")
    if "--csv" in outputs:
        with open_output(outputs["--csv"], overwrite=args.overwrite, newline="") as out:
            writer_csv = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer_csv.writeheader()
            writer_csv.writerows(rows)
    if "--json" in outputs:
        with open_output(outputs["--json"], overwrite=args.overwrite) as out:
            not_played = [vars(pairing) for pairing in skipped]
            json.dump(
                {"results": rows, "ratings": ratings, "not_played": not_played}, out, indent=2
            )
    return 0


def _replay(args: argparse.Namespace) -> int:
    entries = list(scan_records(args.records))
    if not entries:
        raise CommandError(f"{args.records} holds no game records")
    if args.index is None:
        chosen = range(len(entries))
    elif 0 <= args.index < len(entries):
        chosen = range(args.index, args.index + 1)
    else:
        raise CommandError(
            f"--index {args.index} is out of range: {args.records} holds {len(entries)} "
            f"record(s), numbered 0 to {len(entries) - 1}"
        )
    show = show_escaped if args.index is not None else None
    failed = 0
    for index in chosen:
        line, entry = entries[index]
        problems = [str(entry)] if isinstance(entry, RecordError) else verify(entry, show=show)
        failed += bool(problems)
        for problem in problems:
            print(printable(f"record {index} (line {line}): {problem}"))
    if failed:
        print(f"{failed} of {len(chosen)} game(s) do not replay as recorded.")
        return 1
    print(f"{len(chosen)} game(s) replayed exactly.")
    return 0


def _kuhn_line(agent: Any) -> str:
    from spiral_agents.exact import kuhn_exploitability

    if not callable(getattr(agent, "action_probabilities", None)):
        return (
            "Kuhn Poker exploitability: not available (the agent reports no action_probabilities)"
        )
    return f"Kuhn Poker exploitability (chips/hand): {kuhn_exploitability(agent):.6f}"


def _tictactoe_line(agent: Any, games: int, seed: int) -> str:
    from spiral_agents.exact import tictactoe_optimal_move_share

    share = tictactoe_optimal_move_share(agent, games=games, seed=seed)
    return (
        f"TicTacToe optimal-move share vs random: {share['optimal_share']:.4f} "
        f"over {share['moves']} moves"
    )


def _exact(args: argparse.Namespace) -> int:
    scores = {
        "KuhnPoker-v1": ("Kuhn Poker exploitability", _kuhn_line),
        "TicTacToe-v0": (
            "TicTacToe optimal-move share",
            lambda agent: _tictactoe_line(agent, args.games, args.seed),
        ),
    }
    for game, (label, score) in scores.items():
        reason = unsupported_reason(args.agent, game)
        if reason:
            print(f"{label}: not available ({reason})")
            continue
        agent = make_agent(args.agent, game, seed=args.seed)  # a bad spec is an error (exit 2)
        try:
            print(score(agent))
        except (ValueError, AttributeError) as error:
            print(printable(f"{label}: not available ({error})"))
    return 0


def _agents(args: argparse.Namespace) -> int:
    for name, entry in sorted(AGENTS.items()):
        games = ", ".join(entry.games) if entry.games else "all games"
        print(f"{name:<18} {entry.summary} [{games}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spiral-arena", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first (its games and agents register themselves); repeatable; "
        "found on sys.path or in the current folder",
    )

    play = commands.add_parser("play", parents=[common], help="round-robin tournament over games")
    play.add_argument("--game", action="append", required=True, help="game id, repeatable; 'all'")
    play.add_argument("--agent", action="append", required=True, help="agent spec, repeatable")
    play.add_argument("-n", "--games", type=_number(int, 1), default=100, help="games per pairing")
    play.add_argument("--seed", type=_number(int, 0), default=0)
    play.add_argument("--workers", type=_number(int, 1), default=1, help="processes")
    play.add_argument(
        "--move-timeout",
        type=_number(float, 0, above=True),
        default=60.0,
        help="seconds a move (games with a human or an LLM seat play in this process, untimed)",
    )
    play.add_argument("--env-kwargs", help='JSON, e.g. \'{"invalid_move": {"retries": 1}}\'')
    play.add_argument("--records", help="write one JSONL record per game here, as games finish")
    play.add_argument("--csv", help="write the results table as CSV here")
    play.add_argument("--json", help="write results and ratings as JSON here")
    play.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    play.add_argument("--quiet", action="store_true", help="no progress bar")
    play.set_defaults(run=_play)

    rep = commands.add_parser(
        "replay", parents=[common], help="re-play recorded games and check them"
    )
    rep.add_argument("records", help="JSONL file written by play --records")
    rep.add_argument("--index", type=int, help="check only this game and show it turn by turn")
    rep.set_defaults(run=_replay)

    exact = commands.add_parser(
        "exact", parents=[common], help="exact scores on Kuhn Poker and TicTacToe"
    )
    exact.add_argument("--agent", required=True, help="agent spec")
    exact.add_argument(
        "--games", type=_number(int, 1), default=200, help="TicTacToe games against random"
    )
    exact.add_argument("--seed", type=_number(int, 0), default=0)
    exact.set_defaults(run=_exact)

    agents = commands.add_parser("agents", parents=[common], help="list built-in agents")
    agents.set_defaults(run=_agents)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import_user_modules(args.imports)
        return args.run(args)
    except (CommandError, ValueError, KeyError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(printable(f"spiral-arena: error: {message}"), file=sys.stderr)
        return 2
    except WorkerError as error:
        print(printable(f"spiral-arena: error: {error}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("spiral-arena: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
