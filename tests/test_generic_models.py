"""Generic HF audio encoders: hubert, wav2vec2, wavlm, data2vec-audio and AST through their transformers classes."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ASTFeatureExtractor, HubertModel, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

from marble_eval.audio.decode import normalize
from marble_eval.errors import MarbleEvalError
from marble_eval.models import load_model
from tiny_ast import build_tiny_ast
from tiny_generic import build_tiny_wav2vec2_style, edit_weights

RATE = 16000
FAMILIES = ("hubert", "wav2vec2", "wavlm", "data2vec-audio")
PACKAGE = Path(__file__).resolve().parents[1] / "marble_eval"
TEST_ONLY_MODULES = {path.stem for path in Path(__file__).parent.glob("*.py")}


def _wave(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(len(t)) + 0.2).astype(np.float32)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generic")


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_loads_from_model_type_and_embeds(root: Path, family: str) -> None:
    directory = build_tiny_wav2vec2_style(root / family, family, seed=0)
    encoder = load_model(str(directory))
    info = encoder.info
    assert (info.family, info.sample_rate, info.n_hidden_states, info.dim) == (family, RATE, 3, 32)
    assert info.extra["normalize_source"] == "preprocessor_config.json"
    assert set(info.extra).isdisjoint(f.name for f in dataclasses.fields(info))
    embeddings, frames = encoder.embed_windows([_wave(1.0), _wave(1.0, seed=1), _wave(0.5)])
    assert embeddings.shape == (3, 3, 32) and embeddings.dtype == np.float32
    assert frames.tolist() == [49, 49, 24]  # 320x down-sampling of the conv front-end
    assert np.isfinite(embeddings).all() and np.abs(embeddings[0] - embeddings[1]).max() > 1e-4
    # Normalised input: the embedding does not depend on the input gain or offset.
    scaled = encoder.embed_windows([3.0 * _wave(1.0) - 0.5])[0]
    np.testing.assert_allclose(scaled[0], embeddings[0], atol=1e-4)


def test_normalisation_is_the_feature_extractors(root: Path) -> None:
    wave = _wave(1.0, seed=3)
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=RATE)
    expected = extractor(wave, sampling_rate=RATE, return_tensors="np")["input_values"][0]
    np.testing.assert_allclose(normalize(wave), expected, atol=1e-5)
    raw = load_model(str(build_tiny_wav2vec2_style(root / "raw", "wav2vec2", do_normalize=False)))
    assert raw.info.extra["normalize"] == "none"
    np.testing.assert_array_equal(raw.preprocess(wave), wave)
    gain = raw.embed_windows([wave, 3.0 * wave])[0]
    assert np.abs(gain[0] - gain[1]).max() > 1e-3
    default = load_model(str(build_tiny_wav2vec2_style(root / "noprep", "hubert", do_normalize=None)))
    assert default.info.extra["normalize_source"] == "Wav2Vec2FeatureExtractor default"
    np.testing.assert_allclose(default.preprocess(wave), normalize(wave))


def test_fine_tuned_ctc_layout_loads_the_inner_model(root: Path) -> None:
    directory = build_tiny_wav2vec2_style(root / "ctc", "wav2vec2", seed=4, ctc_head=True, weights="bin")
    encoder = load_model(str(directory))
    wave = _wave(1.0, seed=5)
    reference = Wav2Vec2ForCTC.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        states = reference.wav2vec2(torch.from_numpy(normalize(wave))[None], output_hidden_states=True).hidden_states
    expected = torch.stack([s[0].mean(dim=0) for s in states]).numpy()
    np.testing.assert_allclose(encoder.embed_windows([wave])[0][0], expected, atol=1e-5)


def test_pre_layer_norm_last_state_is_the_final_output(root: Path) -> None:
    encoder = load_model(str(build_tiny_wav2vec2_style(root / "preln", "hubert", seed=6, pre_layer_norm=True)))
    assert encoder.info.extra["pre_layer_norm"] is True
    wave = _wave(1.0, seed=7)
    with torch.no_grad():
        output = encoder.module(torch.from_numpy(normalize(wave))[None])
    np.testing.assert_allclose(encoder.embed_windows([wave])[0][0, -1], output.last_hidden_state[0].mean(dim=0).numpy(),
                               atol=1e-5)


def test_family_override_for_an_unknown_model_type(root: Path) -> None:
    directory = build_tiny_wav2vec2_style(root / "custom", "hubert", seed=8)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "my_music_hubert"}))
    with pytest.raises(MarbleEvalError, match="unknown model_type 'my_music_hubert'; pass --family with one of: .*hub"):
        load_model(str(directory))
    encoder = load_model(str(directory), family="hubert")
    direct = HubertModel.from_pretrained(str(build_tiny_wav2vec2_style(root / "plain", "hubert", seed=8))).eval()
    with torch.no_grad():
        expected = direct(torch.from_numpy(normalize(_wave()))[None]).last_hidden_state[0].mean(dim=0).numpy()
    np.testing.assert_allclose(encoder.embed_windows([_wave()])[0][0, -1], expected, atol=1e-5)


def test_wrong_family_and_unknown_family_are_one_line_errors(root: Path) -> None:
    ast_dir = build_tiny_ast(root / "ast-wrong", seed=0)
    with pytest.raises(MarbleEvalError, match="feature_extractor_type 'ASTFeatureExtractor' is not Wav2Vec2"):
        load_model(str(ast_dir), family="hubert")
    (ast_dir / "preprocessor_config.json").unlink()
    with pytest.raises(MarbleEvalError, match="missing weight .* needed by HubertModel; it is incomplete or not a "
                                              "'hubert' checkpoint") as error:
        load_model(str(ast_dir), family="hubert")
    assert "\n" not in str(error.value)
    with pytest.raises(MarbleEvalError, match="unknown model family 'nope'; known: .*data2vec-audio.*maest.*wavlm"):
        load_model(str(ast_dir), family="nope")


def test_ast_loads_with_its_feature_extractor(root: Path) -> None:
    directory = build_tiny_ast(root / "ast", seed=1, max_length=100)
    encoder = load_model(str(directory))
    info = encoder.info
    assert (info.family, info.sample_rate, info.n_hidden_states, info.dim) == ("ast", RATE, 3, 32)
    window = (100 - 1) * 160 + 400  # exactly max_length Kaldi frames
    assert info.fixed_window_seconds == window / RATE and info.extra["pooling"] == "patch-mean"
    wave = _wave(window / RATE, seed=2)
    embeddings, frames = encoder.embed_windows([wave, _wave(0.5)])
    assert embeddings.shape == (2, 3, 32) and frames.tolist() == [100, 48]
    features = ASTFeatureExtractor.from_pretrained(str(directory))(wave, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        states = encoder.module(features["input_values"], output_hidden_states=True).hidden_states
    expected = torch.stack([s[0, 2:].mean(dim=0) for s in states]).numpy()
    np.testing.assert_allclose(embeddings[0], expected, atol=1e-5)
    cls = load_model(str(directory), pooling="cls")
    assert (cls.info.family, cls.info.dim, cls.info.extra["pooling"]) == ("ast", 32, "cls")
    expected_cls = torch.stack([s[0, 0] for s in states]).numpy()
    np.testing.assert_allclose(cls.embed_windows([wave])[0][0], expected_cls, atol=1e-5)
    paper = load_model(str(directory), pooling="cls-dist-patch-mean")
    assert paper.info.dim == 3 * 32 and paper.info.extra["pooling"] == "cls-dist-patch-mean"


def _builders(root: Path) -> dict[str, Path]:
    return {**{family: build_tiny_wav2vec2_style(root / family, family) for family in FAMILIES},
            "ast": build_tiny_ast(root / "ast")}


@pytest.fixture(scope="module")
def checkpoints(root: Path) -> dict[str, Path]:
    return _builders(root / "weights")


# One weight every family has, under its saved name, and the name transformers reports it by.
DELETED = {family: ("encoder.layers.0.attention.k_proj.weight",) * 2 for family in FAMILIES}
DELETED["ast"] = ("audio_spectrogram_transformer.encoder.layer.0.attention.attention.key.weight",
                  "layers.0.attention.k_proj.weight")  # ASTModel's own key names


@pytest.mark.parametrize("family", [*FAMILIES, "ast"])
def test_a_deleted_weight_is_refused_naming_it(tmp_path: Path, checkpoints: dict[str, Path], family: str) -> None:
    directory = shutil.copytree(checkpoints[family], tmp_path / family)
    saved, reported = DELETED[family]
    edit_weights(directory / "model.safetensors", delete=saved)
    with pytest.raises(MarbleEvalError, match=rf"model.safetensors: missing weight '{re.escape(reported)}' "
                                              rf"\(1 missing\)") as error:
        load_model(str(directory))
    assert "\n" not in str(error.value) and f"not a {family!r} checkpoint" in str(error.value)


@pytest.mark.parametrize("family", [*FAMILIES, "ast"])
def test_an_extra_weight_is_refused_naming_it(tmp_path: Path, checkpoints: dict[str, Path], family: str) -> None:
    directory = shutil.copytree(checkpoints[family], tmp_path / family)
    key = "encoder.layers.0.attention.extra_proj.weight"
    edit_weights(directory / "model.safetensors", add=key)
    with pytest.raises(MarbleEvalError, match=rf"unexpected weight '{re.escape(key)}' \(1 unexpected\)") as error:
        load_model(str(directory))
    assert "\n" not in str(error.value)


def test_a_weight_of_the_wrong_shape_is_refused_naming_it(tmp_path: Path) -> None:
    directory = build_tiny_wav2vec2_style(tmp_path / "shape", "hubert")
    key = "encoder.layers.1.attention.q_proj.weight"
    edit_weights(directory / "model.safetensors", delete=key, add=key)  # zeros(3) in place of [32, 32]
    with pytest.raises(MarbleEvalError, match=rf"weight '{re.escape(key)}' has shape \(3,\) but config.json makes "
                                              rf"it \(32, 32\) \(1 mismatched\)"):
        load_model(str(directory))


def test_unknown_pooling_and_pooling_of_a_time_pooled_family_are_one_line_errors(checkpoints) -> None:
    with pytest.raises(MarbleEvalError, match="unknown pooling 'mean'; known: patch-mean, cls, .*cls-dist-patch-mean"):
        load_model(str(checkpoints["ast"]), pooling="mean")
    with pytest.raises(MarbleEvalError, match="pooling 'cls': family 'hubert' mean-pools .*applies to ast, maest"):
        load_model(str(checkpoints["hubert"]), pooling="cls")


def test_the_package_never_imports_test_only_code() -> None:
    imported = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update((alias.name.split(".")[0], path.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add((node.module.split(".")[0], path.name))
    assert {"tiny_ast", "tiny_generic", "conftest"} <= TEST_ONLY_MODULES
    offenders = sorted((module, name) for module, name in imported if module in TEST_ONLY_MODULES | {"tests"})
    assert not offenders
