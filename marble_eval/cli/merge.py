"""`marble-eval merge`: task arithmetic, theta = theta_base + lambda * sum_i (theta_i - theta_base)."""

from __future__ import annotations

import argparse
from pathlib import Path

from marble_eval.models.merge import FORMULA, PROVENANCE_FILE, merge_checkpoints
from marble_eval.models.registry import resolve


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("merge", help="task-arithmetic merge of fine-tuned checkpoints onto a base",
                                   description=f"Task arithmetic: {FORMULA}.")
    parser.add_argument("--base", required=True, help='base model: hub id, local directory, or "fixture"')
    parser.add_argument("--finetuned", required=True, nargs="+", help="one or more models of the base's architecture")
    parser.add_argument("--lambda", dest="lam", type=float, required=True, help="scaling coefficient (e.g. 0.2)")
    parser.add_argument("--output", required=True, type=Path, help="new directory for the merged checkpoint")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    report = merge_checkpoints(resolve(args.base), [resolve(spec) for spec in args.finetuned], args.lam, args.output)
    print(f"merged {report.n_float} float tensors ({report.n_copied} non-float copied) of "
          f"{len(args.finetuned)} fine-tuned model(s) onto {args.base} with lambda {args.lam:g}")
    print(f"wrote {report.output}/model.safetensors, config.json and {PROVENANCE_FILE}")
    print(f"fingerprint {report.provenance['output_fingerprint']}")
    return 0
