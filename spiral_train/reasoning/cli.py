"""``spiral-eval``: reasoning-transfer evaluation (math and multiple-choice benchmarks).

    spiral-eval run --model Qwen/Qwen3-4B-Base --backend vllm --benchmarks math --output runs/base
    spiral-eval run --model runs/spiral/final --benchmarks math500,gpqa-diamond --preset greedy --output runs/trained
    spiral-eval run --model DIR --benchmarks smoke --output runs/smoke        # no download
    spiral-eval run --model DIR --benchmarks math500 --data math500=math500.jsonl --output runs/local
    spiral-eval run ... --resume                                              # continue a killed run
    spiral-eval compare runs/base runs/trained                                # paired difference
    spiral-eval list                                                          # benchmarks and presets

Exit status: 0 done; 1 some problems could not be generated (error records: ``--resume``
retries them); 2 bad arguments, data or settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from spiral_train.reasoning.data import (
    BENCHMARKS,
    GENERAL_SUITE,
    MATH_SUITE,
    SMOKE,
    DataError,
    FieldMap,
    load_benchmark,
)
from spiral_train.reasoning.evaluate import DEFAULT_BATCH_SIZE, SettingsMismatch, evaluate_reasoning
from spiral_train.reasoning.protocol import PRESETS
from spiral_train.reasoning.results import compare, comparison_table, load_results

SUITES = {"math": MATH_SUITE, "general": GENERAL_SUITE, "spiral": MATH_SUITE + GENERAL_SUITE, "smoke": SMOKE}


class UsageError(ValueError):
    """A bad command-line value."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, DataError, SettingsMismatch) as error:
        print(f"spiral-eval: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    try:
        protocol = PRESETS[args.preset].with_overrides(
            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, samples=args.samples,
            max_tokens=args.max_tokens, seed=args.seed, choice_seed=args.choice_seed,
            grade_timeout_s=args.grade_timeout, math_prompt=args.math_prompt, choice_prompt=args.choice_prompt,
        )  # fmt: skip
    except ValueError as error:
        raise UsageError(f"bad protocol setting: {error}") from None
    names = _benchmark_names(args.benchmarks)
    files = _pairs(args.data, "--data", "NAME=PATH", "=")
    field_maps = {name: _field_map(text) for name, text in _pairs(args.fields, "--fields", "NAME:KEY=FIELD,...", ":").items()}
    for name in set(files) | set(field_maps):
        if name not in names:
            raise UsageError(f"{name!r} is given data or fields but is not in --benchmarks")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    benchmarks = [
        load_benchmark(n, files.get(n), fields=field_maps.get(n), limit=args.limit, choice_seed=protocol.choice_seed)
        for n in names
    ]
    backend, template = _backend(args)
    run_info: dict[str, Any] = {"model": args.model, "backend": args.backend, "limit": args.limit}
    if args.backend == "openai":
        run_info.update(base_url=args.base_url, api=args.api)
    results = evaluate_reasoning(
        backend, template, benchmarks, protocol, output_dir=args.output, resume=args.resume,
        batch_size=args.batch_size, progress=not args.quiet, run_info=run_info,
    )  # fmt: skip
    print(f"protocol {protocol.name}: temperature {protocol.temperature:g}, top-p {protocol.top_p:g}, "
          f"{protocol.samples} sample(s), up to {protocol.max_tokens} new tokens; template {template_name(template)}")
    print(results.table())
    print(f"\nresults: {Path(args.output) / 'results.json'}, results.csv; records: {Path(args.output) / 'records'}")
    if not results.complete:
        failed = sum(r.errors for r in results.benchmarks.values())
        print(f"{failed} problem(s) could not be generated (see their records); run again with --resume to retry them",
              file=sys.stderr)
        return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    try:
        a, b = load_results(args.a), load_results(args.b)
    except ValueError as error:
        raise UsageError(str(error)) from None
    comparisons = compare(a, b)
    if not comparisons:
        raise UsageError("the two runs share no benchmark with problems graded in both")
    if args.json:
        print(json.dumps([{**vars(c), "beyond_noise": c.beyond_noise} for c in comparisons], indent=1))
    else:
        print(comparison_table(comparisons, args.a, args.b))
    return 0


def _list(args: argparse.Namespace) -> int:
    print("benchmarks:")
    for spec in BENCHMARKS.values():
        where = spec.hub_id or "package data"
        pin = f"@{spec.revision[:12]}" if spec.revision else (" (unpinned: the commit loaded is recorded)" if spec.hub_id else "")
        print(f"  {spec.name:14} {spec.kind:6} {spec.description}; {where}{pin}")
    print("suites: " + "; ".join(f"{name} = {','.join(members)}" for name, members in SUITES.items()))
    print("presets:")
    for preset in PRESETS.values():
        print(f"  {preset.name:8} temperature {preset.temperature:g}, top-p {preset.top_p:g}, {preset.samples} sample(s), "
              f"{preset.max_tokens} new tokens, grade time limit {preset.grade_timeout_s:g} s")
    return 0


# --- pieces ------------------------------------------------------------------------------------


def _benchmark_names(text: str) -> list[str]:
    names: list[str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        for name in SUITES.get(item, (item,)):
            if name not in names:
                names.append(name)
    if not names:
        raise UsageError("--benchmarks names no benchmark")
    return names


def _pairs(items: list[str], option: str, form: str, separator: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(separator)
        if not sep or not name.strip() or not value.strip():
            raise UsageError(f"{option} {item!r}: expected {form}")
        pairs[name.strip()] = value.strip()
    return pairs


def _field_map(text: str) -> FieldMap:
    try:
        return FieldMap.parse(text)
    except ValueError as error:
        raise UsageError(f"--fields: {error}") from None


def _backend(args: argparse.Namespace) -> tuple[Any, Any]:
    """The backend and prompt template the arguments ask for."""
    from spiral_agents.llm.prompts import ChatTemplate, make_template

    try:
        template = make_template(args.template, args.model)
    except ValueError as error:
        raise UsageError(f"--template: {error}") from None
    try:
        if args.backend == "openai":
            from spiral_agents.llm.openai_backend import OpenAICompatibleBackend

            if not args.base_url:
                raise UsageError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
            tokenizer = _tokenizer(args.tokenizer or args.model) if args.api == "completions" else None
            thinking = getattr(template, "enable_thinking", None) if isinstance(template, ChatTemplate) else None
            backend = OpenAICompatibleBackend(
                args.base_url, args.model, api=args.api, api_key_env=args.api_key_env, concurrency=args.concurrency,
                timeout=args.request_timeout, max_retries=args.retries, tokenizer=tokenizer,
                chat_template_kwargs=None if thinking is None else {"enable_thinking": thinking},
            )  # fmt: skip
        elif args.backend == "vllm":
            from spiral_agents.llm.vllm_backend import VLLMBackend

            backend = VLLMBackend(args.model, dtype=args.dtype, max_model_len=args.max_model_len)
        else:
            from spiral_agents.llm.hf_backend import TransformersBackend

            backend = TransformersBackend(args.model, tokenizer=args.tokenizer, dtype=args.dtype)
    except ImportError as error:
        raise UsageError(f"backend {args.backend} is not installed ({error.name}): see the README's set-up") from None
    except ValueError as error:
        raise UsageError(str(error)) from None
    return backend, template


def _tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise UsageError(f"--api completions needs a tokenizer: cannot load one from {source!r} ({error})") from None


def template_name(template: Any) -> str:
    name = getattr(template, "name", type(template).__name__)
    thinking = getattr(template, "enable_thinking", None)
    return name if thinking is None else f"{name} (thinking {'on' if thinking else 'off'})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spiral-eval", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="evaluate a model on benchmarks")
    run.set_defaults(func=_run)
    run.add_argument("--model", required=True, help="model directory or Hub id (the served name for --backend openai)")
    run.add_argument("--backend", choices=["transformers", "vllm", "openai"], default="transformers")
    run.add_argument("--benchmarks", required=True,
                     help=f"comma-separated names ({', '.join(BENCHMARKS)}) or suites ({', '.join(SUITES)})")
    run.add_argument("--output", required=True, help="run directory: settings, records, results")
    run.add_argument("--resume", action="store_true", help="continue the run in --output (same settings)")
    run.add_argument("--data", action="append", default=[], metavar="NAME=PATH",
                     help="read a benchmark from a local JSONL file instead of the Hub")
    run.add_argument("--fields", action="append", default=[], metavar="NAME:KEY=FIELD,...",
                     help="field names of a local file (keys: question, answer, id, choices)")
    run.add_argument("--limit", type=int, help="only the first N problems of each benchmark")
    run.add_argument("--preset", choices=sorted(PRESETS), default="spiral")
    for flag, kind, what in [
        ("--temperature", float, "sampling temperature"), ("--top-p", float, "nucleus sampling"),
        ("--top-k", int, "top-k sampling (0: off)"), ("--samples", int, "samples per problem"),
        ("--max-tokens", int, "most new tokens per response"), ("--seed", int, "sampling seed"),
        ("--choice-seed", int, "option shuffle seed (GPQA)"),
        ("--grade-timeout", float, "seconds one symbolic check may take"),
        ("--math-prompt", str, "math user turn, with {question}"),
        ("--choice-prompt", str, "multiple-choice user turn, with {question}, {options}, {letters}"),
    ]:  # fmt: skip
        run.add_argument(flag, type=kind, help=f"{what} (default: the preset's)")
    run.add_argument("--template", help="spiral-base, chat, chat-thinking, chat-no-thinking or a format string "
                                        "with {observation} (default: by model name, as for games)")
    run.add_argument("--tokenizer", help="tokenizer directory or id (default: the model's)")
    run.add_argument("--dtype", default="auto")
    run.add_argument("--max-model-len", type=int, help="vLLM: longest prompt plus response")
    run.add_argument("--base-url", help="OpenAI-compatible API root, ending in /v1")
    run.add_argument("--api", choices=["chat", "completions"], default="chat")
    run.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    run.add_argument("--concurrency", type=int, default=16, help="requests in flight (openai)")
    run.add_argument("--request-timeout", type=float, default=600.0, help="seconds one request may take (openai)")
    run.add_argument("--retries", type=int, default=4, help="further attempts of a failed request (openai)")
    run.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="problems per generation call")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    comparison = commands.add_parser("compare", help="two runs side by side, paired bootstrap per benchmark")
    comparison.set_defaults(func=_compare)
    comparison.add_argument("a", help="run directory or results.json (A)")
    comparison.add_argument("b", help="run directory or results.json (B)")
    comparison.add_argument("--json", action="store_true", help="print JSON instead of the table")

    listing = commands.add_parser("list", help="benchmarks, suites and presets")
    listing.set_defaults(func=_list)
    return parser


if __name__ == "__main__":
    sys.exit(main())
