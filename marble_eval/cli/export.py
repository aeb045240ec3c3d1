"""`marble-eval export`: the results as a tidy CSV / JSON, the paper's LaTeX tables, or model-index YAML."""

from __future__ import annotations

import argparse
from pathlib import Path

from marble_eval.report.export import FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="results as tidy CSV/JSON, LaTeX tables or model-card YAML")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="folder of results JSONs")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="tidy-csv / tidy-json: one row per (model, dataset, metric); latex: the paper's two "
                             "tables; model-index: Hugging Face model-card metadata, one YAML document per model")
    parser.add_argument("--recipe", default=None, help="probe recipe for latex / model-index (default: most common)")
    parser.add_argument("--output", type=Path, default=None, help="write to this file instead of printing")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from marble_eval.files import atomic_write_bytes
    from marble_eval.report.export import export
    from marble_eval.results.store import read_results

    text = export(read_results(args.results_dir), args.format, recipe=args.recipe)
    if args.output:
        atomic_write_bytes(args.output, text.encode())
        print(f"written: {args.output}")
    else:
        print(text, end="")
    return 0
