"""Distributed extraction: two CPU processes (gloo, Lightning DDP) fill the same cache as one process.

Equality is item for item: same ids, window counts, frame counts and failures; fp32 features
agree to 1e-5 (observed ~5e-7, a few float32 ulps). They are not bitwise equal because the ranks
batch different windows together and run one thread each: oneDNN/MKL pick other kernel blockings
for other batch sizes and thread counts, which reorders float32 sums (one process shows the same
~2e-7 differences between batch sizes 1 and 8, or between 1 and 2 threads).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from marble_eval.datasets.registry import load_dataset
from marble_eval.errors import EXIT_SOME_SKIPPED
from marble_eval.features.extract import ExtractSettings, extract_dataset, open_cache
from marble_eval.models import load_model

REPO = Path(__file__).resolve().parents[1]


def test_two_process_ddp_extraction_equals_the_single_process_cache(tiny_mert_dirs, small_fixture_yaml, tmp_path):
    data_dir = tmp_path / "audio"
    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    broken, empty = dataset.split("train")[1], dataset.split("test")[2]
    (data_dir / broken.path).write_bytes(b"not audio" * 50)
    (data_dir / empty.path).write_bytes(b"")
    model_dir = tiny_mert_dirs["safetensors"]
    settings = ExtractSettings(window_seconds=1.0, storage="fp32", shard_items=5)

    command = [sys.executable, "-m", "marble_eval", "extract", "--model", str(model_dir),
               "--dataset", str(small_fixture_yaml), "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "ddp"),
               "--window-seconds", "1.0", "--storage", "fp32", "--devices", "2", "--strategy", "ddp",
               "--num-workers", "1", "--no-progress"]
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=240)
    assert run.returncode == EXIT_SOME_SKIPPED, run.stderr[-3000:]  # done, 2 items skipped
    assert "24 total, 22 extracted now, 0 already cached, 2 skipped" in run.stdout
    assert run.stdout.count("cache: ") == 1  # only global rank 0 reports

    model = load_model(str(model_dir))
    single = extract_dataset(model, dataset, tmp_path / "single", settings, show_progress=False)
    ddp_cache = open_cache(tmp_path / "ddp", model, dataset, settings)
    single_cache = open_cache(tmp_path / "single", model, dataset, settings)
    assert ddp_cache.directory.name == single_cache.directory.name  # the same key

    assert ddp_cache.failures() == single_cache.failures() == single.failures
    assert set(ddp_cache.failures()) == {broken.id, empty.id}
    assert ddp_cache.done_ids() == single_cache.done_ids()
    assert len(ddp_cache.shard_files()) >= 2  # both ranks wrote shards
    index = json.loads((ddp_cache.directory / "index.json").read_text())["shards"]
    assert sorted(index) == [path.name for path in ddp_cache.shard_files()]
    assert not (ddp_cache.directory / "parts").exists()  # merged and cleaned up

    ids = sorted(ddp_cache.done_ids())
    (ddp_features, ddp_frames), (single_features, single_frames) = ddp_cache.load(ids), single_cache.load(ids)
    for a, b, fa, fb in zip(ddp_features, single_features, ddp_frames, single_frames):
        assert a.shape == b.shape and a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(fa, fb)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)



def test_merge_takes_the_union_of_the_ranks_failures_and_drops_items_cached_since(tmp_path):
    from marble_eval.features.cache import CacheKey, FeatureCache

    key = CacheKey(dataset="d-v1", dataset_identity="0" * 64, model_id="m", model_fingerprint="f" * 64, family="mert", sample_rate=24000,
                   n_hidden_states=2, dim=3, window_seconds=0.0, max_seconds=None, precision="fp32")
    cache = FeatureCache(tmp_path, key).create()
    other_process = FeatureCache(tmp_path, key)  # e.g. rank 1: its shards appear behind rank 0's back
    rank0_failed = {"a": {"path": "a.mp3", "reason": "empty file"}}
    rank1_failed = {"b": {"path": "b.mp3", "reason": "NaN"}, "c": {"path": "c.mp3", "reason": "stale"}}
    assert cache.done_ids() == set()
    other_process.write_shard({"c": (np.ones((1, 2, 3), np.float32), np.array([5]))})
    cache.write_part("rank-0", rank0_failed, {"extracted": 0})
    other_process.write_part("rank-1", rank1_failed, {"extracted": 1})
    failures, stats = cache.merge_parts()
    assert failures == cache.failures() == {**rank0_failed, "b": rank1_failed["b"]}
    assert sorted(part["extracted"] for part in stats) == [0, 1]
    assert cache.done_ids() == {"c"} and not (cache.directory / "parts").exists()
