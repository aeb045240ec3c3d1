"""Probe-stage loading benchmark: peak memory of reading a feature cache of N bytes for probing.

``run(report, quick=False)`` writes a synthetic cache of N bytes of fp16 features (MERT-95M shape:
13 x 768 per window, 30 s windows, 64 items per shard; ``quick``: a tenth), then, in a fresh
process, measures the RSS after importing the runtime (torch, marble-eval) and the peak RSS of
``pipeline.probe_inputs`` (what the probe stage calls). It reports both figures and checks that
the peak stays below 1.5 N plus the runtime (reading and concatenating, as before, took ~2 N).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.extraction import Report, _peak_rss, _reset_peak_rss

N_STATES, DIM = 13, 768
LIMIT = 1.5  # peak <= LIMIT x N + the runtime


def build_cache(root: Path, total_bytes: int) -> tuple[Path, int]:
    """A cache of about ``total_bytes`` of fp16 features (1-4 windows per item); returns (root, exact bytes)."""
    from marble_eval.features.cache import CacheKey, FeatureCache

    key = CacheKey(dataset="bench-v1", dataset_identity="0" * 64, model_id="bench", model_fingerprint="b" * 64,
                   family="mert", sample_rate=24000, n_hidden_states=N_STATES, dim=DIM, window_seconds=30.0,
                   max_seconds=None, precision="fp32")
    cache = FeatureCache(root, key).create()
    window_bytes = N_STATES * DIM * 2
    rng = np.random.default_rng(0)
    written, index, shard = 0, 0, {}
    while written < total_bytes:
        windows = 1 + index % 4
        shard[f"item{index:06d}"] = (rng.standard_normal((windows, N_STATES, DIM), dtype=np.float32),
                                     np.full(windows, 1499))
        written += windows * window_bytes
        index += 1
        if len(shard) == 64:
            cache.write_shard(shard)
            shard = {}
    if shard:
        cache.write_shard(shard)
    return cache.directory, written


def child(directory: str) -> dict[str, float]:
    """In a fresh process: the runtime's RSS, then the peak RSS of probe_inputs on the cache at ``directory``."""
    import torch  # noqa: F401  (the runtime the probe stage runs in)

    from marble_eval.datasets.base import Dataset, Item
    from marble_eval.features.cache import CacheKey, FeatureCache
    from marble_eval.pipeline import probe_inputs

    key = CacheKey(**json.loads((Path(directory) / "key.json").read_text()))
    cache = FeatureCache(Path(directory).parent.parent, key)
    ids = sorted(cache.done_ids())
    splits = ["train"] * 7 + ["valid"] + ["test"] * 2
    items = [Item(item_id, splits[i % 10], f"{item_id}.wav", ("x",) if i % 2 else ("y",))
             for i, item_id in enumerate(ids)]
    dataset = Dataset(name="bench", task="multilabel", vocabulary=["x", "y"], items=items, data_dir=Path(directory))
    runtime = _reset_peak_rss()
    data = probe_inputs(cache, dataset).data
    features = sum(split.features.nbytes for split in data.values())
    return {"runtime_mb": runtime, "peak_mb": _peak_rss(), "features_mb": features / 2**20}


def run(report: Report, quick: bool = False) -> dict[str, float]:
    total = (40 if quick else 400) * 2**20
    with tempfile.TemporaryDirectory(prefix="marble-bench-loading-") as work:
        directory, written = build_cache(Path(work), total)
        done = subprocess.run([sys.executable, "-m", "bench.loading", str(directory)], capture_output=True,
                              text=True, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    n_mb = written / 2**20
    loaded = figures["peak_mb"] - figures["runtime_mb"]
    report("loading.cache_features", n_mb, "MB of fp16 features in the cache (N)")
    report("loading.runtime_rss", figures["runtime_mb"], "MB RSS after importing torch and marble-eval")
    report("loading.probe_stage_peak_rss", figures["peak_mb"], "MB peak RSS of probe_inputs")
    report("loading.peak_over_n", loaded / n_mb, f"x N above the runtime (limit {LIMIT})")
    if loaded > LIMIT * n_mb:
        raise SystemExit(f"loading: the probe stage's peak {figures['peak_mb']:.0f} MB exceeds {LIMIT} N + runtime "
                         f"({LIMIT * n_mb + figures['runtime_mb']:.0f} MB)")
    return figures


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1])))
