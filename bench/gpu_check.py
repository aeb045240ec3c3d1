"""`make bench-gpu`: the prepared GPU check, one JSON object on stdout (progress on stderr).

    python -m bench.gpu_check                      # on the GPU: < 8 min on one H100
    python -m bench.gpu_check --device cpu --smoke # the same keys in CI, < 3 min on 2 cores

It measures, in one run:
- ``device``: the device's name;
- ``decode_x_realtime_per_worker``: one process decoding 44.1 kHz stereo MP3 to 24 kHz mono windows;
- ``extraction_x_realtime_fp32`` / ``_bf16``: ``extract_dataset`` with default settings (decode
  workers from the cores, kept for the whole run) over >= 30 min of MP3 (smoke: 20 s) with random
  weights in the MERT-95M layout (smoke: the tiny test layout), after a warm-up run;
- ``bf16_peak_share``: the bf16 extraction's model FLOP/s (counted from config.json) over the
  device's measured bf16 matmul peak;
- ``peak_cuda_memory_gib``: torch's peak CUDA allocation over the extractions (null on CPU);
- ``probe_grid_speedup``: the probe grid (MARBLE grid, one seed, MLP) on ``--device`` over the same
  grid on the CPU, or a string saying why it is unavailable.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.extraction import FULL_SIZE, RATE, _dataset, forward_flops, matmul_peak_flops, write_clip
from marble_eval.audio.decode import stream_windows
from marble_eval.features.extract import ExtractSettings, extract_dataset
from marble_eval.models import load_model
from marble_eval.models.tiny import build_tiny_mert

KEYS = ("device", "decode_x_realtime_per_worker", "extraction_x_realtime_fp32", "extraction_x_realtime_bf16",
        "bf16_peak_share", "peak_cuda_memory_gib", "probe_grid_speedup", "audio_seconds", "smoke")


def log(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_speed(paths: list[Path]) -> float:
    """x realtime of one process decoding, downmixing, resampling and windowing ``paths``."""
    started, audio = time.perf_counter(), 0
    for path in paths:
        for window in stream_windows(path, RATE, 30.0):
            audio += len(window)
    return audio / RATE / (time.perf_counter() - started)


def extraction_speed(model_dir: Path, paths: list[Path], work: Path, device: torch.device, precision: str
                     ) -> tuple[float, float]:
    """(x realtime, seconds) of extract_dataset over ``paths`` in 30 s windows, after a warm-up on two files."""
    model = load_model(str(model_dir), device=str(device))
    settings = ExtractSettings(precision=precision, storage="fp16")
    extract_dataset(model, _dataset(paths[:2], 30.0), work / f"warm-{precision}", settings, show_progress=False)
    synchronize(device)
    started = time.perf_counter()
    summary = extract_dataset(model, _dataset(paths, 30.0), work / f"run-{precision}", settings, show_progress=False)
    synchronize(device)
    seconds = time.perf_counter() - started
    if summary.failures:
        raise RuntimeError(f"extraction failed for {len(summary.failures)} file(s): {summary.failures}")
    return summary.audio_seconds / seconds, seconds


def grid_speedup(device: torch.device, smoke: bool) -> float:
    """The probe grid's wall-clock speed-up on ``device`` over the CPU grid of the same machine
    (bench.probes.grid_speedup: one seed of the MARBLE grid on an MTAT-shaped synthetic cache)."""
    from bench.probes import grid_speedup as measure

    figures = measure(str(device), smoke=smoke)
    log(f"probe grid: cpu {figures['cpu_seconds']:.1f} s, {figures['device']} {figures['device_seconds']:.1f} s")
    return float(figures["speedup"])


def run(device: torch.device, smoke: bool, work: Path) -> dict[str, Any]:
    """Every figure of the check, by the names in KEYS."""
    seconds_per_file, files = (10.0, 2) if smoke else (30.0, 62)  # 62 x 30 s: 31 min of audio
    audio_dir = work / "audio"
    audio_dir.mkdir()
    log(f"writing {files} x {seconds_per_file:.0f} s of 44.1 kHz stereo MP3")
    paths = [write_clip(audio_dir / f"clip{index:03d}.mp3", seconds_per_file, 44100, 2, seed=index)
             for index in range(files)]
    out: dict[str, Any] = {"device": device_name(device), "smoke": smoke, "audio_seconds": files * seconds_per_file}
    out["decode_x_realtime_per_worker"] = decode_speed(paths[:2 if smoke else 6])
    log(f"decode: {out['decode_x_realtime_per_worker']:.0f}x realtime per worker")

    model_dir = build_tiny_mert(work / "model", weights="safetensors", seed=0, **({} if smoke else FULL_SIZE))
    config = json.loads((model_dir / "config.json").read_text())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bf16_seconds = 0.0
    for precision in ("fp32", "bf16"):
        speed, seconds = extraction_speed(model_dir, paths, work, device, precision)
        out[f"extraction_x_realtime_{precision}"] = speed
        bf16_seconds = seconds if precision == "bf16" else bf16_seconds
        log(f"extraction {precision}: {speed:.0f}x realtime")
    out["peak_cuda_memory_gib"] = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
                                   else None)
    flops = files * forward_flops(config, int(seconds_per_file * RATE))
    peak = matmul_peak_flops(torch.bfloat16, str(device), size=1024 if smoke else 8192)
    out["bf16_peak_share"] = flops / bf16_seconds / peak
    out["probe_grid_speedup"] = grid_speedup(device, smoke)
    return {key: out[key] for key in KEYS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="torch device (default: cuda when there is one, else cpu)")
    parser.add_argument("--smoke", action="store_true", help="tiny model and 20 s of audio (CI): the same keys")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device}: CUDA is not available on this machine; use --device cpu",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="marble-gpu-check-") as work:
        result = run(device, args.smoke, Path(work))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
