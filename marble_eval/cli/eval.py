"""`marble-eval eval`: extract if needed, probe, write results, print the dataset's row."""

from __future__ import annotations

import argparse
from pathlib import Path

from marble_eval.cli import leaderboard
from marble_eval.cli.common import (
    add_cache_args,
    add_dataset_args,
    add_device_args,
    add_model_args,
    add_window_args,
    dataset_options,
    model_options,
)
from marble_eval.cli.extract import add_scale_args, extract_options
from marble_eval.cli.probe import add_probe_args, probe_options
from marble_eval.errors import EXIT_OK, EXIT_SUITE_INCOMPLETE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="extract (if not cached), probe, write results: the whole benchmark")
    add_model_args(parser, several=True)
    add_dataset_args(parser)
    parser.add_argument("--data-config", type=Path, default=None,
                        help="YAML mapping each dataset to its data_dir (and metadata, reference_dir) for suites")
    add_cache_args(parser)
    add_device_args(parser)
    add_window_args(parser)
    add_scale_args(parser)
    add_probe_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from marble_eval.pipeline import evaluate
    from marble_eval.suites import dataset_names, evaluate_suite, suite_lines

    options = {**model_options(args), **probe_options(args), "log": print, "extract_options": extract_options(args)}
    models = list(dict.fromkeys(args.model))
    datasets = dataset_names(args.dataset)
    if len(models) == 1 and len(datasets) == 1 and not args.data_config:
        evaluate(models[0], datasets[0], **dataset_options(args), **options)
        code = EXIT_OK
    else:
        outcomes = evaluate_suite(models, datasets, data_config=args.data_config, **dataset_options(args),
                                  **options)
        for line in suite_lines(outcomes):
            print(line)
        code = EXIT_SUITE_INCOMPLETE if any(outcome.status == "failed" for outcome in outcomes) else EXIT_OK
    layout = "marble" if "marble" in [part.strip() for part in str(args.dataset).split(",")] else "culturemert"
    print(f"marble-eval leaderboard --results-dir {args.results_dir}" + (" --layout marble" if layout == "marble" else ""))
    leaderboard.run(argparse.Namespace(results_dir=args.results_dir, format="md", recipe=None, published=False,
                                       bootstrap=1000, smoke=args.limit is not None, layout=layout))
    return code
