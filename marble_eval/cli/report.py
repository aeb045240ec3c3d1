"""`marble-eval report`: a static HTML page with the leaderboard, significance, plots and provenance."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="write a self-contained HTML report (leaderboard, plots, "
                                   "significance, provenance)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="folder of results JSONs")
    parser.add_argument("--output", type=Path, required=True, help="folder for index.html and figures/")
    parser.add_argument("--recipe", default=None, help="probe recipe to show (default: the most common one)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="paired-bootstrap replicates (0: skip significance; default 1000)")
    parser.add_argument("--no-published", action="store_true", help="leave out the published model-card rows")
    parser.add_argument("--compare", nargs=2, action="append", metavar=("A", "B"), default=None,
                        help="add a section comparing models A and B per dataset and per tag (repeatable)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from marble_eval.report.page import build_page  # matplotlib only when the command runs
    from marble_eval.results.store import read_results

    path = build_page(read_results(args.results_dir), args.output, recipe=args.recipe, n_boot=args.bootstrap,
                      published=not args.no_published, compare=[tuple(pair) for pair in args.compare or []])
    print(f"report: {path}")
    return 0
