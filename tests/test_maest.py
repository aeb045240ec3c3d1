"""MAEST: the mel front-end, loading the hub's 4.x AST layout, windows, short clips and token pooling."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import ASTConfig, ASTForAudioClassification
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from marble_eval.errors import MarbleEvalError
from marble_eval.models import load_model
from marble_eval.models.families import maest_frontend as fe
from marble_eval.models.loading import build_config
from marble_eval.models.token_pooling import DEFAULT_POOLING, POOLINGS
from tiny_ast import build_tiny_maest, tiny_ast_config
from tiny_generic import edit_weights

RATE = fe.SAMPLE_RATE


def _music(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    tones = sum(np.sin(2 * np.pi * f * t) * a for f, a in ((220, 0.3), (1330, 0.2), (3100, 0.1)))
    return (tones + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def maest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_maest(tmp_path_factory.mktemp("maest") / "st", weights="safetensors", seed=0)


@pytest.fixture(scope="module")
def maest(maest_dir: Path):
    return load_model(str(maest_dir))


# ---------------------------------------------------------------- front-end

def _reference_front_end(wave: np.ndarray, max_length: int) -> np.ndarray:
    """The hub's transformers-based MAESTFeatureExtractor recipe, in float64 numpy."""
    filters = mel_filter_bank(num_frequency_bins=257, num_mel_filters=96, min_frequency=0, max_frequency=8000,
                              sampling_rate=16000, norm="slaney", mel_scale="slaney")
    mel = spectrogram(wave.astype(np.float64), window=window_function(512, "hann"), frame_length=512,
                      hop_length=256, power=2, mel_filters=filters, mel_floor=1e-30, pad_mode="constant").T
    mel = np.log10(1 + mel * 10000)
    mel = np.pad(mel, ((0, max(0, max_length - len(mel))), (0, 0)))[:max_length]
    return (mel - 2.06755686098554) / (2 * 1.268292820667291)


@pytest.mark.parametrize("seconds, max_length", [(5.0, 316), (2.0, 316), (10.0, 316)])
def test_front_end_matches_reference_recipe(seconds: float, max_length: int) -> None:
    wave = _music(seconds)
    ours = fe.MaestFrontEnd(max_length)(torch.from_numpy(wave)[None])[0].numpy()
    reference = _reference_front_end(wave, max_length)
    assert ours.shape == (max_length, 96)
    np.testing.assert_allclose(ours, reference, atol=2e-5)


def test_front_end_frames_padding_and_normalisation() -> None:
    front_end = fe.MaestFrontEnd(316)
    wave = torch.from_numpy(_music(5.0))[None]
    assert front_end.log_mel(wave).shape == (1, 313, 96)  # 1 + 80000 // 256, centred frames
    features = front_end(wave)[0]
    padding = (0.0 - fe.MEAN) / (2 * fe.STD)  # zero log-mel frames, then normalised
    assert torch.allclose(features[313:], torch.full((3, 96), padding))
    assert not torch.allclose(features[312], torch.full((96,), padding))


def test_front_end_puts_a_tone_in_its_mel_band() -> None:
    filters = fe.MaestFrontEnd(316).filters.numpy()  # [257, 96]
    centres = filters.argmax(axis=0) * RATE / fe.N_FFT
    assert centres.max() <= 8000 and filters.shape == (257, 96)
    t = np.arange(RATE) / RATE
    for frequency in (440.0, 2000.0, 6000.0):
        tone = torch.from_numpy(np.sin(2 * np.pi * frequency * t).astype(np.float32))[None]
        band = int(fe.MaestFrontEnd(316).log_mel(tone)[0, 10:-10].mean(dim=0).argmax())
        assert abs(centres[band] - frequency) <= 0.1 * frequency + 2 * RATE / fe.N_FFT


def test_window_lengths_of_the_released_models() -> None:
    assert [fe.window_samples(n) / RATE for n in (316, 626, 1256, 1876)] == [5.0, 10.0, 20.0, 30.0]
    assert fe.spectrogram_frames(30 * RATE) == 1876 and fe.spectrogram_frames(10 * RATE) == 626


# ---------------------------------------------------------------- loading

def _original_model(seed: int = 0, **overrides) -> ASTForAudioClassification:
    torch.manual_seed(seed)
    return ASTForAudioClassification(build_config(ASTConfig, tiny_ast_config(**overrides))).eval()


def test_loads_the_hub_layout_exactly(maest_dir: Path, maest) -> None:
    keys = load_file(str(maest_dir / "model.safetensors")).keys()
    assert "audio_spectrogram_transformer.encoder.layer.0.attention.attention.query.weight" in keys
    assert sum(key.startswith("classifier.") for key in keys) == 4
    original = _original_model()
    inputs = torch.randn(2, 316, 96)
    with torch.no_grad():
        expected = original.audio_spectrogram_transformer(inputs, output_hidden_states=True).hidden_states
        got = maest.module(inputs, output_hidden_states=True).hidden_states
    assert len(got) == 3
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    assert all(p.dtype == torch.float32 for p in maest.module.parameters())  # config says float16
    assert "feature_extraction_maest" not in sys.modules


def test_model_info(maest) -> None:
    info = maest.info
    assert (info.family, info.sample_rate, info.n_hidden_states, info.dim) == ("maest", 16000, 3, 32)
    assert info.fixed_window_seconds == 5.0
    assert info.extra["pooling"] == DEFAULT_POOLING == "patch-mean"
    assert info.extra["short_clips"] == "zero-pad" and info.extra["max_length"] == 316
    assert "hidden state 7" in info.extra["paper_embedding"]
    assert set(info.extra).isdisjoint(f.name for f in dataclasses.fields(info))  # `info` prints both


def test_bin_and_maest_model_type_load_the_same_weights(tmp_path: Path, maest) -> None:
    wave = [_music(5.0)]
    expected, _ = maest.embed_windows(wave)
    for directory in (build_tiny_maest(tmp_path / "bin", weights="bin", seed=0),
                      build_tiny_maest(tmp_path / "maest-type", seed=0, model_type="maest", preprocessor=False)):
        encoder = load_model(str(directory))
        assert encoder.info.family == "maest"
        np.testing.assert_array_equal(encoder.embed_windows(wave)[0], expected)


def test_ast_family_hands_maest_checkpoints_to_maest(maest_dir: Path) -> None:
    assert load_model(str(maest_dir), family="ast").info.family == "maest"
    cls = load_model(str(maest_dir), family="ast", pooling="cls")
    assert (cls.info.family, cls.info.extra["pooling"]) == ("maest", "cls")


def test_refuses_front_end_mismatches(tmp_path: Path) -> None:
    directory = build_tiny_maest(tmp_path / "hop", seed=0)
    config = json.loads((directory / "preprocessor_config.json").read_text())
    (directory / "preprocessor_config.json").write_text(json.dumps({**config, "hop_length": 512}))
    with pytest.raises(MarbleEvalError, match="preprocessor_config.json: hop_length is 512"):
        load_model(str(directory))
    directory = build_tiny_maest(tmp_path / "mels", seed=0, preprocessor=False, num_mel_bins=128)
    with pytest.raises(MarbleEvalError, match="num_mel_bins is 128"):
        load_model(str(directory), family="maest")


def test_refuses_a_deleted_weight_naming_it(tmp_path: Path) -> None:
    directory = build_tiny_maest(tmp_path / "partial", seed=0)
    edit_weights(directory / "model.safetensors",
                 delete="audio_spectrogram_transformer.encoder.layer.1.output.dense.weight")
    with pytest.raises(MarbleEvalError, match=r"model.safetensors: missing weight 'layers\.1\.mlp\.fc2\.weight' "
                                              r"\(1 missing\) needed by ASTModel") as error:
        load_model(str(directory))
    assert "\n" not in str(error.value)


def test_refuses_an_extra_weight_naming_it_but_allows_the_classifier(tmp_path: Path, maest_dir: Path) -> None:
    assert sum(key.startswith("classifier.") for key in load_file(str(maest_dir / "model.safetensors"))) == 4
    directory = build_tiny_maest(tmp_path / "extra", seed=0)
    key = "audio_spectrogram_transformer.extra_head.weight"
    edit_weights(directory / "model.safetensors", add=key)
    with pytest.raises(MarbleEvalError, match=rf"unexpected weight '{re.escape(key)}' \(1 unexpected\), not in ASTModel"):
        load_model(str(directory))


# ---------------------------------------------------------------- embedding

def _manual_layers(encoder, wave: np.ndarray) -> tuple[torch.Tensor, ...]:
    features = fe.MaestFrontEnd(316)(torch.from_numpy(wave)[None])
    with torch.no_grad():
        return encoder.module(features, output_hidden_states=True).hidden_states


def test_full_window_is_patch_mean_of_every_hidden_state(maest) -> None:
    wave = _music(5.0, seed=1)
    embeddings, frames = maest.embed_windows([wave])
    expected = torch.stack([h[0, 2:].mean(dim=0) for h in _manual_layers(maest, wave)]).numpy()
    assert embeddings.shape == (1, 3, 32) and frames.tolist() == [313]
    np.testing.assert_allclose(embeddings[0], expected, atol=1e-6)


def test_paper_pooling_concatenates_cls_dist_and_patch_mean(maest_dir: Path, maest) -> None:
    wave = _music(5.0, seed=2)
    layers = _manual_layers(maest, wave)
    paper = load_model(str(maest_dir), pooling="cls-dist-patch-mean")
    assert paper.info.dim == 3 * maest.info.dim == 96 and paper.info.family == "maest"
    assert paper.info.extra["pooling"] == "cls-dist-patch-mean" and paper.info.fingerprint == maest.info.fingerprint
    embedding = paper.embed_windows([wave])[0][0]
    assert embedding.shape == (3, 96)
    for layer, hidden in enumerate(layers):
        expected = torch.cat([hidden[0, 0], hidden[0, 1], hidden[0, 2:].mean(dim=0)]).numpy()
        np.testing.assert_allclose(embedding[layer], expected, atol=1e-6)
    both = load_model(str(maest_dir), pooling="cls-dist-mean").embed_windows([wave])[0][0]
    tokens = torch.stack(layers)[:, 0]  # [L, tokens, D]
    np.testing.assert_allclose(both, ((tokens[:, 0] + tokens[:, 1]) / 2).numpy(), atol=1e-6)


def test_cls_token_is_constant_at_layer_zero_patch_mean_is_not(maest_dir: Path, maest) -> None:
    cls = load_model(str(maest_dir), pooling="cls")
    a, b = _music(5.0, seed=3), 0.3 * _music(5.0, seed=4)[::-1].copy()
    cls_states = cls.embed_windows([a, b])[0]
    np.testing.assert_allclose(cls_states[0, 0], cls_states[1, 0], atol=1e-6)
    patch_states = maest.embed_windows([a, b])[0]
    assert np.abs(patch_states[0, 0] - patch_states[1, 0]).max() > 1e-3


def test_every_pooling_loads_with_its_width_and_unknown_ones_are_one_line(maest_dir: Path) -> None:
    for pooling, (_, factor) in POOLINGS.items():
        info = load_model(str(maest_dir), pooling=pooling).info
        assert (info.dim, info.extra["pooling"]) == (32 * factor, pooling)
    with pytest.raises(MarbleEvalError, match="unknown pooling 'cls-dist-patch'; known: patch-mean") as error:
        load_model(str(maest_dir), pooling="cls-dist-patch")
    assert "\n" not in str(error.value)


def test_short_clip_is_zero_padded_like_an_explicitly_padded_input(maest) -> None:
    short = _music(2.0, seed=5)  # 32000 samples, a multiple of the hop: the STFT frames line up exactly
    got, frames = maest.embed_windows([short])
    assert frames.tolist() == [1 + len(short) // 256]
    padded = np.concatenate([short, np.zeros(5 * RATE - len(short), dtype=np.float32)])
    np.testing.assert_allclose(got, maest.embed_windows([padded])[0], atol=1e-5)
    expected = torch.stack([h[0, 2:].mean(dim=0) for h in _manual_layers(maest, short)]).numpy()
    np.testing.assert_allclose(got[0], expected, atol=1e-6)
    repeated = np.tile(short, 3)[:5 * RATE]  # what the old default did: a different embedding
    assert np.abs(maest.embed_windows([repeated])[0] - got).max() > 1e-3


def test_long_window_is_frame_weighted_mean_of_segments(maest) -> None:
    wave = _music(12.0, seed=6)
    segments = [wave[:5 * RATE], wave[5 * RATE:10 * RATE], wave[10 * RATE:]]
    got, frames = maest.embed_windows([wave])
    parts = np.concatenate([maest.embed_windows([s])[0] for s in segments])
    weights = np.array([313, 313, 1 + 2 * RATE // 256], dtype=np.float64)
    assert frames.tolist() == [int(weights.sum())]
    np.testing.assert_allclose(got[0], np.tensordot(weights / weights.sum(), parts, axes=1), atol=1e-5)


def test_batching_does_not_change_embeddings(maest) -> None:
    waves = [_music(5.0, seed=s) for s in range(3)] + [_music(3.0, seed=9)]
    together = maest.embed_windows(waves, batch_size=4)[0]
    alone = np.concatenate([maest.embed_windows([w])[0] for w in waves])
    np.testing.assert_allclose(together, alone, atol=1e-5)
