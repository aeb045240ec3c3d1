"""The ``marble-eval`` command: one module per subcommand, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
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
    "marble_eval.cli.export",
    "marble_eval.cli.compare",
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


def one_line(text: str) -> str:
    """``text`` with its line breaks turned into spaces (values quoted in messages may hold some)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, with argparse's usage-plus-error report cut to its one error line (exit 2)."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return parser.parse_args(argv)
    except SystemExit as exit_:
        text = captured.getvalue()
        if exit_.code in (0, None):  # --help / --version printed what was asked
            sys.stderr.write(text)
            raise
        errors = [line for line in text.splitlines() if ": error: " in line]
        message = errors[-1].split(": error: ", 1)[1] if errors else one_line(text)
        prog = errors[-1].split(": error: ", 1)[0] if errors else "marble-eval"
        print(f"{prog}: error: {one_line(message)} (see {prog} --help)", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a subcommand; user errors (and bad arguments) print one line and exit 2."""
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) if isinstance(exit_.code, int) or exit_.code is None else 2
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except MarbleEvalError as exc:
        print(f"marble-eval: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave cannot be read or written (permissions, disk full)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"marble-eval: error: {one_line(where + (exc.strerror or str(exc)))}; check the path, permissions "
              f"and free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("marble-eval: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
