"""`marble-eval leaderboard`: the CultureMERT-layout tables from the results JSONs."""

from __future__ import annotations

import argparse
from pathlib import Path

from marble_eval.report import FORMATS, leaderboard_frames, render, write_leaderboard_md
from marble_eval.results import read_results


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("leaderboard", help="print the leaderboard; regenerates results/LEADERBOARD.md")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="folder of results JSONs")
    parser.add_argument("--format", default="md", choices=FORMATS, help="output format (default: md)")
    parser.add_argument("--recipe", default=None, help="probe recipe to show (default: the most common one)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    frames = leaderboard_frames(read_results(args.results_dir), args.recipe)
    markdown = render(frames, "md")
    path = write_leaderboard_md(args.results_dir, markdown)
    print(markdown if args.format == "md" else render(frames, args.format))
    print(f"(written to {path})" if args.format == "md" else "")
    return 0
