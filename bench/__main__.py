"""`make bench`: run every benchmark section and print one line per measured figure."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time

import torch

SECTIONS = ("bench.extraction", "bench.probes", "bench.loading")


def report(name: str, value: float, unit: str) -> None:
    """Print one measured figure."""
    print(f"  {name:<58} {value:>12.3f} {unit}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", choices=[s.split(".")[1] for s in SECTIONS], help="run one section")
    parser.add_argument("--quick", action="store_true", help="smaller inputs (smoke run)")
    args = parser.parse_args(argv)
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    print(f"marble-eval benchmarks on {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}{gpu} "
          f"(the GPU check with CUDA memory and the grid's speed-up: make bench-gpu)")
    for section in SECTIONS:
        if args.only and not section.endswith(args.only):
            continue
        started = time.perf_counter()
        print(f"[{section.split('.')[1]}]", flush=True)
        module = importlib.import_module(section)
        module.run(report, quick=args.quick)
        print(f"  ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
