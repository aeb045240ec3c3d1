"""Running CLI subcommands in-process through their own parser, as marble_eval.cli.main does."""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from marble_eval.errors import MarbleEvalError


def run_subcommands(argv: list[str], capsys, *modules: ModuleType) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``argv`` parsed by the subcommands the ``modules`` register;
    a MarbleEvalError is one line on stderr and exit 2."""
    parser = argparse.ArgumentParser(prog="marble-eval")
    subparsers = parser.add_subparsers()
    for module in modules:
        module.register(subparsers)
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
    except MarbleEvalError as exc:
        print(f"marble-eval: error: {exc}", file=sys.stderr)
        code = 2
    out, err = capsys.readouterr()
    return code, out, err
