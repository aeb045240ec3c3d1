"""Extraction precision: fp32 (the reference) by default on every device; bf16/fp16 opt-in; "auto" = fp32."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from marble_eval.cli import build_parser, main
from marble_eval.cli.common import resolve_precision
from marble_eval.features.extract import ExtractSettings
from marble_eval.protocol import known_protocols, resolve_protocol


@pytest.mark.parametrize("command", ["extract", "embed", "probe"])
def test_the_command_line_default_is_fp32(command) -> None:
    argv = {"extract": ["extract", "--model", "m", "--dataset", "d"],
            "embed": ["embed", "--model", "m", "--output", "x.npz", "a.wav"],
            "probe": ["probe", "--model", "m", "--dataset", "d"]}[command]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.skip(f"`{command}` takes other required arguments")
    if not hasattr(args, "precision"):
        pytest.skip(f"`{command}` has no --precision")
    assert args.precision is None  # not given: the protocol decides, and every preset says fp32
    assert {resolve_protocol(name).precision for name in known_protocols()} == {"fp32"}
    assert ExtractSettings().precision == "fp32"


@pytest.mark.parametrize("given,expected", [("auto", "fp32"), ("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16")])
def test_auto_is_an_alias_of_fp32_and_explicit_choices_stay(given, expected) -> None:
    args = argparse.Namespace(precision=given, device="cuda")
    resolve_precision(args)
    assert args.precision == expected


def test_tf32_is_left_at_torch_defaults_by_extraction(tiny_mert_dirs, small_fixture_yaml, tmp_path) -> None:
    before = (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
    code = main(["extract", "--model", str(tiny_mert_dirs["safetensors"]), "--dataset", str(small_fixture_yaml),
                 "--data-dir", str(tmp_path / "audio"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0
    assert (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()) == before
    keys = [json.loads(path.read_text()) for path in (tmp_path / "cache").rglob("key.json")]
    assert [key["precision"] for key in keys] == ["fp32"]


def test_normalise_precision_is_the_one_place_aliases_resolve() -> None:
    from marble_eval.errors import MarbleEvalError
    from marble_eval.models.base import PRECISION_CHOICES, PRECISIONS, normalise_precision

    assert normalise_precision(None) == "fp32" and normalise_precision(None, default=None) is None
    assert normalise_precision("auto") == "fp32"
    assert [normalise_precision(p) for p in PRECISIONS] == list(PRECISIONS)
    assert "tf32" in PRECISIONS and "auto" in PRECISION_CHOICES
    with pytest.raises(MarbleEvalError, match="--precision fp64"):
        normalise_precision("fp64")
    args = build_parser().parse_args(["extract", "--model", "m", "--dataset", "d", "--precision", "tf32"])
    assert args.precision == "tf32"


@pytest.mark.parametrize("precision,mode", [("fp32", "ieee"), ("auto", "ieee"), ("tf32", "tf32"), ("bf16", "ieee")])
def test_extraction_sets_tf32_for_matmuls_and_convolutions_only_when_asked(precision, mode) -> None:
    from marble_eval.features.extract import computing_in

    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    opposite = "tf32" if mode == "ieee" else "ieee"
    matmul.fp32_precision = conv.fp32_precision = opposite
    try:
        with computing_in(object(), precision):
            assert (matmul.fp32_precision, conv.fp32_precision) == (mode, mode)
        assert (matmul.fp32_precision, conv.fp32_precision) == (opposite, opposite)
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


def test_tf32_is_opt_in_and_recorded_in_the_cache_key(tiny_mert_dirs, small_fixture_yaml, tmp_path) -> None:
    for precision in ("tf32", "auto"):
        code = main(["extract", "--model", str(tiny_mert_dirs["safetensors"]), "--dataset", str(small_fixture_yaml),
                     "--data-dir", str(tmp_path / "audio"), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
                     "--precision", precision])
        assert code == 0
    keys = sorted(json.loads(path.read_text())["precision"] for path in (tmp_path / "cache").rglob("key.json"))
    assert keys == ["fp32", "tf32"]
