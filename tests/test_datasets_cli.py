"""`marble-eval datasets` and `marble-eval data describe` on the real reference files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from marble_eval.cli import data as data_cli
from marble_eval.cli import datasets as datasets_cli
from marble_eval.datasets.registry import load_dataset
from tests.cli_helpers import run_subcommands


def reference_root() -> Path:
    env = os.environ.get("MARBLE_EVAL_REFERENCE_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared/reference/datasets"
    if not (path / "SHA256SUMS").is_file():
        pytest.skip(f"reference files not found at {path}; set MARBLE_EVAL_REFERENCE_DIR to shared/reference/datasets")
    return path


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run `marble-eval data ...` and `marble-eval datasets` in-process."""
    return run_subcommands(argv, capsys, data_cli, datasets_cli)


def test_datasets_lists_every_benchmark_with_published_sizes(capsys) -> None:
    code, out, _ = cli(["datasets", "--json"], capsys)
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    assert {"makam", "hindustani", "carnatic", "lyra", "fma", "mtat", "mtat-marble"} <= set(rows)
    assert rows["lyra"]["sizes"] == {"train": 1116, "valid": 124, "test": 330}
    assert rows["lyra"]["labels"] == "top-30 of train+valid"
    assert rows["mtat"]["labels"] == "published list (tags.npy)"
    assert rows["mtat-marble"]["labels"] == "top-50 of all clips"
    assert rows["hindustani"]["max_seconds"] == 780
    assert rows["carnatic"]["published_vocabulary"] == "carnatic/carnatic.json"
    assert rows["mtat"]["published_vocabulary"] == "magnatagatune/tags.npy"
    assert rows["lyra"]["published_vocabulary"] is None and rows["fixture"]["published_vocabulary"] is None
    code, out, _ = cli(["datasets"], capsys)
    assert code == 0 and "mtat-marble" in out and "18,706" in out and "top-20 of train" in out


def test_describe_lyra_json_matches_the_dataset(capsys) -> None:
    ref = reference_root()
    code, out, _ = cli(["data", "describe", "lyra", "--reference-dir", str(ref), "--json"], capsys)
    summary = json.loads(out)
    dataset = load_dataset("lyra", reference_dir=ref)
    assert code == 0
    assert summary["name"] == "lyra" and summary["task"] == "multilabel" and summary["missing_audio"] is None
    assert summary["tags"] == dataset.vocabulary
    for split in ("train", "valid", "test"):
        items = dataset.split(split)
        assert summary["splits"][split]["n_items"] == len(items)
        positives = dataset.label_matrix(items).sum(axis=0)
        assert list(summary["splits"][split]["support"].values()) == [int(v) for v in positives]
        assert list(summary["splits"][split]["support"]) == dataset.vocabulary


def test_describe_counts_missing_audio_and_reads_env(tmp_path: Path, monkeypatch, capsys) -> None:
    ref = reference_root()
    monkeypatch.setenv("MARBLE_EVAL_REFERENCE_DIR", str(ref))
    (tmp_path / "ach-ellada.mp3").write_bytes(b"x")
    code, out, _ = cli(["data", "describe", "lyra", "--data-dir", str(tmp_path), "--json"], capsys)
    assert code == 0 and json.loads(out)["missing_audio"] == 1569
    code, out, _ = cli(["data", "describe", "lyra", "--data-dir", str(tmp_path)], capsys)
    assert "train / valid / test = 1,116 / 124 / 330, 30 tags" in out and "missing audio: 1,569 of 1,570" in out


def test_errors_are_one_line(tmp_path: Path, capsys) -> None:
    code, _, err = cli(["data", "describe", "no-such-dataset"], capsys)
    assert code == 2 and err.count("\n") == 1 and "unknown dataset 'no-such-dataset'" in err
    code, _, err = cli(["data", "check", "lyra", "--data-dir", str(tmp_path / "nope")], capsys)
    assert code == 2 and "--data-dir is not a directory" in err
    code, _, err = cli(["data", "fetch-dunya", "lyra", "--token", "t", "--output", str(tmp_path / "m.json")], capsys)
    assert code == 2 and "fetch-dunya works on Dunya corpora" in err


def test_the_listing_says_which_windows_each_dataset_feeds():
    from marble_eval.cli.datasets import audio_summary, dataset_rows

    rows = {row["name"]: row for row in dataset_rows()}
    assert audio_summary(rows["carnatic"]) == "30 s windows, 330 s max"
    assert audio_summary(rows["gs-key"]) == "30 s windows (full only)"
    assert audio_summary(rows["mtat"]) == "whole clip"
    assert audio_summary({"window_seconds": None, "max_seconds": None}) == "model's window"
