"""Extraction at scale on one machine: streamed decode, bounded memory, cross-file batching, workers, precision."""

from __future__ import annotations

import copy
import json
import pickle
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch

from marble_eval.audio.decode import load_audio, split_windows, stream_windows
from marble_eval.datasets.registry import load_dataset
from marble_eval.features.assemble import ItemAssembler
from marble_eval.features.extract import ExtractSettings, embed_files, embed_waveform, extract_dataset, open_cache
from marble_eval.features.windows import BatchPlan, DecodeJob, WindowBatch, WindowStream
from marble_eval.models import load_model

RATE = 24000


@pytest.fixture(scope="module")
def model(tiny_mert_dirs):
    return load_model(str(tiny_mert_dirs["safetensors"]))


@pytest.fixture()
def dataset(small_fixture_yaml, tmp_path_factory):
    return load_dataset(str(small_fixture_yaml), data_dir=tmp_path_factory.getbasetemp() / "tiny-fixture-audio")


def _noise(seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    tone = 0.2 * np.sin(2 * np.pi * 440 * t)[:, None]
    return (tone + 0.1 * rng.standard_normal((len(t), channels))).astype(np.float32)


@pytest.mark.parametrize("extension,subtype,rate,channels", [
    ("wav", "PCM_16", 16000, 1), ("flac", "PCM_16", 44100, 2), ("ogg", "VORBIS", 32000, 2),
    ("mp3", "MPEG_LAYER_III", 22050, 1), ("mp3", "MPEG_LAYER_III", 44100, 2),
])
def test_streamed_windows_equal_whole_file_decode(tmp_path, extension, subtype, rate, channels):
    # Small blocks force many block boundaries (python-soundfile seeks after each read, which makes
    # libsndfile's MP3 decoder drop its bit reservoir: the stream must read forward-only).
    path = tmp_path / f"clip.{extension}"
    sf.write(path, _noise(7.3, rate, channels), rate, subtype=subtype)
    for window in (0.0, 1.0, 2.5, 7.0):
        for max_seconds in (None, 4.0):
            whole = split_windows(load_audio(path, RATE, max_seconds), RATE, window)
            streamed = list(stream_windows(path, RATE, window, max_seconds, block_seconds=0.3))
            assert [len(w) for w in streamed] == [len(w) for w in whole]
            for a, b in zip(whole, streamed):
                np.testing.assert_array_equal(a, b)


def _peak_bytes_while_streaming(path, window: float) -> int:
    tracemalloc.start()
    try:
        for _ in stream_windows(path, RATE, window):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_windowed_decode_memory_does_not_grow_with_track_length(tmp_path):
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    sf.write(short, _noise(30, 16000, 1), 16000, subtype="PCM_16")
    sf.write(long, _noise(150, 16000, 1), 16000, subtype="PCM_16")
    windowed_short = _peak_bytes_while_streaming(short, 5.0)
    windowed_long = _peak_bytes_while_streaming(long, 5.0)
    whole_long = _peak_bytes_while_streaming(long, 0.0)
    assert windowed_long < 1.2 * windowed_short + 500_000
    # whole-clip mode necessarily holds the clip: 150 s at 24 kHz float32 is 14 MB
    assert whole_long > 150 * RATE * 4 > 2 * windowed_long


def _batches(tmp_path, plan: BatchPlan, seconds: list[float], window: float) -> list[WindowBatch]:
    jobs = []
    for position, length in enumerate(seconds):
        path = tmp_path / f"item{position}.wav"
        sf.write(path, _noise(length, RATE, 1, seed=position), RATE, subtype="FLOAT")
        jobs.append(DecodeJob(position, str(path)))
    jobs.append(DecodeJob(len(jobs), None, "audio path escapes the data dir"))
    return list(WindowStream(jobs, RATE, window, None, plan))


def test_windows_are_batched_across_files_by_length_and_audio_budget(tmp_path):
    batches = _batches(tmp_path, BatchPlan(batch_size=4, batch_samples=10 * RATE), [2.0, 2.0, 2.0, 5.5, 2.0], 2.0)
    keys = [key for batch in batches for key in batch.keys]
    assert sorted(keys) == [(0, 0), (1, 0), (2, 0), (3, 0), (3, 1), (3, 2), (4, 0)]  # 1.5 s tail of item 3 kept
    for batch in batches:
        assert batch.waves.shape[0] == len(batch.keys) <= 4
        assert batch.waves.shape[0] * batch.waves.shape[1] <= 10 * RATE or len(batch.keys) == 1
    assert any(len({position for position, _ in batch.keys}) > 1 for batch in batches)  # spans files
    finished = {position: count for batch in batches for position, count, _, _ in batch.finished}
    assert finished == {0: 1, 1: 1, 2: 1, 3: 3, 4: 1}
    stamps = [stamp for batch in batches for *_, stamp in batch.finished]
    assert all(stamp.size > 0 and len(stamp.sha256) == 64 for stamp in stamps)  # each item names its audio
    assert [reason for batch in batches for _, reason in batch.failed] == ["audio path escapes the data dir"]


def test_per_file_plan_never_mixes_items(tmp_path):
    batches = _batches(tmp_path, BatchPlan(batch_size=8, mix_files=False), [2.0, 2.0, 3.0], 0.0)
    with_windows = [batch for batch in batches if batch.keys]
    assert [[position for position, _ in batch.keys] for batch in with_windows] == [[0], [1], [2]]


def test_decode_side_holds_a_bounded_number_of_windows(tmp_path):
    # One long item in 1 s windows: batches leave as they fill, never all windows at once.
    batches = _batches(tmp_path, BatchPlan(batch_size=2, batch_samples=60 * RATE), [20.0], 1.0)
    assert max(len(batch.keys) for batch in batches) == 2 and sum(len(b.keys) for b in batches) == 20


def test_assembler_completes_items_from_out_of_order_windows_and_drops_failed_ones():
    assembler = ItemAssembler()
    states = lambda n, value: np.full((n, 2, 3), value, np.float32)  # noqa: E731
    first = WindowBatch(torch.zeros(2, 5), [(0, 1), (1, 0)])
    assert assembler.add(first, states(2, 1.0), np.array([7, 8])) == ([], [])
    second = WindowBatch(torch.zeros(1, 5), [(0, 0)], finished=[(0, 2, 3.0)], failed=[(1, "NaN at 4 s")])
    completed, failed = assembler.add(second, states(1, 2.0), np.array([9]))
    assert failed == [(1, "NaN at 4 s")] and [item.position for item in completed] == [0]
    assert completed[0].features[:, 0, 0].tolist() == [2.0, 1.0] and completed[0].frames.tolist() == [9, 7]
    assert completed[0].seconds == 3.0 and assembler.pending() == 0


def test_cross_file_batches_give_each_file_its_own_embedding(model, dataset, tmp_path):
    settings = ExtractSettings(window_seconds=1.0, storage="fp32", batch_size=8, num_workers=2)
    summary = extract_dataset(model, dataset, tmp_path, settings, splits=("train",), show_progress=False)
    assert summary.extracted == 12 and summary.audio_seconds == pytest.approx(12 * 2.0)  # embedded windows
    items = dataset.split("train")[:6]
    features, frames = open_cache(tmp_path, model, dataset, settings).load([item.id for item in items])
    for item, batched, batched_frames in zip(items, features, frames):
        alone, alone_frames = embed_waveform(model, load_audio(dataset.audio_path(item), RATE), 1.0, batch_size=1)
        np.testing.assert_array_equal(batched_frames, alone_frames)
        np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)  # fp32 sums reorder with batch size


def test_worker_count_does_not_change_the_cache(model, dataset, tmp_path):
    ids = [item.id for item in dataset.items]
    loaded = []
    for workers in (0, 2):
        settings = ExtractSettings(num_workers=workers, storage="fp32", shard_items=5)
        extract_dataset(model, dataset, tmp_path / str(workers), settings, show_progress=False)
        loaded.append(open_cache(tmp_path / str(workers), model, dataset, settings).load(ids))
    for a, b in zip(loaded[0][0], loaded[1][0]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_audio_failing_mid_stream_leaves_no_partial_item(model, small_fixture_yaml, tmp_path):
    data_dir = tmp_path / "audio"
    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    victim = next(item for item in dataset.items if item.path.endswith(".wav"))
    wave = _noise(21.0, 16000, 1)
    wave[int(20.5 * 16000)] = np.nan  # in the third 10 s block: 20 windows were already batched and embedded
    sf.write(dataset.audio_path(victim), wave, 16000, subtype="FLOAT")
    settings = ExtractSettings(window_seconds=1.0, batch_size=4)
    summary = extract_dataset(model, dataset, tmp_path / "cache", settings, splits=(victim.split,),
                              show_progress=False)
    assert "NaN" in summary.failures[victim.id]["reason"] and summary.extracted == len(dataset.split(victim.split)) - 1
    cache = open_cache(tmp_path / "cache", model, dataset, settings)
    assert victim.id not in cache.done_ids() and victim.id in cache.failures()


def test_a_crash_midway_resumes_to_the_same_cache(model, dataset, tmp_path):
    settings = ExtractSettings(shard_items=4, batch_size=2, num_workers=1)
    extract_dataset(model, dataset, tmp_path / "clean", settings, splits=("train",), show_progress=False)
    crashing = copy.copy(model)
    calls = []

    def forward_then_crash(batch):
        calls.append(len(batch))
        if len(calls) > 5:
            raise KeyboardInterrupt("simulated crash")
        return model.pooled_states(batch)

    crashing.pooled_states = forward_then_crash  # the forward call, as the extraction loop makes it
    with pytest.raises(KeyboardInterrupt):
        extract_dataset(crashing, dataset, tmp_path / "crashed", settings, splits=("train",), show_progress=False)
    crashed = open_cache(tmp_path / "crashed", model, dataset, settings)
    survived = len(crashed.done_ids())
    # 5 forward passes of 2 windows finish 8 to 10 items (an item is complete when its last window's
    # batch and its end-of-item event have arrived); the buffer is written on the way out
    assert 8 <= survived <= 10 and not list(crashed.shard_dir.glob(".*tmp"))
    resumed = extract_dataset(model, dataset, tmp_path / "crashed", settings, splits=("train",),
                              show_progress=False)
    assert resumed.extracted == 12 - survived and resumed.already_cached == survived
    ids = [item.id for item in dataset.split("train")]
    clean = open_cache(tmp_path / "clean", model, dataset, settings)
    for a, b in zip(clean.load(ids)[0], crashed.load(ids)[0]):
        np.testing.assert_array_equal(a, b)


def test_precision_setting_is_what_runs_and_what_the_key_records(model, dataset, tmp_path):
    ids = [item.id for item in dataset.items[:6]]
    fp32 = ExtractSettings(storage="fp32")
    bf16 = ExtractSettings(storage="fp32", precision="bf16")
    extract_dataset(model, dataset, tmp_path, fp32, splits=("train",), show_progress=False)
    extract_dataset(model, dataset, tmp_path, bf16, splits=("train",), show_progress=False)
    assert model.precision == "fp32"  # restored after the run
    reference = open_cache(tmp_path, model, dataset, fp32)
    reduced = open_cache(tmp_path, model, dataset, bf16)
    assert json.loads((reduced.directory / "key.json").read_text())["precision"] == "bf16"
    a, b = np.stack(reference.load(ids)[0]), np.stack(reduced.load(ids)[0])
    assert np.abs(a - b).max() > 1e-3  # autocast really ran (the drift itself is measured by `make bench`)


def test_embed_files_streams_long_files_in_windows(model, tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, _noise(9.5, 16000, 1), 16000, subtype="FLOAT")
    wave = load_audio(path, RATE)
    states, frames = model.embed_windows(split_windows(wave, RATE, 2.0))
    expected = (states * frames[:, None, None]).sum(0) / frames.sum()
    np.testing.assert_allclose(embed_files(model, [path], window_seconds=2.0, batch_size=3)[0], expected,
                               rtol=1e-5, atol=1e-6)


def test_the_lightning_module_pickles_by_reloading_the_model(model, dataset):
    from marble_eval.features.distributed import ExtractionModule

    module = ExtractionModule(model, dataset, dataset.items[:3], ExtractSettings())
    clone = pickle.loads(pickle.dumps(module))
    assert clone.encoder.info == model.info and clone.encoder is not model  # loaded again, not unpickled
    batch = torch.randn(2, RATE)
    with torch.inference_mode():
        torch.testing.assert_close(clone.encoder.pooled_states(batch), model.pooled_states(batch), rtol=0, atol=0)

