"""`marble-eval extract`: fill the feature cache for a model and dataset (resumable, optionally distributed)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from marble_eval.cli.common import (add_cache_args, add_dataset_args, add_device_args, add_model_args,
                                    add_window_args, features_root, load_dataset_from_args, load_model_from_args,
                                    resolve_precision)
from marble_eval.errors import MarbleEvalError

if TYPE_CHECKING:  # the extraction stack (torch, Lightning) is imported only when a command runs
    from marble_eval.features.extract import ExtractSettings, ExtractSummary


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("extract", help="extract per-layer features of a dataset into the cache")
    add_model_args(parser)
    add_dataset_args(parser)
    add_cache_args(parser)
    add_device_args(parser)
    add_window_args(parser)
    add_scale_args(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def add_scale_args(parser: argparse.ArgumentParser) -> None:
    """Decode workers, batching by audio length, and the distributed launch (docs/scale.md)."""
    parser.add_argument("--num-workers", type=int, default=None,
                        help="audio decode worker processes (default: 1 on CPU, up to 8 with a GPU; 0 = main process)")
    parser.add_argument("--batch-seconds", type=float, default=None,
                        help="at most this much audio per forward pass (default: 40 on CPU, 480 on GPU)")
    parser.add_argument("--devices", type=int, default=None,
                        help="processes per node for distributed extraction, e.g. one per GPU (default: one process)")
    parser.add_argument("--num-nodes", type=int, default=1, help="machines in a distributed run (default: 1)")
    parser.add_argument("--strategy", default="ddp",
                        help="Lightning strategy when distributed: ddp (re-runs this command per rank), ddp_spawn, "
                             "ddp_fork (default: ddp)")
    parser.add_argument("--checkpoint-seconds", type=float, default=30.0,
                        help="write finished items to the cache at least this often (default: 30; a kill -9 "
                             "loses at most the batch in flight and this much work)")


def settings_from_args(args: argparse.Namespace) -> ExtractSettings:
    from marble_eval.features.extract import ExtractSettings

    return ExtractSettings(window_seconds=args.window_seconds, max_seconds=args.max_seconds,
                           precision=args.precision, storage=args.storage, batch_size=args.batch_size,
                           batch_seconds=getattr(args, "batch_seconds", None),
                           num_workers=getattr(args, "num_workers", None),
                           checkpoint_seconds=getattr(args, "checkpoint_seconds", 30.0))


def is_distributed(args: argparse.Namespace) -> bool:
    """True when --devices or --num-nodes ask for more than one process."""
    devices, nodes = getattr(args, "devices", None), getattr(args, "num_nodes", 1) or 1
    if devices is not None and devices < 1:
        raise MarbleEvalError(f"--devices {devices}: must be 1 or more")
    if nodes < 1:
        raise MarbleEvalError(f"--num-nodes {nodes}: must be 1 or more")
    return (devices or 1) > 1 or nodes > 1


def run_extraction(args: argparse.Namespace, model=None, dataset=None) -> ExtractSummary:
    """Extract with the arguments of `extract` (shared with `eval`); prints the summary on global rank 0."""
    from marble_eval.features.extract import validate_settings

    resolve_precision(args, None)
    validate_settings(settings_from_args(args), args.device)  # before the dataset or the model loads
    distributed = is_distributed(args)
    dataset = dataset or load_dataset_from_args(args)
    show_progress = not getattr(args, "no_progress", False)
    if distributed:
        from marble_eval.features.distributed import accelerator_for, extract_distributed

        accelerator = accelerator_for(args.device)
        # every rank loads on the host; Lightning then moves the weights to that rank's own device
        model = model or load_model_from_args(argparse.Namespace(**{**vars(args), "device": "cpu"}))
        summary = extract_distributed(model, dataset, features_root(args), settings_from_args(args),
                                      devices=args.devices or 1, num_nodes=args.num_nodes, strategy=args.strategy,
                                      accelerator=accelerator, show_progress=show_progress)
    else:
        from marble_eval.features.extract import extract_dataset

        model = model or load_model_from_args(args)
        summary = extract_dataset(model, dataset, features_root(args), settings_from_args(args),
                                  show_progress=show_progress)
    if summary.global_rank == 0:
        for line in summary.lines():
            print(line)
    return summary


def run(args: argparse.Namespace) -> int:
    """0: every item has features; 4: some were skipped (failures.json); 3: none could be extracted."""
    return run_extraction(args).exit_code()
