"""MuQ, Dasheng, MusicFM, Whisper and Qwen2-Audio: exact against the original code, strict loading, catalog.

tests/data/reference_models/{muq,dasheng} were made by scripts/make_model_references.py with muq 0.1.0
on transformers 4.x and with Dasheng's Hugging Face port: tiny random checkpoints in the hub layout and
every hidden state those codes computed for reference_wave(2.5 s).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from marble_eval.cli import main
from marble_eval.errors import MarbleEvalError
from marble_eval.models import load_model
from marble_eval.models.hub import fingerprint, resolve_model

REPO = Path(__file__).resolve().parents[1]
REFERENCES = Path(__file__).resolve().parent / "data" / "reference_models"
RATES = {"muq": 24000, "dasheng": 16000}
_spec = importlib.util.spec_from_file_location("make_model_references", REPO / "scripts" / "make_model_references.py")
make_model_references = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_model_references)


def _reference(family: str) -> tuple[list[np.ndarray], np.ndarray]:
    saved = np.load(REFERENCES / family / "hidden_states.npz")
    states = [saved[f"state_{i}"] for i in range(len(saved.files))]
    return states, make_model_references.reference_wave(2.5, RATES[family])


@pytest.mark.parametrize("family", ["muq", "dasheng"])
def test_every_hidden_state_equals_the_original_codes(family):
    states, wave = _reference(family)
    model = load_model(str(REFERENCES / family))
    assert model.info.family == family and model.info.n_hidden_states == len(states)
    with torch.inference_mode():
        ours = model.module.hidden_states(torch.from_numpy(wave)[None])
    assert len(ours) == len(states)
    for index, (mine, theirs) in enumerate(zip(ours, states)):
        assert mine.shape[1:] == theirs.shape, index
        assert np.abs(mine[0].numpy() - theirs).max() < 1e-5, index
    assert model.n_frames(len(wave)) == states[0].shape[0]


@pytest.mark.parametrize("family", ["muq", "dasheng"])
def test_cli_embed_whole_file_matches_the_original_codes(tmp_path, family, capsys):
    states, wave = _reference(family)
    audio = tmp_path / "input.wav"
    sf.write(audio, wave, RATES[family], subtype="FLOAT")
    out = tmp_path / "out.npz"
    rc = main(["embed", "--model", str(REFERENCES / family), "--precision", "fp32", "--window-seconds", "0",
               "--output", str(out), "--no-progress", str(audio)])
    assert rc == 0, capsys.readouterr().err
    features = np.load(out)["features"][0]
    expected = np.stack([state.mean(axis=0) for state in states])
    assert features.shape == expected.shape
    assert np.abs(features - expected).max() < 1e-5


def test_dasheng_reference_spans_several_segments():
    config = json.loads((REFERENCES / "dasheng" / "config.json").read_text())
    segment = config["encoder_kwargs"]["target_length"]
    mel_frames = 1 + len(_reference("dasheng")[1]) // 160
    assert mel_frames > 2 * segment and mel_frames % segment  # three segments, the last one padded


@pytest.mark.parametrize(("family", "key"), [("muq", "model.conformer.layers.1.self_attn.linear_q.weight"),
                                             ("dasheng", "encoder.blocks.1.attn.qkv.weight")])
def test_a_deleted_weight_is_refused_with_exit_2_naming_it(tmp_path, family, key, capsys):
    directory = shutil.copytree(REFERENCES / family, tmp_path / family)
    state = load_file(str(directory / "model.safetensors"))
    del state[key]
    save_file(state, str(directory / "model.safetensors"))
    assert main(["info", "--model", str(directory)]) == 2
    err = capsys.readouterr().err.strip()
    bare = key.removeprefix("model.")
    assert len(err.splitlines()) == 1 and f"missing weight '{bare}'" in err and "model.safetensors" in err


@pytest.mark.parametrize("family", ["muq", "dasheng"])
def test_an_unknown_weight_is_refused_but_training_only_ones_are_not(tmp_path, family):
    directory = shutil.copytree(REFERENCES / family, tmp_path / family)
    state = load_file(str(directory / "model.safetensors"))
    prefix = "model." if family == "muq" else ""
    if family == "muq":  # the training-only weights the real checkpoint carries are in the tiny one too
        assert {"model.linear.weight", "model.cls_token", "model.quantizer_melspec_2048.codebook"} <= set(state)
    state[f"{prefix}encoder.extra.weight"] = torch.zeros(3)
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(MarbleEvalError, match=r"unexpected weight 'encoder\.extra\.weight'"):
        load_model(str(directory))


def test_a_wrongly_shaped_weight_is_refused(tmp_path):
    directory = shutil.copytree(REFERENCES / "dasheng", tmp_path / "d")
    state = load_file(str(directory / "model.safetensors"))
    state["encoder.norm.weight"] = torch.ones(7)
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(MarbleEvalError, match=r"weight 'encoder\.norm\.weight' has shape \(7,\)"):
        load_model(str(directory))


@pytest.mark.parametrize("family", ["muq", "dasheng"])
def test_a_truncated_safetensors_file_is_one_line_and_exit_2(tmp_path, family, capsys):
    directory = shutil.copytree(REFERENCES / family, tmp_path / family)
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    assert main(["info", "--model", str(directory)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(weights) in err and "truncated or corrupt" in err


@pytest.mark.parametrize("layout", ["safetensors", "bin"])
def test_a_truncated_mert_weights_file_is_one_line_and_exit_2(tmp_path, tiny_mert_dirs, layout, capsys):
    directory = shutil.copytree(tiny_mert_dirs[layout], tmp_path / "m")
    weights = directory / ("model.safetensors" if layout == "safetensors" else "pytorch_model.bin")
    weights.write_bytes(weights.read_bytes()[:-100])
    assert main(["info", "--model", str(directory)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(weights) in err and "truncated or corrupt" in err


def test_a_truncated_musicfm_checkpoint_is_one_line(tmp_path):
    directory = build_tiny_musicfm(tmp_path / "m")
    weights = directory / "pretrained_msd.pt"
    weights.write_bytes(weights.read_bytes()[:-50])
    with pytest.raises(MarbleEvalError, match=r"pretrained_msd\.pt: not a readable torch file"):
        load_model(str(directory))


# --- MusicFM, Whisper, Qwen2-Audio: tiny checkpoints in the released layouts ---------------------------

def build_tiny_musicfm(directory: Path, extra: dict | None = None) -> Path:
    """MusicFM's release layout: pretrained_msd.pt ({'state_dict': {'model.*': ...}}) and msd_stats.json."""
    from transformers import Wav2Vec2ConformerConfig

    from marble_eval.models.families.mel_conformer import MelConformer

    directory.mkdir(parents=True)
    config = Wav2Vec2ConformerConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=16,
                                     intermediate_size=64, hidden_act="swish", position_embeddings_type="rotary",
                                     conv_depthwise_kernel_size=31, num_conv_pos_embeddings=16,
                                     num_conv_pos_embedding_groups=4)
    torch.manual_seed(3)
    net = MelConformer(config, conv_dim=8, n_mels=128, mean=6.0, std=18.0)
    state = {f"model.{key}": value for key, value in net.state_dict().items()}
    state.update({"model.linear.weight": torch.zeros(64, 32), "model.linear.bias": torch.zeros(64),
                  "model.cls_token": torch.zeros(32), "model.quantizer_melspec_2048_0.codebook": torch.zeros(64, 16),
                  "model.preprocessor_melspec_2048.mel_stft.mel_scale.fb": net.mel.filters.clone(),
                  "model.preprocessor_melspec_2048.mel_stft.spectrogram.window": torch.hann_window(2048)})
    torch.save({"state_dict": state, "epoch": 3, **(extra or {})}, directory / "pretrained_msd.pt")
    (directory / "msd_stats.json").write_text(json.dumps({"melspec_2048_cnt": 1, "melspec_2048_mean": 6.5,
                                                          "melspec_2048_std": 18.5}))
    return directory


def build_tiny_whisper(directory: Path) -> Path:
    """openai/whisper-* layout: WhisperForConditionalGeneration's save plus its feature extractor."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    config = WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                           vocab_size=120, max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                           decoder_start_token_id=1)
    torch.manual_seed(4)
    WhisperForConditionalGeneration(config).save_pretrained(str(directory))
    WhisperFeatureExtractor(feature_size=80).save_pretrained(str(directory))
    return directory


def build_tiny_qwen2_audio(directory: Path) -> Path:
    """Qwen/Qwen2-Audio-7B layout: sharded safetensors with audio_tower.*, multi_modal_projector.* and
    language_model.* keys (as the hub files name them) and a model.safetensors.index.json."""
    from transformers import Qwen2AudioConfig, Qwen2AudioEncoder, WhisperFeatureExtractor

    directory.mkdir(parents=True)
    config = Qwen2AudioConfig(
        audio_config={"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 64,
                      "num_mel_bins": 128},
        text_config={"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 150})
    torch.manual_seed(5)
    tower = Qwen2AudioEncoder(config.audio_config)
    shard_1 = {f"audio_tower.{key}": value.contiguous() for key, value in tower.state_dict().items()}
    shard_2 = {"multi_modal_projector.linear.weight": torch.randn(32, 32),
               "language_model.model.embed_tokens.weight": torch.randn(150, 32),
               "language_model.lm_head.weight": torch.randn(150, 32)}
    names = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    for name, shard in zip(names, (shard_1, shard_2)):
        save_file(shard, str(directory / name), metadata={"format": "pt"})
    weight_map = {key: names[0] for key in shard_1} | {key: names[1] for key in shard_2}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (directory / "config.json").write_text(config.to_json_string())
    WhisperFeatureExtractor(feature_size=128).save_pretrained(str(directory))
    return directory


BUILDERS = {"musicfm": build_tiny_musicfm, "whisper": build_tiny_whisper, "qwen2-audio": build_tiny_qwen2_audio}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoders")
    return {family: build(root / family) for family, build in BUILDERS.items()}


@pytest.mark.parametrize(("family", "states", "rate"), [("musicfm", 4, 24000), ("whisper", 3, 16000),
                                                         ("qwen2-audio", 3, 16000)])
def test_tiny_checkpoints_in_the_released_layouts_load_and_embed(tiny_dirs, family, states, rate):
    model = load_model(str(tiny_dirs[family]))
    assert (model.info.family, model.info.n_hidden_states, model.info.dim, model.info.sample_rate) == \
        (family, states, 32, rate)
    assert model.info.native_window_seconds == 30.0
    rng = np.random.default_rng(0)
    windows = [rng.standard_normal(rate * 2).astype(np.float32) * 0.1, rng.standard_normal(rate).astype(np.float32)]
    features, frames = model.embed_windows(windows)
    assert features.shape == (2, states, 32) and np.isfinite(features).all()
    assert frames.tolist() == [model.n_frames(rate * 2), model.n_frames(rate)] and frames[0] > frames[1] > 0


def test_whisper_states_are_the_stock_encoders_over_real_frames(tiny_dirs):
    from transformers import WhisperModel

    model = load_model(str(tiny_dirs["whisper"]))
    stock = WhisperModel.from_pretrained(str(tiny_dirs["whisper"])).encoder.eval()
    wave = np.sin(np.arange(16000 * 3) / 7.0).astype(np.float32) * 0.3
    with torch.inference_mode():
        batch = torch.from_numpy(wave)[None]
        ours, lengths = model.module.hidden_states(batch)
        reference = stock(model.module.features(batch), output_hidden_states=True)
        pooled = model.pooled_states(batch)[0]
    assert lengths[0] == 150 and reference.last_hidden_state.shape[1] == 1500  # 3 s of 30: 150 real frames
    torch.testing.assert_close(ours[-1], reference.last_hidden_state)
    if reference.hidden_states is not None:
        for mine, theirs in zip(ours[:-1], reference.hidden_states[:-1]):
            torch.testing.assert_close(mine, theirs)
    torch.testing.assert_close(pooled[-1], reference.last_hidden_state[0, :150].mean(0))
    assert "real audio" in model.info.extra["frame_pooling"]


def test_qwen2_audio_reads_only_the_audio_tower(tiny_dirs, tmp_path):
    directory = shutil.copytree(tiny_dirs["qwen2-audio"], tmp_path / "q")
    # A language-model shard that cannot even be opened: never touched beyond its header.
    lm_shard = directory / "model-00002-of-00002.safetensors"
    state = load_file(str(lm_shard))
    state["language_model.model.layers.0.mlp.up_proj.weight"] = torch.zeros(64, 32)
    save_file(state, str(lm_shard))
    model = load_model(str(directory))
    assert sum(p.numel() for p in model.module.parameters()) == model.info.n_parameters
    assert model.info.n_parameters < 200_000  # the tower only


def test_a_deleted_tower_weight_is_refused(tmp_path, tiny_dirs):
    directory = shutil.copytree(tiny_dirs["qwen2-audio"], tmp_path / "q")
    shard = directory / "model-00001-of-00002.safetensors"
    state = load_file(str(shard))
    del state["audio_tower.layers.1.fc1.weight"]
    save_file(state, str(shard))
    with pytest.raises(MarbleEvalError, match=r"missing weight 'layers\.1\.fc1\.weight'"):
        load_model(str(directory))


def test_musicfm_refuses_a_checkpoint_that_needs_unpickling(tmp_path):
    marker = tmp_path / "pickle-ran"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    directory = build_tiny_musicfm(tmp_path / "m", extra={"hyper_parameters": Exploit()})
    with pytest.raises(MarbleEvalError, match=r"pretrained_msd\.pt: not a plain tensor file"):
        load_model(str(directory))
    assert not marker.exists()


def test_musicfm_statistics_are_used_and_fingerprinted(tmp_path, tiny_dirs):
    a = load_model(str(tiny_dirs["musicfm"]))
    assert (a.module.mean, a.module.std) == (6.5, 18.5) and a.info.extra["checkpoint"] == "pretrained_msd.pt"
    directory = shutil.copytree(tiny_dirs["musicfm"], tmp_path / "m")
    (directory / "msd_stats.json").write_text(json.dumps({"melspec_2048_mean": 1.0, "melspec_2048_std": 2.0}))
    assert fingerprint(resolve_model(str(directory))) != a.info.fingerprint


# --- catalog, built-ins, hub cache ------------------------------------------------------------------------

def test_models_lists_the_new_families_and_every_built_in_name(capsys):
    assert main(["models", "--json"]) == 0
    entries = {entry["model_id"]: entry for entry in json.loads(capsys.readouterr().out)}
    expected = {"OpenMuQ/MuQ-large-msd-iter": ("muq", "CC BY-NC 4.0"), "mispeech/dasheng-base": ("dasheng", "Apache-2.0"),
                "minzwon/MusicFM": ("musicfm", "MIT"), "openai/whisper-large-v3": ("whisper", "Apache-2.0"),
                "Qwen/Qwen2-Audio-7B": ("qwen2-audio", "Apache-2.0"), "m-a-p/MERT-v1-95M": ("mert", "CC BY-NC 4.0")}
    for model_id, (family, licence) in expected.items():
        assert (entries[model_id]["family"], entries[model_id]["licence"]) == (family, licence)
    assert entries["mispeech/dasheng-base"]["native_window_seconds"] == 10.08
    from marble_eval.models.tiny import BUILT_IN_MODELS

    assert set(BUILT_IN_MODELS) <= set(entries)


def test_fixture_pre_ln_is_a_loadable_pre_layer_norm_built_in(tmp_path):
    model = load_model("fixture-pre-ln", root=tmp_path)
    plain = load_model("fixture", root=tmp_path)
    assert model.info.extra["pre_layer_norm"] is True and plain.info.extra["pre_layer_norm"] is False
    assert model.info.licence.startswith("none") and model.info.fingerprint != plain.info.fingerprint


def test_a_muq_hub_id_loads_and_evaluates_offline_from_the_hf_cache(tmp_path):
    from test_models_mert import _fake_hub_cache

    hf_home = tmp_path / "hf"
    commit = _fake_hub_cache(hf_home, "OpenMuQ/MuQ-large-msd-iter", REFERENCES / "muq")
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "MARBLE_EVAL_HOME": str(tmp_path / "me"),
           "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "marble_eval", "info", "--model", "OpenMuQ/MuQ-large-msd-iter",
                             "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["family"], info["revision"], info["licence"], info["native_window_seconds"]) == \
        ("muq", commit, "CC BY-NC 4.0", 30.0)
    evaluation = subprocess.run([sys.executable, "-m", "marble_eval", "eval", "--model", "OpenMuQ/MuQ-large-msd-iter",
                                 "--dataset", "fixture", "--limit", "12", "--seeds", "1", "--grid", "quick", "--no-progress",
                                 "--results-dir", str(tmp_path / "results")],
                                capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert evaluation.returncode == 0, evaluation.stderr[-2000:]
    written = list((tmp_path / "results").rglob("*.json"))
    assert written and any('"muq"' in path.read_text() for path in written)


def test_qwen2_audio_hub_id_needs_only_the_towers_shard_offline(tmp_path, tiny_dirs):
    from test_models_mert import _fake_hub_cache

    source = shutil.copytree(tiny_dirs["qwen2-audio"], tmp_path / "source")
    local = fingerprint(resolve_model(str(source)))
    assert load_model(str(source)).info.fingerprint != local  # the tower's shard only, not the whole checkpoint
    (source / "model-00002-of-00002.safetensors").unlink()  # the language model's shard was never downloaded
    hf_home = tmp_path / "hf"
    _fake_hub_cache(hf_home, "Qwen/Qwen2-Audio-7B", source)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "MARBLE_EVAL_HOME": str(tmp_path / "me"),
           "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "marble_eval", "info", "--model", "Qwen/Qwen2-Audio-7B", "--json"],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["family"] == "qwen2-audio" and info["licence"] == "Apache-2.0"
    assert info["fingerprint"] == load_model(str(tiny_dirs["qwen2-audio"])).info.fingerprint


@pytest.mark.parametrize("family", ["muq", "dasheng", "musicfm", "whisper", "qwen2-audio"])
def test_a_fixture_eval_runs_with_each_new_family(tmp_path, tiny_dirs, family, one_torch_thread):
    import marble_eval

    directory = REFERENCES / family if family in RATES else tiny_dirs[family]
    result = marble_eval.evaluate(str(directory), "fixture", seeds=1, grid="quick")
    text = json.dumps(result, default=str) if not hasattr(result, "model_dump_json") else result.model_dump_json()
    assert re.search(rf'"family":\s*"{re.escape(family)}"', text)
