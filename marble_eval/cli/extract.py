"""`marble-eval extract`: fill the feature cache for a model and dataset (resumable)."""

from __future__ import annotations

import argparse

from marble_eval.cli.common import (add_cache_args, add_dataset_args, add_device_args, add_model_args,
                                    add_window_args, features_root, load_dataset_from_args, load_model_from_args)
from marble_eval.extract import ExtractSettings, ExtractSummary, extract_dataset


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("extract", help="extract per-layer features of a dataset into the cache")
    add_model_args(parser)
    add_dataset_args(parser)
    add_cache_args(parser)
    add_device_args(parser)
    add_window_args(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace) -> ExtractSettings:
    return ExtractSettings(window_seconds=args.window_seconds, max_seconds=args.max_seconds,
                           precision=args.precision, storage=args.storage, batch_size=args.batch_size)


def run_extraction(args: argparse.Namespace, model=None, dataset=None) -> ExtractSummary:
    """Extract with the arguments of `extract` (shared with `eval`); prints the summary."""
    model = model or load_model_from_args(args)
    dataset = dataset or load_dataset_from_args(args)
    summary = extract_dataset(model, dataset, features_root(args), settings_from_args(args),
                              show_progress=not getattr(args, "no_progress", False))
    for line in summary.lines():
        print(line)
    return summary


def run(args: argparse.Namespace) -> int:
    run_extraction(args)
    return 0
