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

from marble_eval.audio import load_audio, split_windows, stream_windows
from marble_eval.datasets.registry import load_dataset
from marble_eval.extract import ExtractSettings, embed_files, embed_waveform, extract_dataset, open_cache
from marble_eval.extract_collect import ItemAssembler
from marble_eval.extract_data import BatchPlan, DecodeJob, WindowBatch, WindowStream
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
    finished = {position: count for batch in batches for position, count, _ in batch.finished}
    assert finished == {0: 1, 1: 1, 2: 1, 3: 3, 4: 1}
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

    def embed_then_crash(windows, batch_size=8):
        calls.append(len(windows))
        if len(calls) > 5:
            raise KeyboardInterrupt("simulated crash")
        return model.embed_windows(windows, batch_size)

    crashing.embed_windows = embed_then_crash
    with pytest.raises(KeyboardInterrupt):
        extract_dataset(crashing, dataset, tmp_path / "crashed", settings, splits=("train",), show_progress=False)
    crashed = open_cache(tmp_path / "crashed", model, dataset, settings)
    survived = len(crashed.done_ids())
    assert survived in (4, 8) and not list(crashed.shard_dir.glob(".*tmp"))  # whole shards only
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
    from marble_eval.extract_distributed import ExtractionModule

    module = ExtractionModule(model, dataset, dataset.items[:3], ExtractSettings())
    clone = pickle.loads(pickle.dumps(module))
    assert clone.encoder.info == model.info and clone.net is clone.encoder.module
    batch = torch.randn(2, RATE)
    with torch.inference_mode():
        torch.testing.assert_close(clone.encoder.pooled_states(batch), model.pooled_states(batch), rtol=0, atol=0)


@pytest.mark.parametrize("in_channels,kernel,stride,bias", [(1, 10, 5, False), (8, 3, 2, False), (8, 2, 2, True)])
def test_strided_conv_is_the_same_convolution(in_channels, kernel, stride, bias):
    from marble_eval.extract_speed import StridedConv1d

    torch.manual_seed(0)
    conv = torch.nn.Conv1d(in_channels, 16, kernel, stride, bias=bias)
    x = torch.randn(2, in_channels, 301)
    with torch.inference_mode():
        torch.testing.assert_close(StridedConv1d(conv)(x), conv(x), rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast, native = StridedConv1d(conv)(x), conv(x)
        assert fast.dtype == native.dtype == torch.bfloat16
        torch.testing.assert_close(fast.float(), native.float(), rtol=2e-2, atol=2e-2)


def _assert_same_bf16_math(fast: np.ndarray, native: np.ndarray, reference: np.ndarray) -> None:
    """The stand-ins round differently (folded norms, one rounding per matmul) but are no less accurate:
    their drift from fp32 is within 25% of native bf16's, and the two bf16 runs differ by well under that
    drift (measured 0.1-0.5x of it; the larger figures on CPUs that emulate bf16)."""
    native_drift = np.abs(native - reference).max()
    assert np.abs(fast - reference).max() <= 1.25 * native_drift
    assert np.abs(fast - native).max() < 0.6 * native_drift


def test_fast_kernels_swap_in_for_reduced_precision_only_and_are_put_back(model):
    from marble_eval.extract_speed import fast_cpu_kernels

    before = [type(m) for m in model.module.modules()]
    with fast_cpu_kernels(model.module, "cpu", "fp32") as swapped:
        assert swapped == 0
    windows = [np.random.default_rng(1).standard_normal(RATE).astype(np.float32) for _ in range(3)]
    model.to("cpu", "bf16")
    try:
        native = model.embed_windows(windows)[0]
        with fast_cpu_kernels(model.module, "cpu", "bf16") as swapped:
            assert swapped > 0
            fast = model.embed_windows(windows)[0]
    finally:
        model.to("cpu", "fp32")
    assert [type(m) for m in model.module.modules()] == before
    # same math: the two bf16 runs differ far less than bf16 differs from fp32
    reference = model.embed_windows(windows)[0]
    _assert_same_bf16_math(fast, native, reference)


def _conv_layers(bias: bool = False, width: int = 16) -> torch.nn.ModuleList:
    """A tiny HuBERT feature encoder's conv layers (GroupNorm first layer, then plain ones), random affine."""
    from transformers import HubertConfig
    from transformers.models.hubert.modeling_hubert import HubertFeatureEncoder

    torch.manual_seed(0)
    config = HubertConfig(conv_dim=[width] * 4, conv_kernel=[10, 3, 3, 2], conv_stride=[5, 2, 2, 2],
                          num_feat_extract_layers=4, conv_bias=bias, feat_extract_norm="group")
    encoder = HubertFeatureEncoder(config).eval()
    layers = encoder.conv_layers
    with torch.no_grad():
        layers[0].layer_norm.weight.uniform_(0.5, 2.0)
        layers[0].layer_norm.bias.normal_()
        for layer in layers:
            layer.conv.weight.normal_(0, layer.conv.weight.shape[1] ** -0.5)
            if layer.conv.bias is not None:
                layer.conv.bias.normal_()
    return layers


def _wave(batch: int, samples: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # a DC offset per example: the fold must subtract each example's own frame mean
    return torch.randn(batch, 1, samples, generator=generator) + torch.randn(batch, 1, 1, generator=generator)


def test_folded_first_layer_is_conv_then_groupnorm():
    from marble_eval.extract_speed import folded_first_layer

    layers = _conv_layers()
    first = layers[0]
    x = _wave(3, 4001, seed=1)
    with torch.inference_mode():
        wide = copy.deepcopy(first).double()
        exact = wide.layer_norm(wide.conv(x.double()))
        folded = folded_first_layer(wide.conv, wide.layer_norm, x, torch.float64).transpose(1, 2)
        torch.testing.assert_close(folded, exact, rtol=0, atol=1e-10 * exact.abs().max().item())
        reference = first(x)  # float32: conv -> GroupNorm -> GELU
        fold32 = first.activation(folded_first_layer(first.conv, first.layer_norm, x, torch.float32)).transpose(1, 2)
        assert (fold32 - reference).abs().max() <= 1e-5 * reference.abs().max()


@pytest.mark.parametrize("dtype,tolerance", [(torch.bfloat16, 2 ** -7), (torch.float16, 2 ** -10)])
def test_conv_layer_stand_ins_match_the_layers_under_autocast(dtype, tolerance):
    from marble_eval.extract_speed import ConvLayer

    layers = _conv_layers(bias=True)
    x = _wave(2, 4001, seed=2)
    with torch.inference_mode():
        for index, layer in enumerate(layers):
            stand_in = ConvLayer.wrap(layer, last=index == len(layers) - 1)
            assert stand_in is not None and stand_in.fold == (index == 0)
            exact = copy.deepcopy(layer).double()(x.double())
            with torch.autocast("cpu", dtype=dtype):
                native, fast = layer(x), stand_in(x)
            assert fast.shape == native.shape and fast.dtype == dtype
            # tolerance: two roundings to the autocast dtype (2^-8 each for bf16's 8 significant bits, 2^-11
            # for fp16) of the output's scale, as the native layer itself
            scale = exact.abs().max().item()
            assert (native.double() - exact).abs().max() <= tolerance * scale
            assert (fast.double() - exact).abs().max() <= tolerance * scale
            if index == 0:
                assert fast.transpose(1, 2).is_contiguous()  # channels-last: the next layer reads it as is
            x = native
        # outside autocast (or fp32) it is the original layer, bit for bit
        torch.testing.assert_close(stand_in(x.float()), layers[-1](x.float()), rtol=0, atol=0)


def test_conv_layer_buffers_are_reused_except_for_the_last_layer():
    from marble_eval.extract_speed import ConvLayer

    layers = _conv_layers()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        # the folded first layer, an overlapping-frames layer, the last layer (kernel 2, stride 2: no frame copy)
        for index in (0, 1, 3):
            layer = layers[index]
            if index == 0:
                one, two, longer = _wave(2, 4001, seed=3), _wave(2, 4001, seed=4), _wave(2, 5003, seed=5)
            else:
                one, two, longer = (torch.randn(2, layer.conv.in_channels, n,
                                                generator=torch.Generator().manual_seed(n)) for n in (1001, 1002, 1203))
                one, two = one[..., :1001], two[..., :1001]
            stand_in = ConvLayer.wrap(layer, last=index == len(layers) - 1)
            first = stand_in(one)
            kept = first.clone()
            second = stand_in(two)
            assert torch.equal(second, ConvLayer.wrap(layer, last=False)(two))  # a fresh stand-in: same result
            assert not torch.equal(second, kept)
            if stand_in.last:
                assert torch.equal(first, kept) and first.data_ptr() != second.data_ptr()  # not overwritten
                assert not stand_in.scratch
            else:
                assert first.data_ptr() == second.data_ptr()  # the same buffer, written again
                assert stand_in.scratch
            assert torch.equal(stand_in(one), kept)
            third = stand_in(longer)  # another length: new buffers (the old ones dropped), still right
            assert torch.equal(third, ConvLayer.wrap(layer, last=False)(longer))
            assert all(buffer.shape[1] == third.shape[-1] for buffer in stand_in.scratch.values())
    # buffers made in inference mode are not reused outside it (they could not be written there)
    stand_in = ConvLayer.wrap(layers[1], last=False)
    x = torch.randn(2, layers[1].conv.in_channels, 1001)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.inference_mode():
            expected = stand_in(x).clone()
        with torch.no_grad():
            assert torch.equal(stand_in(x), expected)


def test_conv_layer_falls_back_to_the_layer():
    from marble_eval.extract_speed import ConvLayer

    layers = _conv_layers()
    stand_in = ConvLayer.wrap(layers[0], last=False)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError):
            stand_in(torch.randn(2, 1, 5))  # too short: the layer's own error
        plain = ConvLayer.wrap(layers[1], last=False)
        unbatched = torch.randn(16, 1001)
        assert torch.equal(plain(unbatched), layers[1](unbatched))
        wrong_channels = torch.randn(2, 1, 4001)
        with pytest.raises(RuntimeError):
            plain(wrong_channels)
    assert not stand_in.scratch and not plain.scratch
    layer_norm_layer = copy.deepcopy(layers[1])
    layer_norm_layer.layer_norm = torch.nn.LayerNorm(16)
    assert ConvLayer.wrap(layer_norm_layer, last=False) is None  # a LayerNorm conv layer keeps its own forward
    padded = copy.deepcopy(layers[1])
    padded.conv.padding = (1,)
    assert ConvLayer.wrap(padded, last=False) is None


@pytest.mark.parametrize("variant", ["safetensors", "pre_ln"])
def test_fast_kernels_on_a_whole_model_match_and_are_put_back(tiny_mert_dirs, variant):
    from marble_eval.extract_speed import ConvLayer, StridedConv1d, fast_cpu_kernels

    model = load_model(str(tiny_mert_dirs[variant]))
    before = list(model.module.named_modules())
    windows = [np.random.default_rng(seed).standard_normal(RATE).astype(np.float32) for seed in range(3)]
    reference = model.embed_windows(windows)[0]
    model.to("cpu", "bf16")
    try:
        native = model.embed_windows(windows)[0]
        with fast_cpu_kernels(model.module, "cpu", "bf16") as swapped:
            kinds = [type(layer) for layer in model.module.feature_extractor.conv_layers]
            # group-norm encoders run whole ConvLayers; LayerNorm conv layers keep theirs, with StridedConv1d convs
            assert (kinds == [ConvLayer] * 7) == (variant == "safetensors")
            assert (ConvLayer in kinds) == (variant == "safetensors")
            if variant == "pre_ln":
                assert all(type(layer.conv) is StridedConv1d for layer in model.module.feature_extractor.conv_layers)
            assert [layer.last for layer in model.module.modules() if isinstance(layer, ConvLayer)] == (
                [False] * 6 + [True] if variant == "safetensors" else [])
            assert swapped > 7
            fast = model.embed_windows(windows)[0]
            again = model.embed_windows(windows)[0]
    finally:
        model.to("cpu", "fp32")
    after = list(model.module.named_modules())
    assert [(name, id(module)) for name, module in after] == [(name, id(module)) for name, module in before]
    np.testing.assert_array_equal(fast, again)
    _assert_same_bf16_math(fast, native, reference)
