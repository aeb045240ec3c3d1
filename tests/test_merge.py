"""Task arithmetic (`marble-eval merge`) and the model catalog (`marble-eval models`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from marble_eval.cli import merge as merge_cli
from marble_eval.cli import models as models_cli
from marble_eval.errors import MarbleEvalError
from marble_eval.models import load_model
from marble_eval.models.catalog import CATALOG, catalog_entry
from marble_eval.models.families.maest_frontend import WINDOW_SECONDS
from marble_eval.models.hub import ResolvedModel, fingerprint
from marble_eval.models.merge import CheckpointTensors, merge_checkpoints, task_arithmetic
from marble_eval.models.registry import FAMILIES
from marble_eval.models.tiny import build_tiny_mert
from tiny_ast import build_tiny_maest


def _model(path: Path) -> ResolvedModel:
    return ResolvedModel(str(path), path, None)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return dict(CheckpointTensors(_model(path)))


@pytest.fixture(scope="module")
def merts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A .bin base (legacy weight-norm names) and two same-architecture 'fine-tuned' models."""
    root = tmp_path_factory.mktemp("merge-inputs")
    return {"base": build_tiny_mert(root / "base", weights="bin", seed=0, layers=2),
            "ft1": build_tiny_mert(root / "ft1", weights="safetensors", seed=1, layers=2, layerdrop=0.0),
            "ft2": build_tiny_mert(root / "ft2", weights="bin", seed=2, layers=2)}


def _merge(merts: dict[str, Path], names: list[str], lam: float, output: Path) -> dict[str, torch.Tensor]:
    merge_checkpoints(_model(merts["base"]), [_model(merts[n]) for n in names], lam, output)
    return load_file(str(output / "model.safetensors"))


def test_lambda_zero_gives_the_base_with_its_key_names(merts: dict[str, Path], tmp_path: Path) -> None:
    merged = _merge(merts, ["ft1", "ft2"], 0.0, tmp_path / "zero")
    base = torch.load(merts["base"] / "pytorch_model.bin", weights_only=True)
    assert sorted(merged) == sorted(base)  # same names, legacy weight_g / weight_v included
    assert any(key.endswith("weight_g") for key in merged)
    for key in base:
        assert torch.equal(merged[key], base[key]), key


def test_one_model_with_lambda_one_gives_that_model(merts: dict[str, Path], tmp_path: Path) -> None:
    merged = _merge(merts, ["ft1"], 1.0, tmp_path / "one")
    target = load_file(str(merts["ft1"] / "model.safetensors"))
    for key in target:
        torch.testing.assert_close(merged[key], target[key], rtol=0, atol=1e-7)


def test_linear_in_lambda_and_sums_the_task_vectors(merts: dict[str, Path], tmp_path: Path) -> None:
    base = _tensors(merts["base"])
    fts = [_tensors(merts["ft1"]), _tensors(merts["ft2"])]
    half = _merge(merts, ["ft1", "ft2"], 0.2, tmp_path / "a")
    full = _merge(merts, ["ft1", "ft2"], 0.4, tmp_path / "b")
    for key in base:
        b = base[key].double()
        expected = b + 0.2 * ((fts[0][key].double() - b) + (fts[1][key].double() - b))
        torch.testing.assert_close(half[key].double(), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close((full[key].double() - b), 2 * (half[key].double() - b), rtol=0, atol=2e-6)


def test_mismatched_architectures_are_refused(merts: dict[str, Path], tmp_path: Path) -> None:
    wider = build_tiny_mert(tmp_path / "wide", weights="safetensors", seed=3, layers=2, hidden_size=48)
    with pytest.raises(MarbleEvalError, match=r"wide/config.json: field 'conv_dim' is .* but the base has"):
        merge_checkpoints(_model(merts["base"]), [_model(wider)], 0.2, tmp_path / "out1")
    deeper = build_tiny_mert(tmp_path / "deep", weights="safetensors", seed=3, layers=3)
    with pytest.raises(MarbleEvalError, match="field 'num_hidden_layers' is 3 but the base has 2"):
        merge_checkpoints(_model(merts["base"]), [_model(deeper)], 0.2, tmp_path / "out2")
    partial = build_tiny_mert(tmp_path / "partial", weights="safetensors", seed=3, layers=2)
    state = load_file(str(partial / "model.safetensors"))
    del state["encoder.layers.1.final_layer_norm.bias"]
    save_file(state, str(partial / "model.safetensors"))
    with pytest.raises(MarbleEvalError, match="lacks the base's key 'encoder.layers.1.final_layer_norm.bias'"):
        merge_checkpoints(_model(merts["base"]), [_model(partial)], 0.2, tmp_path / "out3")
    with pytest.raises(MarbleEvalError, match="maest.*field 'architectures'"):
        merge_checkpoints(_model(merts["base"]), [_model(build_tiny_maest(tmp_path / "maest"))], 0.2, tmp_path / "o4")
    assert not any((tmp_path / name).exists() for name in ("out1", "out2", "out3", "o4"))


def test_non_float_tensors_are_copied_and_must_agree() -> None:
    base = {"w": torch.ones(3, dtype=torch.float16), "ids": torch.arange(4)}
    ft = {"w": torch.full((3,), 3.0, dtype=torch.float16), "ids": torch.arange(4)}
    merged, n_float, n_copied = task_arithmetic(base, [ft], 0.5)
    assert (n_float, n_copied) == (1, 1)
    assert merged["w"].dtype == torch.float16 and torch.equal(merged["w"], torch.full((3,), 2.0, dtype=torch.float16))
    assert torch.equal(merged["ids"], base["ids"])
    with pytest.raises(MarbleEvalError, match="non-float tensor 'ids' differs"):
        task_arithmetic(base, [{**ft, "ids": torch.arange(1, 5)}], 0.5)


def test_merged_checkpoint_loads_embeds_and_records_provenance(merts: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "merged"
    _merge(merts, ["ft1", "ft2"], 0.2, output)
    assert sorted(p.name for p in output.iterdir()) == ["config.json", "marble_eval_merge.json", "model.safetensors",
                                                       "preprocessor_config.json"]
    assert (output / "config.json").read_bytes() == (merts["base"] / "config.json").read_bytes()
    provenance = json.loads((output / "marble_eval_merge.json").read_text())
    assert provenance["lambda"] == 0.2 and provenance["base"]["fingerprint"] == fingerprint(_model(merts["base"]))
    fingerprints = [fingerprint(_model(merts[name])) for name in ("ft1", "ft2")]
    assert [entry["fingerprint"] for entry in provenance["finetuned"]] == fingerprints
    encoder = load_model(str(output))
    assert provenance["output_fingerprint"] == encoder.info.fingerprint
    assert encoder.info.family == "mert"
    wave = np.random.default_rng(0).standard_normal(24000).astype(np.float32)
    merged, _ = encoder.embed_windows([wave])
    base, _ = load_model(str(merts["base"])).embed_windows([wave])
    assert merged.shape == base.shape == (1, 3, 32) and np.abs(merged - base).max() > 1e-4


def test_merge_of_maest_checkpoints_keeps_the_4x_layout(tmp_path: Path) -> None:
    base, ft = build_tiny_maest(tmp_path / "b", seed=0), build_tiny_maest(tmp_path / "f", seed=1, weights="bin")
    merge_checkpoints(_model(base), [_model(ft)], 0.5, tmp_path / "m")
    merged_keys = load_file(str(tmp_path / "m" / "model.safetensors")).keys()
    assert sorted(merged_keys) == sorted(load_file(str(base / "model.safetensors")))
    encoder = load_model(str(tmp_path / "m"))
    assert encoder.info.family == "maest" and not (tmp_path / "m" / "feature_extraction_maest.py").exists()
    assert encoder.embed_windows([np.zeros(16000 * 5, dtype=np.float32)])[0].shape == (1, 3, 32)


def test_existing_output_is_refused(merts: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(MarbleEvalError, match="busy: exists and is not an empty directory"):
        merge_checkpoints(_model(merts["base"]), [_model(merts["ft1"])], 0.2, tmp_path / "busy")


def _cli(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.run(args)


def test_merge_command(merts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "cli"
    assert _cli(merge_cli, ["merge", "--base", str(merts["base"]), "--finetuned", str(merts["ft1"]),
                            str(merts["ft2"]), "--lambda", "0.2", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "of 2 fine-tuned model(s)" in printed and "lambda 0.2" in printed
    assert json.loads((output / "marble_eval_merge.json").read_text())["output_fingerprint"] in printed


def test_models_command_and_catalog(capsys: pytest.CaptureFixture) -> None:
    assert _cli(models_cli, ["models"]) == 0
    printed = capsys.readouterr().out
    for model_id in ("m-a-p/MERT-v1-95M", "m-a-p/MERT-v1-330M", "ntua-slp/CultureMERT-95M",
                     "ntua-slp/CultureMERT-TA-95M", "mtg-upf/discogs-maest-30s-pw-129e"):
        assert model_id in printed
    assert _cli(models_cli, ["models", "--family", "maest", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(row["family"] == "maest" and row["dim"] == 768 for row in rows)
    assert len({entry.model_id for entry in CATALOG}) == len(CATALOG)
    assert all(entry.family in FAMILIES for entry in CATALOG)
    assert {e.window_seconds for e in CATALOG if e.family == "maest"} <= set(WINDOW_SECONDS.values())
    assert catalog_entry("m-a-p/MERT-v1-330M@main").n_hidden_states == 25 and catalog_entry("x/y") is None
