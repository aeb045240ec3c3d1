"""`marble-eval embed`: audio files -> .npz with per-layer means over all frames of each file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from marble_eval.cli.common import add_device_args, add_model_args, load_model_from_args, resolve_precision
from marble_eval.errors import EXIT_NOTHING_EXTRACTED, EXIT_OK, EXIT_SOME_SKIPPED


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("embed", help="embed audio files: per-layer means over all frames -> .npz")
    add_model_args(parser)
    add_device_args(parser)
    parser.add_argument("--window-seconds", type=float, default=30.0,
                        help="window length (default: 30; memory stays that of one window per batch row "
                             "whatever the file length; 0 = whole file at once)")
    parser.add_argument("--max-seconds", type=float, default=None, help="truncate each file to this length")
    parser.add_argument("--output", type=Path, required=True,
                        help="the .npz file to write (exactly this path): features [files, hidden states, dim], "
                             "paths, ids")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("audio", nargs="+", type=Path, help="audio files (wav, flac, ogg, mp3)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """0: every file embedded; 4: some skipped (listed on stderr); 3: none could be embedded."""
    from marble_eval.features.extract import ExtractSettings, embed_paths, validate_settings

    resolve_precision(args)
    validate_settings(ExtractSettings(window_seconds=args.window_seconds, max_seconds=args.max_seconds,
                                      precision=args.precision, batch_size=args.batch_size), args.device or "cpu")
    model = load_model_from_args(args)
    result = embed_paths(model, args.audio, args.window_seconds, args.max_seconds, args.batch_size,
                         show_progress=not args.no_progress)
    for path, reason in result.failures.items():
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not result.paths:
        print("marble-eval: error: no file could be embedded; nothing written", file=sys.stderr)
        return EXIT_NOTHING_EXTRACTED
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result.save(args.output)
    print(f"wrote {args.output}: features float32 {list(result.features.shape)} (files x hidden states x dim), "
          f"{len(result.paths)} embedded, {len(result.failures)} skipped")
    return EXIT_SOME_SKIPPED if result.failures else EXIT_OK
