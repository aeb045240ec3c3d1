"""Extraction and cache: shapes, resume after a crash, keys never mixed, bad audio skipped, embed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from marble_eval.features.cache import FeatureCache
from marble_eval.datasets.registry import load_dataset
from marble_eval.errors import MarbleEvalError
from marble_eval.features.extract import ExtractSettings, embed_files, extract_dataset, open_cache
from marble_eval.models import load_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tiny_mert_dirs):
    return load_model(str(tiny_mert_dirs["safetensors"]))


@pytest.fixture()
def dataset(small_fixture_yaml, tmp_path_factory):
    return load_dataset(str(small_fixture_yaml), data_dir=tmp_path_factory.getbasetemp() / "tiny-fixture-audio")


def _all_features(cache: FeatureCache, ids: list[str]) -> list[np.ndarray]:
    return cache.load(ids)[0]


def test_extract_writes_one_vector_per_window_and_hidden_state(model, dataset, tmp_path):
    summary = extract_dataset(model, dataset, tmp_path, ExtractSettings(window_seconds=1.0), show_progress=False)
    assert summary.extracted == len(dataset.items) == 24 and not summary.failures
    cache = open_cache(tmp_path, model, dataset, ExtractSettings(window_seconds=1.0))
    features, frames = cache.load([item.id for item in dataset.items])
    # 2.5 s clips in 1 s windows: two full windows, the 0.5 s tail dropped.
    assert all(f.shape == (2, 5, 32) and f.dtype == np.float16 for f in features)
    assert all(fr.tolist() == [74, 74] for fr in frames)
    key = json.loads((cache.directory / "key.json").read_text())
    assert key["window_seconds"] == 1.0 and key["model_fingerprint"] == model.info.fingerprint


def test_rerun_skips_finished_items(model, dataset, tmp_path):
    settings = ExtractSettings(shard_items=5)
    extract_dataset(model, dataset, tmp_path, settings, show_progress=False)
    again = extract_dataset(model, dataset, tmp_path, settings, show_progress=False)
    assert again.extracted == 0 and again.already_cached == 24


class _CrashAfter:
    """Wraps a model so that its forward pass fails after ``limit`` calls (a simulated kill)."""

    def __init__(self, inner, limit: int) -> None:
        self.inner, self.limit, self.calls = inner, limit, 0
        self.info = inner.info

    def embed_windows(self, windows, batch_size=8):
        self.calls += 1
        if self.calls > self.limit:
            raise KeyboardInterrupt("simulated crash")
        return self.inner.embed_windows(windows, batch_size)


@pytest.mark.parametrize("batch_size", [1, 8])
def test_resume_after_a_crash_gives_the_same_cache(model, dataset, tmp_path, batch_size):
    # batch_size 1 embeds every window alone: bit-identical. The default batches windows across
    # files, and a resumed run groups them differently: equal within one fp16 step (docs/reliability.md).
    settings = ExtractSettings(shard_items=4, batch_size=batch_size)
    extract_dataset(model, dataset, tmp_path / "clean", settings, show_progress=False)
    with pytest.raises(KeyboardInterrupt):
        extract_dataset(_CrashAfter(model, 10), dataset, tmp_path / "crashed", settings, show_progress=False)
    crashed = open_cache(tmp_path / "crashed", model, dataset, settings)
    # the 10 items finished before the crash: two full shards, and the buffer written on the way out
    assert len(crashed.done_ids()) == 10
    assert not list(crashed.shard_dir.glob(".*tmp"))
    resumed = extract_dataset(model, dataset, tmp_path / "crashed", settings, show_progress=False)
    assert resumed.extracted == 14 and resumed.already_cached == 10
    ids = [item.id for item in dataset.items]
    clean = open_cache(tmp_path / "clean", model, dataset, settings)
    for a, b in zip(_all_features(clean, ids), _all_features(crashed, ids)):
        if batch_size == 1:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=2 ** -10, atol=2 ** -24)


def test_other_settings_never_mix_into_a_cache(model, dataset, tmp_path, tiny_mert_dirs):
    fp16 = open_cache(tmp_path, model, dataset, ExtractSettings())
    fp32 = open_cache(tmp_path, model, dataset, ExtractSettings(storage="fp32"))
    windowed = open_cache(tmp_path, model, dataset, ExtractSettings(window_seconds=1.0))
    other = open_cache(tmp_path, load_model(str(tiny_mert_dirs["pre_ln"])), dataset, ExtractSettings())
    assert len({c.directory for c in (fp16, fp32, windowed, other)}) == 4
    # A folder whose key.json records other settings is refused, naming what differs.
    fp16.create()
    key = json.loads((fp16.directory / "key.json").read_text())
    key["model_fingerprint"] = "0" * 64
    (fp16.directory / "key.json").write_text(json.dumps(key))
    with pytest.raises(MarbleEvalError, match="model_fingerprint"):
        extract_dataset(model, dataset, tmp_path, ExtractSettings(), show_progress=False)


def test_corrupt_audio_is_reported_skipped_and_listed(model, small_fixture_yaml, tmp_path):
    data_dir = tmp_path / "audio"
    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    broken = dataset.split("train")[0]
    (data_dir / broken.path).write_bytes(b"garbage" * 100)
    empty = dataset.split("test")[0]
    (data_dir / empty.path).write_bytes(b"")
    summary = extract_dataset(model, dataset, tmp_path / "cache", ExtractSettings(), show_progress=False)
    assert set(summary.failures) == {broken.id, empty.id}
    assert "empty file" in summary.failures[empty.id]["reason"]
    assert summary.extracted == 22
    failures = json.loads((summary.cache_dir / "failures.json").read_text())
    assert failures[broken.id]["path"] == broken.path
    assert any(broken.id in line for line in summary.lines())


def test_embed_weights_windows_by_frames(model, dataset):
    path = dataset.audio_path(dataset.items[0])
    whole = embed_files(model, [path], window_seconds=0.0)
    windowed = embed_files(model, [path], window_seconds=1.0)
    assert whole.shape == windowed.shape == (1, 5, 32)
    from marble_eval.features.audio import load_audio, split_windows
    wave = load_audio(path, 24000)
    states, frames = model.embed_windows(split_windows(wave, 24000, 1.0))
    expected = (states * frames[:, None, None]).sum(0) / frames.sum()
    np.testing.assert_allclose(windowed[0], expected, rtol=1e-5, atol=1e-6)


def test_cli_embed_and_extract(tmp_path, dataset, tiny_mert_dirs):
    model_dir = str(tiny_mert_dirs["bin"])
    files = [str(dataset.audio_path(item)) for item in dataset.items[:3]]
    out = tmp_path / "emb.npy"
    embed = subprocess.run([sys.executable, "-m", "marble_eval", "embed", "--model", model_dir, *files,
                            "--output", str(out)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert embed.returncode == 0, embed.stderr
    assert np.load(out).shape == (3, 5, 32) and np.load(out).dtype == np.float32
    bad = subprocess.run([sys.executable, "-m", "marble_eval", "extract", "--model", model_dir, "--dataset",
                          "no-such-dataset"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and "unknown dataset 'no-such-dataset'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_fixture_generation_does_not_depend_on_the_hash_seed(tmp_path, small_fixture_yaml):
    script = ("import sys; from marble_eval.datasets.registry import load_dataset; "
              "d = load_dataset(sys.argv[1], data_dir=sys.argv[2]); "
              "print((d.data_dir / 'manifest.csv').read_text())")
    manifests = []
    for hash_seed in ("1", "2"):
        run = subprocess.run([sys.executable, "-c", script, str(small_fixture_yaml), str(tmp_path / hash_seed)],
                             capture_output=True, text=True, cwd=REPO, timeout=300,
                             env={**__import__("os").environ, "PYTHONHASHSEED": hash_seed})
        assert run.returncode == 0, run.stderr
        manifests.append(run.stdout)
    assert manifests[0] == manifests[1]
    import soundfile as sf

    first, second = (sorted((tmp_path / s).glob("*/*.*")) for s in ("1", "2"))
    assert [p.name for p in first] == [p.name for p in second] and first
    for a, b in zip(first, second):  # decoded samples: Ogg streams carry a random serial number
        np.testing.assert_array_equal(sf.read(a)[0], sf.read(b)[0])
