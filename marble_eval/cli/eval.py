"""`marble-eval eval`: extract if needed, probe, write results, print the dataset's row."""

from __future__ import annotations

import argparse

from marble_eval.cli.common import (add_cache_args, add_dataset_args, add_device_args, add_model_args,
                                    add_window_args, load_dataset_from_args, load_model_from_args)
from marble_eval.cli.extract import run_extraction
from marble_eval.cli.probe import add_probe_args, probe_and_write


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="extract (if not cached), probe, write results: the whole benchmark")
    add_model_args(parser)
    add_dataset_args(parser)
    add_cache_args(parser)
    add_device_args(parser)
    add_window_args(parser)
    add_probe_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    model = load_model_from_args(args)
    dataset = load_dataset_from_args(args)
    for note in dataset.notes:
        print(f"note: {note}")
    run_extraction(args, model=model, dataset=dataset)
    probe_and_write(args, model, dataset)
    return 0
