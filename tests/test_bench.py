"""`make bench` smoke run of the probe section: every figure is printed and plausible."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_probe_benchmark_quick_run_prints_every_figure() -> None:
    run = subprocess.run([sys.executable, "-m", "bench", "--only", "probes", "--quick"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = {}
    for line in run.stdout.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("probes."):
            figures[parts[0]] = float(parts[1])
    for name in ("matmul_peak_fp32", "batched_probes_per_s", "batched_fraction_of_peak", "adam_step_seconds",
                 "ceiling_fraction_of_peak", "batched_speedup"):
        assert figures[f"probes.{name}"] > 0, name
    assert figures["probes.batched_fraction_of_peak"] < 1.0
    assert figures["probes.ceiling_fraction_of_peak"] < 1.0
