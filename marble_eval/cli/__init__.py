"""The ``marble-eval`` command: one module per subcommand, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys

from marble_eval import __version__
from marble_eval.errors import MarbleEvalError

# Each module defines register(subparsers) and sets a handler with set_defaults(run=...).
COMMAND_MODULES = [
    "marble_eval.cli.info",
    "marble_eval.cli.embed",
    "marble_eval.cli.extract",
    "marble_eval.cli.probe",
    "marble_eval.cli.eval",
    "marble_eval.cli.leaderboard",
    "marble_eval.cli.data",
    "marble_eval.cli.datasets",
    "marble_eval.cli.models",
    "marble_eval.cli.merge",
    "marble_eval.cli.report",
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="marble-eval", description="Probe music foundation models on Western and non-Western tagging "
        "benchmarks: extract per-layer features, train MARBLE probes, report metrics.")
    parser.add_argument("--version", action="version", version=f"marble-eval {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a subcommand; user errors print one line and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except MarbleEvalError as exc:
        print(f"marble-eval: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("marble-eval: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
