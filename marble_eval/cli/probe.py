"""`marble-eval probe`: train the probe grid on cached features and write the results JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from marble_eval.cli.common import (
    add_cache_args,
    add_dataset_args,
    add_model_args,
    add_precision_arg,
    add_window_args,
    features_root,
    load_dataset_from_args,
    load_model_from_args,
)
from marble_eval.errors import MarbleEvalError

DEFAULT_RESULTS = Path("results")


def add_probe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default="mlp", help="probe recipe: probes/<name>.yaml or a YAML path (default: mlp)")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds, 0..N-1 (default: 5)")
    parser.add_argument("--grid", default="marble", choices=["marble", "quick"],
                        help="marble: 6 lrs x every layer + weighted (default); quick: lr 1e-3, weighted")
    parser.add_argument("--lrs", default=None, help="comma-separated learning rates (overrides the grid's)")
    parser.add_argument("--layer", "--layers", dest="layers", default=None,
                        help="all (every hidden state + weighted), weighted, or comma-separated indices")
    parser.add_argument("--max-epochs", type=int, default=None, help="override the recipe's max epochs")
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
    add_precision_arg(parser, "precision the features were extracted with (selects the cache)")
    parser.set_defaults(run=run)


def grid_from_args(args: argparse.Namespace, n_hidden_states: int):
    """The GridSpec chosen by --grid / --lrs / --layer / --seeds."""
    from marble_eval.probes import GridSpec

    if args.seeds < 1:
        raise MarbleEvalError(f"--seeds must be at least 1, got {args.seeds}")
    seeds = list(range(args.seeds))
    grid = GridSpec.marble(n_hidden_states, seeds) if args.grid == "marble" else GridSpec.quick(seeds)
    lrs, layers = list(grid.lrs), list(grid.layers)
    if args.lrs:
        try:
            lrs = [float(value) for value in args.lrs.split(",")]
        except ValueError:
            raise MarbleEvalError(f"--lrs {args.lrs!r}: expected comma-separated numbers like 1e-3,5e-4") from None
    if args.layers:
        layers = parse_layers(args.layers, n_hidden_states)
    return GridSpec(lrs=lrs, layers=layers, seeds=seeds)


def parse_layers(text: str, n_hidden_states: int) -> list:
    """"all" | "weighted" | "0,3,weighted" -> the layer choices of a grid."""
    if text == "all":
        return [*range(n_hidden_states), "weighted"]
    layers: list = []
    for part in text.split(","):
        part = part.strip()
        if part == "weighted":
            layers.append("weighted")
        elif part.isdigit() and int(part) < n_hidden_states:
            layers.append(int(part))
        else:
            raise MarbleEvalError(f"--layer {text!r}: {part!r} is not 'all', 'weighted' or an index "
                                  f"0..{n_hidden_states - 1}")
    return layers


def probe_and_write(args: argparse.Namespace, model, dataset) -> Path:
    """Run the grid for ``args`` on the cache of ``model`` x ``dataset``; write the result, return its path.

    A result of exactly this model, dataset and protocol already in --results-dir is kept (no training)
    unless --overwrite.
    """
    from marble_eval.features.extract import ExtractSettings, open_cache
    from marble_eval.pipeline import result_identity, run_probe_with_predictions
    from marble_eval.probes import load_recipe
    from marble_eval.results.schema import ProbeResult
    from marble_eval.results.store import find_existing, write_predictions, write_result

    recipe = load_recipe(args.recipe)
    grid = grid_from_args(args, model.info.n_hidden_states)
    # Only what the cache key depends on; run-time knobs (batch size, workers) do not select a cache.
    settings = ExtractSettings(window_seconds=args.window_seconds, max_seconds=args.max_seconds,
                               precision=args.precision, storage=args.storage)
    cache = open_cache(features_root(args), model, dataset, settings)
    existing = find_existing(args.results_dir, result_identity(cache, dataset, model.info, recipe, grid,
                                                               args.max_epochs))
    if existing is not None and not args.overwrite:
        print(f"results: {existing} (already computed with this model, dataset and protocol; "
              f"--overwrite to redo)")
        print(summary_line(ProbeResult.from_disk(existing)))
        return existing
    result, predictions = run_probe_with_predictions(cache, dataset, model.info, recipe, grid,
                                                     show_progress=not args.no_progress, max_epochs=args.max_epochs,
                                                     threads=args.threads, display_name=args.name)
    path = write_result(args.results_dir, result, overwrite=True)
    if predictions.probs:
        write_predictions(path, predictions.item_ids, predictions.y_true, predictions.probs, predictions.seeds,
                          predictions.tags)
    print(f"results: {path}")
    print(summary_line(result))
    return path


def summary_line(result) -> str:
    """One line: the dataset's row (test metrics, mean ± std over seeds, in percent)."""
    parts = []
    for metric, label in (("roc_auc", "ROC-AUC"), ("map", "mAP"), ("micro_f1", "micro-F1"), ("macro_f1", "macro-F1")):
        stats = result.stat(metric)
        if stats:
            parts.append(f"{label} {100 * stats.mean:.1f} ± {100 * stats.std:.1f}")
    chosen = ", ".join(f"seed {s.seed}: lr {s.lr:g} layer {s.layer}" for s in result.selected)
    return f"{result.model.display} on {result.dataset.name}: {'  '.join(parts)}  (selected {chosen})"


def run(args: argparse.Namespace) -> int:
    model = load_model_from_args(args)
    dataset = load_dataset_from_args(args)
    probe_and_write(args, model, dataset)
    return 0
