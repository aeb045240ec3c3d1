"""Extraction and cache: shapes, resume after a crash, keys never mixed, bad audio skipped, embed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from marble_eval.cli import main
from marble_eval.datasets.registry import load_dataset
from marble_eval.devices import check_device
from marble_eval.errors import EXIT_NOTHING_EXTRACTED, EXIT_SOME_SKIPPED, MarbleEvalError
from marble_eval.features.cache import FeatureCache, locate_cache
from marble_eval.features.extract import (
    ExtractSettings,
    embed_files,
    embed_paths,
    extract_dataset,
    open_cache,
    validate_settings,
)
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
    from marble_eval.audio.decode import load_audio, split_windows
    wave = load_audio(path, 24000)
    states, frames = model.embed_windows(split_windows(wave, 24000, 1.0))
    expected = (states * frames[:, None, None]).sum(0) / frames.sum()
    np.testing.assert_allclose(windowed[0], expected, rtol=1e-5, atol=1e-6)


def test_cli_embed_and_extract(tmp_path, dataset, tiny_mert_dirs):
    model_dir = str(tiny_mert_dirs["bin"])
    files = [str(dataset.audio_path(item)) for item in dataset.items[:3]]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio" * 50)
    out = tmp_path / "emb.features"  # --output names exactly the file written, whatever its suffix
    embed = subprocess.run([sys.executable, "-m", "marble_eval", "embed", "--model", model_dir, *files, str(bad),
                            "--output", str(out), "--no-progress"], capture_output=True, text=True, cwd=REPO,
                           timeout=300)
    assert embed.returncode == EXIT_SOME_SKIPPED, embed.stderr
    assert f"skipped {bad}: " in embed.stderr and "1 skipped" in embed.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav", "emb.features"]
    with np.load(out, allow_pickle=False) as npz:
        assert npz["features"].shape == (3, 5, 32) and npz["features"].dtype == np.float32
        assert npz["paths"].tolist() == files and npz["ids"].tolist() == [Path(f).stem for f in files]
    bad_run = subprocess.run([sys.executable, "-m", "marble_eval", "extract", "--model", model_dir, "--dataset",
                              "no-such-dataset"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad_run.returncode == 2 and "unknown dataset 'no-such-dataset'" in bad_run.stderr
    assert len(bad_run.stderr.strip().splitlines()) == 1


class _WindowSizes:
    """Counts the longest window handed to the model (zeros as features: only shapes matter here)."""

    def __init__(self, info) -> None:
        self.info, self.longest, self.calls = info, 0, 0

    def embed_windows(self, windows, batch_size=8):
        self.calls += 1
        self.longest = max([self.longest, *(len(w) for w in windows)])
        return (np.zeros((len(windows), self.info.n_hidden_states, self.info.dim), np.float32),
                np.ones(len(windows), np.int64))


def test_embed_holds_one_30_s_window_of_a_10_minute_file(model, tmp_path):
    import soundfile as sf

    path = tmp_path / "ten-minutes.wav"
    sf.write(path, np.zeros(600 * 8000, np.int16), 8000, subtype="PCM_16")  # 10 min at 8 kHz: 9.6 MB on disk
    counter = _WindowSizes(model.info)
    result = embed_paths(counter, [path], batch_size=1)
    assert counter.longest == 30 * model.info.sample_rate and counter.calls == 20  # 20 windows of 30 s
    assert result.features.shape == (1, 5, 32) and result.paths == [str(path)]


def test_embed_skips_and_reports_bad_files(model, dataset, tmp_path):
    good = dataset.audio_path(dataset.items[0])
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    result = embed_paths(model, [empty, good, tmp_path / "missing.mp3"])
    assert result.paths == [str(good)] and result.features.shape == (1, 5, 32)
    assert "empty file" in result.failures[str(empty)] and "file not found" in result.failures[str(tmp_path / "missing.mp3")]
    np.testing.assert_allclose(result.features[0], embed_files(model, [good], window_seconds=30.0)[0])


@pytest.mark.parametrize("flag,value,message", [
    ("--batch-size", "0", "--batch-size 0: must be 1 or more"),
    ("--window-seconds", "-1", "--window-seconds -1.0: must be 0"),
    ("--window-seconds", "nan", "--window-seconds nan: must be 0"),
    ("--max-seconds", "0", "--max-seconds 0.0: must be a finite number of seconds above 0"),
    ("--checkpoint-seconds", "0", "--checkpoint-seconds 0.0: must be"),
    ("--num-workers", "-2", "--num-workers -2: must be 0"),
    ("--device", "gpu", "--device gpu: not a device"),
    ("--device", "garbage:7", "--device garbage:7: not a device"),
])
def test_bad_numbers_and_devices_are_one_line_before_anything_loads(flag, value, message, tmp_path, capsys):
    # the model path does not exist: an error about it would mean the model was loaded first
    code = main(["extract", "--model", str(tmp_path / "no-model"), "--dataset", "no-such-dataset", flag, value])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3", "mps"])
def test_a_device_this_machine_lacks_is_one_line(device, monkeypatch, tmp_path, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # public probes: as on a CPU-only machine
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    code = main(["extract", "--model", str(tmp_path / "no-model"), "--dataset", "no-such-dataset", "--device", device])
    err = capsys.readouterr().err
    assert code == 2 and f"--device {device}: " in err and "not available" in err and len(err.splitlines()) == 1


def test_validate_device_names_the_gpus_there_are(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(MarbleEvalError, match="has 2 CUDA GPU"):
        check_device("cuda:2")
    with pytest.raises(MarbleEvalError, match="--batch-size 0"):
        validate_settings(ExtractSettings(batch_size=0), "cpu")


def test_extract_exit_codes(model, small_fixture_yaml, tiny_mert_dirs, tmp_path, capsys):
    data_dir = tmp_path / "audio"
    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    argv = ["extract", "--model", str(tiny_mert_dirs["safetensors"]), "--dataset", str(small_fixture_yaml),
            "--data-dir", str(data_dir), "--no-progress"]
    (data_dir / dataset.items[0].path).write_bytes(b"garbage" * 100)
    assert main([*argv, "--cache-dir", str(tmp_path / "some"), "--max-seconds", "0.5"]) == EXIT_SOME_SKIPPED
    for item in dataset.items:
        (data_dir / item.path).write_bytes(b"")
    assert main([*argv, "--cache-dir", str(tmp_path / "none")]) == EXIT_NOTHING_EXTRACTED
    assert "24 skipped" in capsys.readouterr().out


def test_the_probe_stage_finds_its_cache_without_the_model(model, dataset, tmp_path):
    from marble_eval.models.hub import fingerprint
    from marble_eval.models.registry import resolve

    settings = ExtractSettings(window_seconds=1.0)
    extract_dataset(model, dataset, tmp_path, settings, show_progress=False)
    extract_dataset(model, dataset, tmp_path, ExtractSettings(window_seconds=2.0), show_progress=False)
    print_ = fingerprint(resolve(model.info.model_id))
    assert print_ == model.info.fingerprint  # computed from the files: no weights loaded
    found = locate_cache(tmp_path, dataset, print_, settings)
    assert found.directory == open_cache(tmp_path, model, dataset, settings).directory
    with pytest.raises(MarbleEvalError, match="2 caches match") as error:
        locate_cache(tmp_path, dataset, print_, ExtractSettings())  # window left open: both match
    assert "\n" not in str(error.value)
    with pytest.raises(MarbleEvalError, match="no feature cache"):
        locate_cache(tmp_path, dataset, print_, ExtractSettings(window_seconds=1.0, precision="bf16"))
    with pytest.raises(MarbleEvalError, match="no feature cache"):
        locate_cache(tmp_path, dataset, "0" * 64, settings)


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
