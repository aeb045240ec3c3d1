"""MERT-family loading: native HubertModel, legacy keys, pre-LN, refusals, hub cache offline, no remote code."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from marble_eval.errors import MarbleEvalError
from marble_eval.models import load_model
from marble_eval.models.hub import fingerprint, resolve_model
from marble_eval.models.tiny import build_tiny_mert
from tiny_generic import edit_weights

REPO = Path(__file__).resolve().parents[1]


def _windows(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(24000 * 2).astype(np.float32), rng.standard_normal(24000).astype(np.float32)]


def test_legacy_bin_and_safetensors_give_identical_states(tiny_mert_dirs):
    a = load_model(str(tiny_mert_dirs["bin"]))
    b = load_model(str(tiny_mert_dirs["safetensors"]))
    states_a, frames = a.embed_windows(_windows())
    states_b, _ = b.embed_windows(_windows())
    assert states_a.shape == (2, 5, 32)
    np.testing.assert_array_equal(states_a, states_b)
    # 24 kHz at hop 320: 75 frames per second, minus the conv edges.
    assert frames.tolist() == [149, 74]


def test_legacy_weight_norm_keys_are_loaded_not_reinitialised(tiny_mert_dirs):
    model = load_model(str(tiny_mert_dirs["bin"]))
    saved = torch.load(tiny_mert_dirs["bin"] / "pytorch_model.bin", weights_only=True)
    expected = torch._weight_norm(saved["encoder.pos_conv_embed.conv.weight_v"],
                                  saved["encoder.pos_conv_embed.conv.weight_g"], 2)
    torch.testing.assert_close(model.module.encoder.pos_conv_embed.conv.weight, expected)


def test_pre_layer_norm_last_state_includes_the_final_layer_norm(tiny_mert_dirs):
    model = load_model(str(tiny_mert_dirs["pre_ln"]))
    batch = torch.from_numpy(model.preprocess(_windows()[0]))[None]
    with torch.inference_mode():
        out = model.module(batch, output_hidden_states=True)
        last = out.hidden_states[-1]
        # Recompute: the last layer applied to the previous state, then the encoder's final LayerNorm.
        layer_out = model.module.encoder.layers[-1](out.hidden_states[-2])
        layer_out = layer_out[0] if isinstance(layer_out, tuple) else layer_out
        manual = model.module.encoder.layer_norm(layer_out)
    torch.testing.assert_close(last, manual)
    torch.testing.assert_close(last, out.last_hidden_state)
    # Fresh LayerNorm (weight 1, bias 0): every frame has zero mean and unit variance.
    assert last.mean(-1).abs().max() < 1e-4 and (last.std(-1, unbiased=False) - 1).abs().max() < 1e-3


@pytest.mark.parametrize("name", ["safetensors", "pre_ln"])
def test_a_deleted_weight_is_refused_naming_it(tmp_path, tiny_mert_dirs, name):
    directory = shutil.copytree(tiny_mert_dirs[name], tmp_path / "m")
    key = "encoder.layers.0.attention.k_proj.weight"
    edit_weights(directory / "model.safetensors", delete=key)
    with pytest.raises(MarbleEvalError, match=rf"model.safetensors: missing weight '{re.escape(key)}' \(1 missing\) "
                                              rf"needed by HubertModel") as error:
        load_model(str(directory))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["safetensors", "pre_ln"])
def test_an_extra_weight_is_refused_naming_it(tmp_path, tiny_mert_dirs, name):
    directory = shutil.copytree(tiny_mert_dirs[name], tmp_path / "m")
    key = "encoder.layers.0.attention.extra_proj.weight"
    edit_weights(directory / "model.safetensors", add=key)
    with pytest.raises(MarbleEvalError, match=rf"unexpected weight '{re.escape(key)}' \(1 unexpected\)") as error:
        load_model(str(directory))
    assert "\n" not in str(error.value)


def test_a_deleted_legacy_weight_norm_key_is_refused(tmp_path):
    directory = build_tiny_mert(tmp_path / "m", weights="bin")
    state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    del state["encoder.pos_conv_embed.conv.weight_g"]
    torch.save(state, directory / "pytorch_model.bin")
    with pytest.raises(MarbleEvalError, match=r"pytorch_model.bin: missing weight "
                       r"'encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0' \(1 missing\)"):
        load_model(str(directory))


@pytest.mark.parametrize("field", ["deepnorm", "feature_extractor_cqt"])
def test_math_changing_fields_are_refused_by_name(tmp_path, field):
    directory = build_tiny_mert(tmp_path / "m", weights="safetensors", **{field: True})
    with pytest.raises(MarbleEvalError, match=field):
        load_model(str(directory))


def test_weights_only_load_refuses_a_pickle_with_code(tmp_path):
    directory = build_tiny_mert(tmp_path / "m", weights="bin")
    marker = tmp_path / "pickle-ran"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    state["evil"] = Exploit()
    torch.save(state, directory / "pytorch_model.bin")
    with pytest.raises(Exception):
        load_model(str(directory))
    assert not marker.exists()


def test_remote_code_files_are_never_imported(tmp_path):
    directory = build_tiny_mert(tmp_path / "m", weights="safetensors")
    marker = tmp_path / "remote-code-ran"
    for name in ("modeling_MERT.py", "configuration_MERT.py"):
        (directory / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    model = load_model(str(directory))
    assert model.info.family == "mert"
    assert not marker.exists()


def test_fingerprint_follows_weights_and_config(tmp_path):
    a = build_tiny_mert(tmp_path / "a", weights="safetensors", seed=0)
    b = build_tiny_mert(tmp_path / "b", weights="safetensors", seed=0)
    c = build_tiny_mert(tmp_path / "c", weights="safetensors", seed=1)
    fa, fb, fc = (fingerprint(resolve_model(str(d))) for d in (a, b, c))
    assert fa == fb != fc
    config = json.loads((b / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (b / "config.json").write_text(json.dumps(config))
    assert fingerprint(resolve_model(str(b))) != fa


def test_unknown_model_is_a_one_line_error():
    with pytest.raises(MarbleEvalError, match="neither a directory nor a hub id"):
        load_model("no-such-model")


def _fake_hub_cache(hf_home: Path, repo_id: str, source: Path) -> str:
    """Lay out ``source`` files as huggingface_hub's cache does (blobs, snapshots, refs)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in source.iterdir():
        blob = repo / "blobs" / f"blob-{file.name}"
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit


def test_hub_id_resolves_from_the_hf_cache_offline(tmp_path, tiny_mert_dirs):
    hf_home = tmp_path / "hf"
    commit = _fake_hub_cache(hf_home, "ntua-slp/CultureMERT-95M", tiny_mert_dirs["safetensors"])
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "MARBLE_EVAL_HOME": str(tmp_path / "me")}
    result = subprocess.run([sys.executable, "-m", "marble_eval", "info", "--model", "ntua-slp/CultureMERT-95M",
                             "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["family"] == "mert" and info["revision"] == commit
    assert info["fingerprint"] == fingerprint(resolve_model(str(tiny_mert_dirs["safetensors"])))
    missing = subprocess.run([sys.executable, "-m", "marble_eval", "info", "--model", "m-a-p/MERT-v1-95M"],
                             capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert missing.returncode == 2
    assert "not in the Hugging Face cache" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
