"""`marble-eval info`: what a model is (family, states, dim, rate, parameters, fingerprint)."""

from __future__ import annotations

import argparse
import json

from marble_eval.cli.common import add_model_args, load_model_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="describe a model: family, hidden states, dim, rate, fingerprint")
    add_model_args(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    info = load_model_from_args(args).info
    fields = {"model": info.model_id, "family": info.family, "sample_rate": info.sample_rate,
              "hidden_states": info.n_hidden_states, "dim": info.dim, "parameters": info.n_parameters,
              "fingerprint": info.fingerprint, "revision": info.revision,
              "fixed_window_seconds": info.fixed_window_seconds,
              "native_window_seconds": info.native_window_seconds, "licence": info.licence, **info.extra}
    if args.json:
        print(json.dumps(fields, indent=2))
    else:
        width = max(map(len, fields))
        for name, value in fields.items():
            if value is not None:
                print(f"{name:<{width}}  {value:,}" if isinstance(value, int) and not isinstance(value, bool)
                      else f"{name:<{width}}  {value}")
    return 0
