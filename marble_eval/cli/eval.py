"""`marble-eval eval`: extract if needed, probe, write results, print the dataset's row."""

from __future__ import annotations

import argparse

from marble_eval.cli.common import (add_cache_args, add_dataset_args, add_device_args, add_model_args,
                                    add_window_args, dataset_options, model_options)
from marble_eval.cli.extract import add_scale_args, settings_from_args
from marble_eval.cli.probe import add_probe_args, probe_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="extract (if not cached), probe, write results: the whole benchmark")
    add_model_args(parser)
    add_dataset_args(parser)
    add_cache_args(parser)
    add_device_args(parser)
    add_window_args(parser)
    add_scale_args(parser)
    add_probe_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from marble_eval.pipeline import evaluate

    settings = settings_from_args(args)
    extract_options = {"batch_size": settings.batch_size, "batch_seconds": settings.batch_seconds,
                       "num_workers": settings.num_workers}
    evaluate(args.model, args.dataset, **model_options(args), **dataset_options(args), **probe_options(args),
             extract_options=extract_options, log=print)
    return 0
