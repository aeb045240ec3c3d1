"""`marble-eval models`: every name --model accepts by name (hub ids and built-ins) with what it is."""

from __future__ import annotations

import argparse
import dataclasses
import json

from marble_eval.models.catalog import CATALOG
from marble_eval.models.registry import FAMILIES, TOKEN_POOLING_FAMILIES
from marble_eval.models.token_pooling import DEFAULT_POOLING, POOLINGS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the model names --model accepts (family, rate, frame rate, "
                                                  "hidden states, dim, weights licence)")
    parser.add_argument("--family", default=None, help="only models of this family")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    entries = [entry for entry in CATALOG if args.family in (None, entry.family)]
    if args.json:
        print(json.dumps([dataclasses.asdict(entry) for entry in entries], indent=2))
        return 0
    rows = [("model", "family", "rate", "frames/s", "states", "dim", "window", "native", "licence", "description")]
    rows += [(e.model_id, e.family, str(e.sample_rate), f"{e.frame_rate:g}" if e.frame_rate else "-",
              str(e.n_hidden_states), str(e.dim), f"{e.window_seconds:g} s" if e.window_seconds else "any",
              f"{e.native_window_seconds:g} s" if e.native_window_seconds else "-", e.licence or "see model card",
              e.description) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    print("\nfixture and fixture-pre-ln are built in (tiny random weights, made on first use; no download)")
    print(f"any local directory or hub id of a supported family also loads; --family overrides the "
          f"config's model_type: {', '.join(FAMILIES)}")
    print(f"--pooling ({', '.join(TOKEN_POOLING_FAMILIES)} only; default {DEFAULT_POOLING}):")
    width = max(map(len, POOLINGS))
    for name, (description, factor) in POOLINGS.items():
        print(f"  {name:<{width}}  {description}" + (f" ({factor} x hidden size)" if factor > 1 else ""))
    return 0
