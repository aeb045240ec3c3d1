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


def test_gpu_check_smoke_on_cpu_prints_one_json_object_with_every_key() -> None:
    import json

    from bench.gpu_check import KEYS

    run = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--smoke"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert tuple(result) == KEYS and result["smoke"] is True and result["device"].startswith("cpu")
    for key in ("decode_x_realtime_per_worker", "extraction_x_realtime_fp32", "extraction_x_realtime_bf16",
                "bf16_peak_share"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["peak_cuda_memory_gib"] is None and result["audio_seconds"] >= 20
    speedup = result["probe_grid_speedup"]
    assert (isinstance(speedup, float) and speedup > 0) or speedup.startswith("unavailable: ")


def test_probe_loading_benchmark_reports_the_peak_against_the_cache_size() -> None:
    run = subprocess.run([sys.executable, "-m", "bench", "--only", "loading", "--quick"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = {line.split()[0]: float(line.split()[1]) for line in run.stdout.splitlines()
               if line.split() and line.split()[0].startswith("loading.")}
    assert figures["loading.cache_features"] > 30 and figures["loading.runtime_rss"] > 0
    assert figures["loading.probe_stage_peak_rss"] > figures["loading.runtime_rss"]
    assert 0.9 < figures["loading.peak_over_n"] < 1.5  # the features themselves, not twice them
