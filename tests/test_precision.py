"""The command line's default precision ("auto"): bf16 only where it was measured to be safe and fast."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import pytest
import torch

from marble_eval.cli import main
from marble_eval.cli.common import resolve_precision
from marble_eval.features.extract import BF16_MIN_DIM, auto_precision, native_bf16
from marble_eval.models import load_model


@pytest.fixture
def info(tiny_mert_dirs):
    return load_model(str(tiny_mert_dirs["safetensors"])).info


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_for_wide_models_on_native_bf16_devices(info, monkeypatch, native) -> None:
    monkeypatch.setattr("marble_eval.features.extract.native_bf16", lambda device: native)
    assert info.dim < BF16_MIN_DIM
    assert auto_precision(info, "cpu") == "fp32"  # narrow test model: bf16 drifts ~37% there
    wide = replace(info, dim=768)
    assert auto_precision(wide, "cpu") == ("bf16" if native else "fp32")


def test_native_bf16_follows_torch_cpu_feature_probes(monkeypatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert native_bf16("cpu") is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert native_bf16("cpu") is True
    assert native_bf16("meta") is False


def test_resolve_precision_replaces_auto_and_keeps_explicit_choices(info, monkeypatch) -> None:
    monkeypatch.setattr("marble_eval.features.extract.native_bf16", lambda device: True)
    wide = replace(info, dim=1024)
    args = argparse.Namespace(precision="auto", device="cpu")
    resolve_precision(args, wide)
    assert args.precision == "bf16"
    args = argparse.Namespace(precision="fp16", device="cpu")
    resolve_precision(args, wide)
    assert args.precision == "fp16"


def test_default_extraction_of_a_narrow_model_records_fp32(tiny_mert_dirs, small_fixture_yaml, tmp_path, capsys) -> None:
    code = main(["extract", "--model", str(tiny_mert_dirs["safetensors"]), "--dataset", str(small_fixture_yaml),
                 "--data-dir", str(tmp_path / "audio"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0
    keys = [json.loads(path.read_text()) for path in (tmp_path / "cache").rglob("key.json")]
    assert [key["precision"] for key in keys] == ["fp32"]
