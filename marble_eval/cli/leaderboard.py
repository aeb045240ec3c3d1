"""`marble-eval leaderboard`: the leaderboard tables (CultureMERT or MARBLE layout) from the results JSONs."""

from __future__ import annotations

import argparse
from pathlib import Path

from marble_eval.report.leaderboard import (
    FORMATS,
    LAYOUTS,
    full_runs,
    leaderboard_frames,
    render,
    render_significance,
    results_for_recipe,
    write_leaderboard_md,
)
from marble_eval.results.store import read_results


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("leaderboard", help="print the leaderboard; regenerates results/LEADERBOARD.md")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="folder of results JSONs")
    parser.add_argument("--format", default="md", choices=FORMATS, help="output format (default: md)")
    parser.add_argument("--layout", default="culturemert", choices=LAYOUTS,
                        help="culturemert: per task type its own tables (tagging as the CultureMERT cards; default); "
                        "marble: one column per dataset with its task's MARBLE metric, in MARBLE's order")
    parser.add_argument("--recipe", default=None, help="probe recipe to show (default: the most common one)")
    parser.add_argument("--published", action="store_true",
                        help="add the published rows (culturemert: the CultureMERT model cards; marble: the MARBLE v1 "
                        "paper's MERT-v1-95M and 330M) and measured - published per cell (marked within 0.5 point, "
                        "and beyond twice the seed std)")
    parser.add_argument("--smoke", action="store_true",
                        help="also show `--limit` smoke runs (left out by default: they use a subset of each split)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="paired-bootstrap replicates for significance between models (0: skip; default 1000)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    results = full_runs(read_results(args.results_dir), getattr(args, "smoke", False))
    chosen = results_for_recipe(results, args.recipe)
    significance = ""
    winners = None
    if args.bootstrap > 0:
        from marble_eval.report.significance import compare_results, significant_winners

        comparisons, notes = compare_results(chosen, n_boot=args.bootstrap)
        winners = significant_winners(comparisons)
        significance = "\n" + render_significance(comparisons, notes)
    board = leaderboard_frames(chosen, published=args.published, winners=winners,
                               layout=getattr(args, "layout", "culturemert"))
    markdown = render(board, "md") + significance
    path = write_leaderboard_md(args.results_dir, markdown)
    print(markdown if args.format == "md" else render(board, args.format))
    print(f"(written to {path})" if args.format == "md" else "")
    return 0
