"""The probe stage's feature loading: each split read once, straight into one preallocated array."""

from __future__ import annotations

import tracemalloc
import zipfile

import numpy as np
import pytest

from marble_eval.errors import MarbleEvalError
from marble_eval.features.cache import CacheKey, FeatureCache, npz_member_memmap

L, D = 4, 64


def make_cache(tmp_path, n_items: int = 60, shard_items: int = 16) -> tuple[FeatureCache, dict[str, np.ndarray]]:
    key = CacheKey(dataset="d-v1", dataset_identity="0" * 64, model_id="m", model_fingerprint="f" * 64, family="mert",
                   sample_rate=24000, n_hidden_states=L, dim=D, window_seconds=30.0, max_seconds=None,
                   precision="fp32")
    cache = FeatureCache(tmp_path, key).create()
    rng = np.random.default_rng(0)
    items = {f"item{i:03d}": rng.standard_normal((1 + i % 4, L, D)).astype(np.float32) for i in range(n_items)}
    names = list(items)
    for start in range(0, n_items, shard_items):
        cache.write_shard({name: (items[name], np.arange(len(items[name])) + 7) for name in names[start:start + shard_items]})
    return cache, {name: features.astype(np.float16) for name, features in items.items()}


def test_load_windows_equals_the_items_in_order_in_one_array(tmp_path) -> None:
    cache, items = make_cache(tmp_path)
    wanted = list(np.random.default_rng(1).permutation(sorted(items))[:37])
    features, item_of_window = cache.load_windows(wanted)
    assert features.dtype == np.float16 and features.flags.c_contiguous and not isinstance(features, np.memmap)
    np.testing.assert_array_equal(features, np.concatenate([items[name] for name in wanted]))
    np.testing.assert_array_equal(item_of_window, np.repeat(np.arange(37), [len(items[n]) for n in wanted]))
    per_item, frames = cache.load(wanted)
    for name, got, got_frames in zip(wanted, per_item, frames):
        np.testing.assert_array_equal(got, items[name])
        np.testing.assert_array_equal(got_frames, np.arange(len(items[name])) + 7)
    with pytest.raises(MarbleEvalError, match="1 item\\(s\\) not extracted"):
        cache.load_windows(wanted + ["nope"])


def test_peak_memory_is_the_result_not_twice_the_cache(tmp_path) -> None:
    cache, items = make_cache(tmp_path, n_items=200)
    wanted = sorted(items)
    result_bytes = sum(features.nbytes for features in items.values())
    tracemalloc.start()
    try:
        features, _ = cache.load_windows(wanted)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert features.nbytes == result_bytes
    assert peak < 1.2 * result_bytes + 256 * 1024, (peak, result_bytes)  # (reading and concatenating: ~2x)


def test_shards_are_memory_mapped_and_compressed_ones_still_read(tmp_path) -> None:
    cache, items = make_cache(tmp_path, n_items=8, shard_items=8)
    shard = cache.shard_files()[0]
    mapped = npz_member_memmap(shard, "features")
    assert isinstance(mapped, np.memmap)
    with np.load(shard) as data:
        np.testing.assert_array_equal(mapped, data["features"])
        arrays = {name: data[name] for name in data.files}
    compressed = shard.with_name("shard-99999999999999999999-compressed.npz")
    shard.unlink()
    np.savez_compressed(compressed, **arrays)
    with zipfile.ZipFile(compressed) as archive:
        assert archive.getinfo("features.npy").compress_type != zipfile.ZIP_STORED
    assert npz_member_memmap(compressed, "features") is None
    features, _ = cache.reindex() and cache.load_windows(sorted(items))
    np.testing.assert_array_equal(features, np.concatenate([items[name] for name in sorted(items)]))
