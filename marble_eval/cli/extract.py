"""`marble-eval extract`: fill the feature cache for a model and dataset (resumable, optionally distributed)."""

from __future__ import annotations

import argparse
from typing import Any

from marble_eval.cli.common import (
    add_cache_args,
    add_dataset_args,
    add_device_args,
    add_model_args,
    add_window_args,
    dataset_options,
    model_options,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("extract", help="extract per-layer features of a dataset into the cache")
    add_model_args(parser)
    add_dataset_args(parser)
    add_cache_args(parser)
    add_device_args(parser)
    add_window_args(parser)
    add_scale_args(parser)
    parser.add_argument("--protocol", default=None,
                        help="protocol preset whose extraction settings apply (default: culturemert)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def add_scale_args(parser: argparse.ArgumentParser) -> None:
    """Decode workers, batching by audio length, and the distributed launch (docs/scale.md)."""
    parser.add_argument("--num-workers", type=int, default=None,
                        help="audio decode worker processes per process (default: 1 on CPU; with a GPU the cores "
                             "this process's share of the machine leaves; 0 = main process)")
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


def extract_options(args: argparse.Namespace) -> dict[str, Any]:
    """The speed-only and distributed-run keyword arguments of marble_eval.extract."""
    return {"batch_size": args.batch_size, "batch_seconds": args.batch_seconds, "num_workers": args.num_workers,
            "checkpoint_seconds": args.checkpoint_seconds, "devices": args.devices, "num_nodes": args.num_nodes,
            "strategy": args.strategy}


def run(args: argparse.Namespace) -> int:
    """0: every item has features; 4: some were skipped (failures.json); 3: none could be extracted."""
    from marble_eval.models.base import normalise_precision
    from marble_eval.pipeline import extract

    summary = extract(args.model, args.dataset, protocol=args.protocol, cache_dir=args.cache_dir,
                      precision=normalise_precision(args.precision, default=None),
                      window_seconds=args.window_seconds, max_seconds=args.max_seconds,
                      storage=args.storage, show_progress=not args.no_progress, log=print, **model_options(args),
                      **dataset_options(args), **extract_options(args))
    # In a distributed run only global rank 0 knows the whole outcome; another rank that exits non-zero
    # would make the launcher kill rank 0 before it merges the ranks' parts.
    return summary.exit_code() if summary.global_rank == 0 else 0
