"""`marble-eval probe`: train the probe grid on cached features and write the results JSON."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from marble_eval.cli.common import (
    add_cache_args,
    add_dataset_args,
    add_model_args,
    add_precision_arg,
    add_window_args,
    dataset_options,
    model_options,
)
from marble_eval.errors import MarbleEvalError
from marble_eval.models.base import normalise_precision
from marble_eval.probe_choices import PROBE_FIELDS, choice_values

DEFAULT_RESULTS = Path("results")


def add_probe_args(parser: argparse.ArgumentParser) -> None:
    """The protocol preset and the probe-stage options that override its fields."""
    parser.add_argument("--protocol", default=None,
                        help="protocol preset: protocols/<name>.yaml or a YAML path (default: culturemert)")
    parser.add_argument("--recipe", default=None, help="probe recipe: probes/<name>.yaml or a YAML path "
                                                       "(default: the protocol's, mlp)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds, 0..N-1 (default: the protocol's)")
    parser.add_argument("--grid", default=None, choices=["marble", "quick", "v1"],
                        help="marble: 6 lrs x every layer + weighted (default); quick: few lrs on the weighted sum; "
                             "v1: only the (layer, lr) MARBLE v1 chose for the task (MARBLE datasets, MERT-sized "
                             "models)")
    parser.add_argument("--probe-device", default=None,
                        help="device of the probe grid: cpu or cuda (default: --device when given, else cuda when "
                             "available, else cpu)")
    parser.add_argument("--lrs", default=None, help="comma-separated learning rates (overrides the grid's)")
    parser.add_argument("--layer", "--layers", dest="layers", default=None,
                        help="all (every hidden state + weighted), weighted, or comma-separated indices")
    for field in PROBE_FIELDS:
        parser.add_argument(f"--{field.replace('_', '-')}", default=None, choices=choice_values(field),
                            help="override the protocol's value (docs/protocol.md)")
    parser.add_argument("--max-epochs", type=int, default=None, help="override the recipe's max epochs")
    parser.add_argument("--score-per", default=None, choices=["item", "window"],
                        help="score each item (its windows averaged) or each window on its own (default: the "
                             "dataset's; VocalSet: window, as MARBLE scores its 3-s chunks)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for probe training (default: 1 for features under 512-d, else torch's)")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS, help="where results JSONs go")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo a result that already exists with exactly this model, dataset and protocol")
    parser.add_argument("--name", default=None, help="display name in tables (the model fingerprint stays its identity)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("probe", help="train the probe grid on cached features; write results JSON")
    add_model_args(parser)
    add_dataset_args(parser)
    add_cache_args(parser)
    add_window_args(parser)
    add_probe_args(parser)
    parser.add_argument("--device", default=None,
                        help="device of the probe grid: cpu, cuda, cuda:1 (default: cuda when available, else cpu)")
    add_precision_arg(parser, "precision the features were extracted with (selects the cache)")
    parser.set_defaults(run=run)


def parse_lrs(text: str | None) -> list[float] | None:
    """"1e-3,5e-4" -> [0.001, 0.0005]."""
    if not text:
        return None
    try:
        return [float(value) for value in text.split(",")]
    except ValueError:
        raise MarbleEvalError(f"--lrs {text!r}: expected comma-separated numbers like 1e-3,5e-4") from None


def parse_layers(text: str | None) -> list[int | str] | None:
    """"all" | "weighted" | "0,3,weighted" -> the layer choices of a grid (range checked by the grid)."""
    if not text or text == "all":
        return None
    layers: list[int | str] = []
    for part in text.split(","):
        part = part.strip()
        if part == "weighted" or part.isdigit():
            layers.append(part if part == "weighted" else int(part))
        else:
            raise MarbleEvalError(f"--layer {text!r}: {part!r} is not 'all', 'weighted' or a hidden-state index")
    return layers


def probe_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of marble_eval.probe taken from the command line."""
    return {"protocol": args.protocol, "recipe": args.recipe, "seeds": args.seeds, "grid": args.grid,
            "lrs": parse_lrs(args.lrs), "layers": parse_layers(args.layers),
            **{field: getattr(args, field) for field in PROBE_FIELDS}, "max_epochs": args.max_epochs,
            "threads": args.threads, "score_per": args.score_per, "probe_device": args.probe_device or getattr(args, "device", None), "results_dir": args.results_dir, "overwrite": args.overwrite,
            "name": args.name, "cache_dir": args.cache_dir,
            "precision": normalise_precision(args.precision, default=None),
            "window_seconds": args.window_seconds, "max_seconds": args.max_seconds, "storage": args.storage,
            "show_progress": not args.no_progress}


def run(args: argparse.Namespace) -> int:
    from marble_eval.pipeline import probe

    probe(args.model, args.dataset, **model_options(args), **dataset_options(args), **probe_options(args), log=print)
    return 0
