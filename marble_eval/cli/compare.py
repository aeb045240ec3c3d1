"""`marble-eval compare A B`: two models per dataset and per tag, with the paired-bootstrap difference."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compare", help="compare two models: per dataset mean ± std and paired-bootstrap "
                                   "difference A - B (each model's reference run), per tag ROC-AUC / AP")
    parser.add_argument("model_a", metavar="A", help="model A: display name, model id, or the name after the last /")
    parser.add_argument("model_b", metavar="B", help="model B")
    parser.add_argument("--dataset", default=None, help="only this dataset (default: every dataset both have)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="folder of results JSONs")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="replicates (default 1000)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from marble_eval.errors import MarbleEvalError
    from marble_eval.report.compare import compare_models, render_comparison
    from marble_eval.results.store import read_results

    if args.bootstrap < 1:
        raise MarbleEvalError(f"--bootstrap must be at least 1, got {args.bootstrap}")
    comparisons = compare_models(read_results(args.results_dir), args.model_a, args.model_b, dataset=args.dataset,
                                 n_boot=args.bootstrap)
    print(render_comparison(comparisons), end="")
    return 0
