"""Fault injection: kill -9 mid-extraction, two writers on one cache, bad audio, foreign caches, disk full.

The kill test runs a driver (this file as a script) that imports torch once and forks one child per
extraction attempt; each child is SIGKILLed at a seeded random point (a shard or JSON write, or a
random moment), then a child without a kill finishes the run. Windows are embedded one per forward
pass (batch_size=1) so features do not depend on which items happened to share a batch: the final
cache must then equal an uninterrupted run's bit for bit.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
KILL_TRIALS = 24


# --------------------------------------------------------------------------------------------------
# Driver (runs in its own process: python tests/test_faults.py DRIVER_ARGS_JSON)
# --------------------------------------------------------------------------------------------------
def _arm_point_kill(kill_at: int) -> None:
    """SIGKILL this process at the ``kill_at``-th write event of the cache (1-based): shards and JSON files."""
    import marble_eval.features.cache as cache_module
    import marble_eval.files as files_module

    counter = {"n": 0}

    def event() -> None:
        counter["n"] += 1
        if counter["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    real_fsync, real_replace = os.fsync, os.replace

    class _Os:  # the cache module's view of os: every fsync (temp file complete) and replace is a kill point
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def fsync(fd):
            event()
            real_fsync(fd)
            event()

        @staticmethod
        def replace(src, dst):
            event()
            real_replace(src, dst)
            event()

    cache_module.os = files_module.os = _Os()


def _arm_timer_kill(delay: float) -> None:
    def kill() -> None:
        time.sleep(delay)  # the kill moment itself (random); no assertion counts on where it lands
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=kill, daemon=True).start()


def _run_child(model, dataset, root: Path, settings, kill: tuple[str, float] | None) -> int:
    """Fork; the child extracts (armed to die if ``kill``); returns the child's wait status."""
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            import torch

            torch.set_num_threads(1)
            from marble_eval.features.extract import extract_dataset

            if kill and kill[0] == "point":
                _arm_point_kill(int(kill[1]))
            elif kill:
                _arm_timer_kill(kill[1])
            extract_dataset(model, dataset, root, settings, show_progress=False)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def _driver(args: dict) -> None:
    from marble_eval.datasets.registry import load_dataset
    from marble_eval.features.extract import ExtractSettings
    from marble_eval.models import load_model

    model = load_model(args["model"])
    dataset = load_dataset(args["dataset"], data_dir=Path(args["data_dir"]))
    settings = ExtractSettings(batch_size=1, shard_items=3, num_workers=0)
    base = Path(args["out"])
    rng = random.Random(args["seed"])
    status = _run_child(model, dataset, base / "reference", settings, None)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    started = time.perf_counter()
    _run_child(model, dataset, base / "timing", settings, None)
    full_seconds = time.perf_counter() - started
    # write events of a full run: per shard 2 fsync + 2 replace events, plus index/key/failures JSONs
    n_events = 4 * (len(dataset.items) // settings.shard_items + 4)
    report = []
    for trial in range(args["trials"]):
        root = base / f"trial{trial:02d}"
        kills = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            kill = ("point", rng.randint(1, n_events)) if rng.random() < 0.6 \
                else ("timer", rng.uniform(0.0, full_seconds))
            status = _run_child(model, dataset, root, settings, kill)
            kills.append({"kill": kill, "killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL})
        status = _run_child(model, dataset, root, settings, None)
        report.append({"root": str(root), "kills": kills, "final_ok": os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0})
    (base / "report.json").write_text(json.dumps({"reference": str(base / "reference"), "trials": report}))


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------
from marble_eval.datasets.registry import load_dataset  # noqa: E402
from marble_eval.errors import EXIT_SOME_SKIPPED, MarbleEvalError  # noqa: E402
from marble_eval.features.cache import FeatureCache  # noqa: E402
from marble_eval.features.extract import ExtractSettings, extract_dataset, open_cache  # noqa: E402
from marble_eval.models import load_model  # noqa: E402


@pytest.fixture(scope="module")
def model(tiny_mert_dirs):
    return load_model(str(tiny_mert_dirs["safetensors"]))


@pytest.fixture(scope="module")
def data_dir(small_fixture_yaml, tmp_path_factory) -> Path:
    """A private copy of the 24-clip fixture audio with one corrupt file (failures must survive kills too)."""
    directory = tmp_path_factory.mktemp("faults-audio")
    dataset = load_dataset(str(small_fixture_yaml), data_dir=directory)
    (directory / dataset.split("valid")[1].path).write_bytes(b"not audio at all" * 64)
    return directory


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread, as in the forked and CLI runs compared with in-process ones (reduction order
    follows the thread count, so bitwise comparisons need the same count)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ONE_BY_ONE = ExtractSettings(batch_size=1, num_workers=0)  # one window per forward: bitwise-reproducible


@pytest.fixture(scope="module")
def reference(model, small_fixture_yaml, data_dir, tmp_path_factory) -> FeatureCache:
    """An uninterrupted single-process extraction of the faults dataset, one window per forward pass."""
    root = tmp_path_factory.mktemp("faults-reference")
    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    extract_dataset(model, dataset, root, ONE_BY_ONE, show_progress=False)
    return open_cache(root, model, dataset, ONE_BY_ONE)


def _only_cache_dir(root: Path) -> FeatureCache:
    folders = [p for p in root.glob("*/*") if (p / "key.json").exists()]
    assert len(folders) == 1, folders
    key = json.loads((folders[0] / "key.json").read_text())
    from marble_eval.features.cache import CacheKey

    cache = FeatureCache(root, CacheKey(**key))
    assert cache.directory == folders[0]
    return cache


def _assert_same_cache(reference: FeatureCache, other: FeatureCache, exact: bool = True) -> None:
    """Same ids, same failures, same frames; features equal (exactly, or within one fp16 rounding step)."""
    ids = sorted(reference.done_ids())
    assert sorted(other.done_ids()) == ids
    assert other.failures() == reference.failures()
    ref_features, ref_frames = reference.load(ids)
    features, frames = other.load(ids)
    for item_id, a, b, fa, fb in zip(ids, ref_features, features, ref_frames, frames):
        np.testing.assert_array_equal(fa, fb, err_msg=item_id)
        assert a.shape == b.shape and a.dtype == b.dtype
        if exact:
            np.testing.assert_array_equal(a, b, err_msg=item_id)
        else:  # a resumed run batches windows differently; batched matmuls round in the last float32 bit
            np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=2 ** -10, atol=1e-6,
                                       err_msg=item_id)
    leftovers = [p.name for p in other.directory.rglob("*.tmp")]
    assert not leftovers, leftovers
    index = json.loads((other.directory / "index.json").read_text())["shards"]
    assert sorted(index) == [p.name for p in other.shard_files()]


def test_kill_9_at_random_points_then_rerun_gives_the_uninterrupted_cache(
        tiny_mert_dirs, small_fixture_yaml, data_dir, tmp_path):
    args = {"model": str(tiny_mert_dirs["safetensors"]), "dataset": str(small_fixture_yaml),
            "data_dir": str(data_dir), "out": str(tmp_path), "seed": 20261122, "trials": KILL_TRIALS}
    run = subprocess.run([sys.executable, __file__, json.dumps(args)], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    reference = _only_cache_dir(Path(report["reference"]))
    assert len(reference.done_ids()) == 23 and len(reference.failures()) == 1
    # Point kills land on the n-th write event of the run, which does not depend on machine speed; timer kills
    # (at a random moment) may come after a fast run has finished, so only point kills are counted.
    points = [kill for trial in report["trials"] for kill in trial["kills"] if kill["kill"][0] == "point"]
    killed = [kill for kill in points if kill["killed"]]
    assert len(report["trials"]) >= 20 and len(killed) >= 12  # kills really happened, at many points
    assert len({kill["kill"][1] for kill in killed}) >= 8
    for trial in report["trials"]:
        assert trial["final_ok"], trial
        _assert_same_cache(reference, _only_cache_dir(Path(trial["root"])))


def test_two_extractions_at_once_give_one_runs_cache(tiny_mert_dirs, small_fixture_yaml, data_dir, reference,
                                                     tmp_path):
    """Two processes extract the same model and dataset into one cache at the same time."""
    command = [sys.executable, "-m", "marble_eval", "extract", "--model", str(tiny_mert_dirs["safetensors"]),
               "--dataset", str(small_fixture_yaml), "--data-dir", str(data_dir), "--no-progress",
               "--batch-size", "1", "--num-workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    both = [subprocess.Popen([*command, "--cache-dir", str(tmp_path / "shared")], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in both]
    # 4: done, the one corrupt file skipped
    assert [process.returncode for process in both] == [EXIT_SOME_SKIPPED] * 2, [err[-2000:] for _, err in outputs]
    shared = _only_cache_dir(tmp_path / "shared")
    _assert_same_cache(reference, shared)
    # every id is readable from exactly one shard (copies written by both runs are identical and ignored)
    assert len(shared.index()) == 23


# -- bad audio ---------------------------------------------------------------------------------------
def _tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.repeat(wave[:, None], channels, axis=1) if channels > 1 else wave


def _unknown_codec_wav(path: Path) -> None:
    """A RIFF/WAVE file whose fmt chunk names a codec libsndfile does not decode."""
    data = b"\x00\x01" * 4000
    fmt = struct.pack("<HHIIHH", 0x1234, 1, 22050, 44100, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


# name -> (writer, expected: "processed" or a substring of the reported reason)
def _bad_audio_cases(directory: Path) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    sf.write(directory / "good.mp3", _tone(3.0, 22050), 22050, subtype="MPEG_LAYER_III")
    mp3 = (directory / "good.mp3").read_bytes()
    cases = {}
    (directory / "zero.wav").write_bytes(b"")
    cases["zero.wav"] = "empty file (0 bytes)"
    (directory / "truncated-half.mp3").write_bytes(mp3[:len(mp3) // 2])
    cases["truncated-half.mp3"] = "truncated (decoded"
    (directory / "truncated-header.mp3").write_bytes(mp3[:300])
    cases["truncated-header.mp3"] = "not a decodable audio file"
    (directory / "text.wav").write_text("this is not audio\n" * 50)
    cases["text.wav"] = "Format not recognised"
    sf.write(directory / "wav-named.mp3", _tone(2.0, 16000), 16000, format="WAV")
    cases["wav-named.mp3"] = "processed"          # the content decides, not the extension
    nan = _tone(2.0, 16000)
    nan[1234] = np.nan
    sf.write(directory / "nan.wav", nan, 16000, subtype="FLOAT")
    cases["nan.wav"] = "NaN or Inf samples"
    inf = _tone(2.0, 16000)
    inf[-5] = np.inf
    sf.write(directory / "inf.wav", inf, 16000, subtype="FLOAT")
    cases["inf.wav"] = "NaN or Inf samples"
    sf.write(directory / "silence.wav", np.zeros(32000, np.float32), 16000)
    cases["silence.wav"] = "processed"            # normalises to 0/sqrt(eps) = 0: finite features
    sf.write(directory / "50ms.wav", _tone(0.05, 24000), 24000)
    cases["50ms.wav"] = "processed"               # 1200 samples >= MERT's 400-sample receptive field
    sf.write(directory / "10ms.wav", _tone(0.01, 24000), 24000)
    cases["10ms.wav"] = "too short (10.0 ms; the model needs at least 400 samples"
    sf.write(directory / "8ch.wav", _tone(2.0, 16000, channels=8), 16000)
    cases["8ch.wav"] = "processed"                # downmixed to mono
    sf.write(directory / "192k.flac", _tone(2.0, 192000), 192000)
    cases["192k.flac"] = "processed"              # resampled to 24 kHz
    _unknown_codec_wav(directory / "codec.wav")
    cases["codec.wav"] = "unreadable audio"
    (directory / "aac.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom" + b"\x00" * 4000)
    cases["aac.m4a"] = "Format not recognised"
    return cases


def test_every_kind_of_bad_audio_is_reported_and_the_rest_processed(model, tmp_path):
    data = tmp_path / "audio"
    cases = _bad_audio_cases(data)
    cases["good.mp3"] = "processed"
    cases["missing.wav"] = "file not found"
    names = sorted(cases)
    manifest = tmp_path / "bad.csv"
    manifest.write_text("id,split,path,labels\n" + "".join(
        f"{name},{('train', 'valid', 'test')[i % 3]},{name},a\n" for i, name in enumerate(names)))
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad-audio\nversion: '1'\ntask: multilabel\nsource: manifest\n"
                    "vocabulary: {rule: fixed, tags: [a]}\noptions: {manifest: bad.csv}\n")
    dataset = load_dataset(str(spec), data_dir=data)
    summary = extract_dataset(model, dataset, tmp_path / "cache", ExtractSettings(window_seconds=1.0),
                              show_progress=False)
    processed = sorted(name for name, expected in cases.items() if expected == "processed")
    reported = {name: expected for name, expected in cases.items() if expected != "processed"}
    assert sorted(summary.failures) == sorted(reported)
    for name, expected in reported.items():
        reason = summary.failures[name]["reason"]
        assert expected in reason and "\n" not in reason, (name, reason)
    cache = open_cache(tmp_path / "cache", model, dataset, ExtractSettings(window_seconds=1.0))
    assert sorted(cache.done_ids()) == processed and summary.extracted == len(processed)
    features, frames = cache.load(processed)
    assert all(np.isfinite(f.astype(np.float32)).all() and (fr > 0).all() for f, fr in zip(features, frames))
    assert json.loads((cache.directory / "failures.json").read_text()).keys() == reported.keys()


def test_nan_features_from_the_model_are_reported_not_cached(model, small_fixture_yaml, data_dir, tmp_path):
    class PoisonFirst:  # returns NaN for the first file it sees (one call per file for non-encoders)
        def __init__(self, inner) -> None:
            self.inner, self.info, self.calls = inner, inner.info, 0

        def embed_windows(self, windows, batch_size=8):
            states, frames = self.inner.embed_windows(windows, batch_size)
            self.calls += 1
            return (states * np.nan if self.calls == 1 else states), frames

    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    summary = extract_dataset(PoisonFirst(model), dataset, tmp_path, ExtractSettings(num_workers=0),
                              show_progress=False)
    poisoned = dataset.items[0].id
    assert "NaN or Inf features" in summary.failures[poisoned]["reason"] and summary.extracted == 22


# -- caches from other settings --------------------------------------------------------------------
_BASE: dict[str, Path] = {}


def _base_extraction(model, dataset, settings, tmp_path_factory) -> Path:
    """One finished cache folder (extracted once per module), to be copied."""
    if "folder" not in _BASE:
        root = tmp_path_factory.mktemp("base-extraction")
        extract_dataset(model, dataset, root, settings, show_progress=False)
        _BASE["folder"] = open_cache(root, model, dataset, settings).directory
    return _BASE["folder"]


@pytest.mark.parametrize("change", ["model", "window", "precision", "storage", "max_seconds"])
def test_a_cache_of_other_settings_is_refused_never_mixed(change, model, tiny_mert_dirs, small_fixture_yaml,
                                                         data_dir, tmp_path, tmp_path_factory):
    """Copy a finished cache folder to where other settings would look: it is refused by name."""
    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    base = ExtractSettings(window_seconds=1.0, max_seconds=2.0, num_workers=0)
    original = open_cache(tmp_path, model, dataset, base)
    shutil.copytree(_base_extraction(model, dataset, base, tmp_path_factory), original.directory)
    other_model = load_model(str(tiny_mert_dirs["pre_ln"])) if change == "model" else model
    other = {"model": base, "window": ExtractSettings(window_seconds=2.0, max_seconds=2.0),
             "precision": ExtractSettings(window_seconds=1.0, max_seconds=2.0, precision="bf16"),
             "storage": ExtractSettings(window_seconds=1.0, max_seconds=2.0, storage="fp32"),
             "max_seconds": ExtractSettings(window_seconds=1.0, max_seconds=1.5)}[change]
    target = open_cache(tmp_path, other_model, dataset, other)
    assert target.directory != original.directory  # never the same folder to begin with
    target.directory.parent.mkdir(parents=True, exist_ok=True)
    os.rename(original.directory, target.directory)  # a user moved (or renamed) the folder
    field = {"model": "model_fingerprint", "window": "window_seconds", "precision": "precision",
             "storage": "storage", "max_seconds": "max_seconds"}[change]
    with pytest.raises(MarbleEvalError, match=field):
        extract_dataset(other_model, dataset, tmp_path, other, show_progress=False)
    assert not list(target.shard_dir.glob(".*"))  # nothing was written


# -- disk full -------------------------------------------------------------------------------------
def _disk_full_after(limit_bytes: int):
    """An np.savez that writes ``limit_bytes`` of the archive, then fails like a full disk."""
    real = np.savez

    def savez(handle, **arrays):
        import io

        buffer = io.BytesIO()
        real(buffer, **arrays)
        handle.write(buffer.getvalue()[:limit_bytes])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return savez


def test_disk_full_while_writing_a_shard(model, small_fixture_yaml, data_dir, reference, tmp_path, monkeypatch):
    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    settings = ExtractSettings(shard_items=5, num_workers=0, batch_size=1)
    import marble_eval.features.cache as cache_module

    writes = {"n": 0}
    real = np.savez

    def full_on_third(handle, **arrays):
        writes["n"] += 1
        return (_disk_full_after(1000) if writes["n"] == 3 else real)(handle, **arrays)

    monkeypatch.setattr(cache_module.np, "savez", full_on_third)
    with pytest.raises(MarbleEvalError) as error:
        extract_dataset(model, dataset, tmp_path / "full", settings, show_progress=False)
    message = str(error.value)
    assert "No space left on device" in message and "rerun the same command to resume" in message
    assert "\n" not in message
    cache = open_cache(tmp_path / "full", model, dataset, settings)
    assert not [p.name for p in cache.directory.rglob("*.tmp")]  # nothing half-written left behind
    # the two shards written before the disk filled, and the failed one: the run writes its buffer on
    # the way out, and here the space is back by then (only the third write fails)
    assert len(cache.done_ids()) == 15
    monkeypatch.setattr(cache_module.np, "savez", real)
    resumed = extract_dataset(model, dataset, tmp_path / "full", settings, show_progress=False)
    assert resumed.already_cached == 15
    _assert_same_cache(reference, cache)


def test_disk_full_on_the_json_files_is_one_line_and_resumable(model, small_fixture_yaml, data_dir, tmp_path,
                                                               monkeypatch):
    import marble_eval.files as files_module

    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    settings = ExtractSettings(num_workers=0)
    real_open = open

    def full_open(path, mode="r", *args, **kwargs):  # every JSON temp file write fails
        if "w" in mode and ".json." in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files_module, "open", full_open, raising=False)
    with pytest.raises(MarbleEvalError, match=r"key\.json: cannot write \(No space left on device\)"):
        extract_dataset(model, dataset, tmp_path, settings, show_progress=False)
    monkeypatch.setattr(files_module, "open", real_open, raising=False)
    summary = extract_dataset(model, dataset, tmp_path, settings, show_progress=False)
    assert summary.extracted == 23 and not list(Path(tmp_path).rglob("*.tmp"))


def test_cli_reports_disk_full_in_one_line(tiny_mert_dirs, small_fixture_yaml, data_dir, tmp_path, monkeypatch,
                                           capsys):
    import marble_eval.features.cache as cache_module
    from marble_eval.cli import main

    monkeypatch.setattr(cache_module.np, "savez", _disk_full_after(10))
    code = main(["extract", "--model", str(tiny_mert_dirs["safetensors"]), "--dataset", str(small_fixture_yaml),
                 "--data-dir", str(data_dir), "--cache-dir", str(tmp_path), "--no-progress", "--num-workers", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "No space left on device" in err, err


# -- corrupt cache files ---------------------------------------------------------------------------
def test_corrupt_or_pickled_shard_is_a_one_line_error(model, small_fixture_yaml, data_dir, tmp_path):
    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    settings = ExtractSettings(num_workers=0, shard_items=30)
    extract_dataset(model, dataset, tmp_path, settings, show_progress=False)
    cache = open_cache(tmp_path, model, dataset, settings)
    (cache.shard_dir / "shard-0-garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(MarbleEvalError, match="shard-0-garbage.npz: corrupt or foreign cache shard"):
        open_cache(tmp_path, model, dataset, settings).done_ids()
    (cache.shard_dir / "shard-0-garbage.npz").unlink()
    marker = tmp_path / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with open(cache.shard_dir / "shard-0-pickle.npz", "wb") as handle:
        np.savez(handle, ids=np.array([Payload()], dtype=object), features=np.zeros((1, 5, 32)),
                 frames=np.zeros(1, np.int64), offsets=np.array([0, 1]))
    with pytest.raises(MarbleEvalError, match="shard-0-pickle.npz: corrupt or foreign"):
        open_cache(tmp_path, model, dataset, settings).done_ids()
    assert not marker.exists()
    (cache.shard_dir / "shard-0-pickle.npz").unlink()
    (cache.directory / "failures.json").write_text("{ half")
    with pytest.raises(MarbleEvalError, match="failures.json: unreadable"):
        cache.failures()


def test_stale_temporaries_of_dead_processes_are_swept_live_ones_kept(model, small_fixture_yaml, data_dir,
                                                                     tmp_path):
    from marble_eval.files import temporary_path

    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    cache = open_cache(tmp_path, model, dataset, ExtractSettings()).create()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = temporary_path(cache.shard_dir / "shard-x.npz").name.replace(f".{os.getpid()}.", f".{dead.pid}.")
    (cache.shard_dir / stale).write_bytes(b"half")
    live = temporary_path(cache.shard_dir / "shard-y.npz")  # this (live) process's
    live.write_bytes(b"in progress")
    open_cache(tmp_path, model, dataset, ExtractSettings()).create()
    assert not (cache.shard_dir / stale).exists() and live.exists()


if __name__ == "__main__":
    _driver(json.loads(sys.argv[1]))


# --------------------------------------------------------------------------------------------------
# Checkpoints and signals: what finished is on disk, whatever stops the run
# --------------------------------------------------------------------------------------------------
class _SignalAt:
    """A model that sends this process ``signum`` during its ``at``-th forward pass (one call per file)."""

    def __init__(self, inner, signum: int, at: int) -> None:
        self.inner, self.signum, self.at, self.calls = inner, signum, at, 0
        self.info = inner.info

    def embed_windows(self, windows, batch_size=8):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)  # the handler runs in this (main) thread right here
        return self.inner.embed_windows(windows, batch_size)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_write_what_finished_then_stop(signum, model, small_fixture_yaml, data_dir, tmp_path):
    from marble_eval.features.extract import ExtractionInterrupted

    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    settings = ExtractSettings(batch_size=1, num_workers=0, checkpoint_seconds=3600.0)  # no timer write: only the signal's
    previous = signal.getsignal(signum)
    with pytest.raises(ExtractionInterrupted, match=signal.Signals(signum).name):
        extract_dataset(_SignalAt(model, signum, 8), dataset, tmp_path, settings, show_progress=False)
    assert signal.getsignal(signum) is previous  # handlers restored
    cache = open_cache(tmp_path, model, dataset, settings)
    assert len(cache.done_ids()) == 7  # the 7 files embedded before the signal
    rerun = extract_dataset(model, dataset, tmp_path, settings, show_progress=False)
    assert rerun.already_cached == 7 and rerun.extracted == 16 and len(rerun.failures) == 1


def test_the_checkpoint_timer_writes_while_the_main_loop_waits(model, small_fixture_yaml, data_dir, tmp_path):
    """A forward pass that blocks until the finished items are on disk: only the timer can write them."""
    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    settings = ExtractSettings(batch_size=1, num_workers=0, checkpoint_seconds=0.05, shard_items=1000)
    root = tmp_path / "cache"
    seen: list[int] = []

    class WaitsForTheTimer:
        info = model.info

        def embed_windows(self, windows, batch_size=8):
            if len(seen) == 5:
                cache = open_cache(root, model, dataset, settings)
                deadline = time.monotonic() + 60
                while len(cache.reindex()) < 5 and time.monotonic() < deadline:
                    time.sleep(0.01)  # polling against a deadline
                seen.append(len(cache.reindex()))
            else:
                seen.append(-1)
            return model.embed_windows(windows, batch_size)

    extract_dataset(WaitsForTheTimer(), dataset, root, settings, show_progress=False)
    assert seen[5] == 5  # the five finished items reached disk while the sixth forward pass waited


def test_cli_sigterm_while_a_decode_is_stalled_writes_the_finished_items(tiny_mert_dirs, small_fixture_yaml,
                                                                        tmp_path):
    from tests.test_determinism import _shard_ids, _unblock_fifo_reader, stall_on_fifo

    data = tmp_path / "audio"
    dataset = load_dataset(str(small_fixture_yaml), data_dir=data)
    ids = [item.id for item in dataset.items]
    real = stall_on_fifo(data, dataset.items[12].path)
    fifo = data / dataset.items[12].path
    argv = ["extract", "--model", str(tiny_mert_dirs["safetensors"]), "--dataset", str(small_fixture_yaml),
            "--data-dir", str(data), "--cache-dir", str(tmp_path / "cache"), "--batch-size", "1", "--no-progress"]
    process = subprocess.Popen([sys.executable, "-m", "marble_eval", *argv, "--num-workers", "1",
                                "--checkpoint-seconds", "0.2"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 300
        while not set(ids[:12]) <= _shard_ids(tmp_path / "cache") and process.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)  # polling against a deadline: the checkpoint timer writes the 12 finished items
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
        _unblock_fifo_reader(fifo)
    assert process.returncode == 130 and "rerun the same command to resume" in err.decode()
    fifo.unlink()
    real.rename(fifo)
    from marble_eval.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    assert "12 already cached" in out.getvalue()


# --------------------------------------------------------------------------------------------------
# The cache knows its audio
# --------------------------------------------------------------------------------------------------
def _copy_audio(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)  # copy2: same bytes and mtimes
    return target


def test_changed_audio_is_extracted_again_alone_and_unchanged_audio_is_not_hashed(model, small_fixture_yaml,
                                                                                  data_dir, tmp_path):
    audio = _copy_audio(data_dir, tmp_path / "audio")
    dataset = load_dataset(str(small_fixture_yaml), data_dir=audio)
    settings = ExtractSettings(batch_size=1, num_workers=0)
    first = extract_dataset(model, dataset, tmp_path / "cache", settings, show_progress=False)
    assert first.extracted == 23
    again = extract_dataset(model, dataset, tmp_path / "cache", settings, show_progress=False)
    assert again.already_cached == 23 and again.hashed_files == 0 and again.extracted == 0
    assert any("23 already cached" in line for line in again.lines())

    cache = open_cache(tmp_path / "cache", model, dataset, settings)
    wavs = [item for item in dataset.items if item.path.endswith(".wav")]
    victim, other = wavs[0], wavs[1]  # 16-bit WAVs of one length: the same size
    before = cache.load([victim.id])[0][0].copy()
    digest = cache.audio_digest([item.id for item in dataset.items if item.id in cache.done_ids()])
    shutil.copyfile(audio / other.path, audio / victim.path)  # other audio, same size: the hash decides
    touched = dataset.items[1]
    os.utime(audio / touched.path, ns=(1, 1))  # same bytes, new mtime: hashed, found unchanged, reused
    rerun = extract_dataset(model, dataset, tmp_path / "cache", settings, show_progress=False)
    assert rerun.extracted == 1 and rerun.changed_audio == 1 and rerun.hashed_files == 2
    assert rerun.already_cached == 22
    cache = open_cache(tmp_path / "cache", model, dataset, settings)
    after = cache.load([victim.id])[0][0]
    assert not np.array_equal(before, after)  # the features are those of the new audio
    np.testing.assert_array_equal(after, cache.load([other.id])[0][0])
    done = [item.id for item in dataset.items if item.id in cache.done_ids()]
    assert cache.audio_digest(done) != digest


def test_another_data_dir_with_other_audio_never_reuses_features(model, small_fixture_yaml, data_dir, tmp_path):
    settings = ExtractSettings(batch_size=1, num_workers=0)
    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    extract_dataset(model, dataset, tmp_path / "cache", settings, show_progress=False)
    other = tmp_path / "other-audio"
    _copy_audio(data_dir, other)
    for item in dataset.items:  # other audio under the same names: each clip played backwards
        path = other / item.path
        with contextlib.suppress(RuntimeError):  # the corrupt file stays as it is
            wave, rate = sf.read(path, dtype="float32")
            sf.write(path, wave[::-1].copy(), rate, subtype=sf.info(path).subtype)
    moved = load_dataset(str(small_fixture_yaml), data_dir=other)
    summary = extract_dataset(model, moved, tmp_path / "cache", settings, show_progress=False)
    assert summary.already_cached == 0 and summary.extracted == 23 and summary.data_dir == other
    same = _copy_audio(data_dir, tmp_path / "same-audio-elsewhere")
    copied = load_dataset(str(small_fixture_yaml), data_dir=same)
    reused = extract_dataset(model, copied, tmp_path / "cache", settings, show_progress=False)
    assert reused.extracted == 23  # the cache holds the other audio's features now: re-extracted again
    again = extract_dataset(model, copied, tmp_path / "cache", settings, show_progress=False)
    assert again.already_cached == 23 and again.hashed_files == 0
