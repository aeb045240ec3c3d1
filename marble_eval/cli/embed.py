"""`marble-eval embed`: audio files -> [n_files, hidden_states, dim] float32 .npy."""

from __future__ import annotations

import argparse
from pathlib import Path

from marble_eval.cli.common import add_device_args, add_model_args, load_model_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("embed", help="embed audio files: per-layer means over all frames -> .npy")
    add_model_args(parser)
    add_device_args(parser)
    parser.add_argument("--window-seconds", type=float, default=0.0, help="window length, 0 = whole file (default)")
    parser.add_argument("--max-seconds", type=float, default=None, help="truncate each file to this length")
    parser.add_argument("--output", type=Path, required=True, help="output .npy path")
    parser.add_argument("audio", nargs="+", type=Path, help="audio files (wav, flac, ogg, mp3)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from marble_eval.features.extract import embed_files

    model = load_model_from_args(args)
    states = embed_files(model, args.audio, args.window_seconds, args.max_seconds, args.batch_size)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.output, states)
    print(f"wrote {args.output}: float32 {list(states.shape)} (files x hidden states x dim)")
    return 0
