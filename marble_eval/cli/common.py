"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from marble_eval.models.base import PRECISION_CHOICES, normalise_precision


def add_model_args(parser: argparse.ArgumentParser, several: bool = False) -> None:
    """--model (repeatable when ``several``: one run per model) and --family."""
    if several:
        parser.add_argument("--model", action="append", required=True,
                            help='hub id (org/name[@rev]), local directory, or "fixture"; repeat for several')
    else:
        parser.add_argument("--model", required=True, help='hub id (org/name[@rev]), local directory, or "fixture"')
    parser.add_argument("--family", default=None, help="model family adapter (default: from config.json model_type)")
    parser.add_argument("--pooling", default=None,
                        help="token pooling of AST/MAEST models, e.g. cls-dist-patch-mean (default: patch-mean; "
                             "`marble-eval models` lists them)")


def add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu for "
                                                       "extraction; the probe grid then uses cuda when available)")
    add_precision_arg(parser, "compute precision of the forward pass")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="windows per forward pass (default: 8 on CPU; on a GPU as many as --batch-seconds holds)")


def add_precision_arg(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--precision", default=None, choices=PRECISION_CHOICES,
                        help=f"{what} (default: the protocol's, fp32: the reference, on every device; bf16/fp16 are "
                             "opt-in, their drift is in docs/scale.md; auto is an alias of the default)")


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset name (marble-eval datasets) or a YAML path")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding the dataset's audio")
    parser.add_argument("--reference-dir", type=Path, default=None,
                        help="local split/metadata files instead of fetching (env MARBLE_EVAL_REFERENCE_DIR)")
    parser.add_argument("--metadata", type=Path, default=None,
                        help="label file for datasets whose labels you supply (Dunya metadata JSON, FMA tracks.csv)")
    add_vocabulary_and_limit_args(parser)


def add_vocabulary_and_limit_args(parser: argparse.ArgumentParser) -> None:
    from marble_eval.datasets.base import VOCABULARY_CHOICES

    parser.add_argument("--vocabulary", default=None, choices=VOCABULARY_CHOICES,
                        help="label set: counted = the dataset's rule (top-N of train, ...); published = the "
                             "published tag list in its order (makam, hindustani, carnatic) (default: the "
                             "protocol's, counted)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="smoke run: only the first N items of each split (recorded with the results)")


def add_cache_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="feature cache root (default: $MARBLE_EVAL_HOME/features when MARBLE_EVAL_HOME is set, "
                             "else $XDG_CACHE_HOME/marble-eval/features or ~/.cache/marble-eval/features)")


def add_window_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window-seconds", type=float, default=None,
                        help="window length in seconds, 0 = whole clip (default: the dataset's)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="truncate audio to this many seconds (default: the dataset's)")
    parser.add_argument("--storage", default="fp16", choices=["fp16", "fp32"],
                        help="on-disk dtype of cached features (default: fp16)")


def dataset_options(args: argparse.Namespace) -> dict:
    """The dataset keyword arguments of the pipeline functions, from --data-dir, --reference-dir, --metadata."""
    return {"data_dir": args.data_dir, "vocabulary": getattr(args, "vocabulary", None),
            "dataset_options": {"reference_dir": args.reference_dir, "metadata": args.metadata,
                                "limit": getattr(args, "limit", None)}}


def model_options(args: argparse.Namespace) -> dict:
    """The model keyword arguments of the pipeline functions, from --device and --family."""
    return {"device": getattr(args, "device", None) or "cpu",
            "model_options": {"family": args.family, "pooling": getattr(args, "pooling", None)}}


def load_model_from_args(args: argparse.Namespace):
    """The AudioEncoder named by --model (and --family, --pooling, --device, --precision)."""
    from marble_eval.pipeline import load_model

    resolve_precision(args)
    return load_model(args.model, family=args.family, device=getattr(args, "device", None) or "cpu",
                      precision=getattr(args, "precision", "fp32"), pooling=getattr(args, "pooling", None))


def resolve_precision(args: argparse.Namespace) -> None:
    """For commands without a protocol (embed, info): ``--precision`` unset or ``auto`` means fp32, the
    reference (issue #16)."""
    args.precision = normalise_precision(getattr(args, "precision", None))
