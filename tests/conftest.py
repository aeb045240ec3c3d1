"""Shared fixtures: tiny checkpoints in the hub's MERT layout and a small synthetic dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from marble_eval.models.tiny import build_tiny_mert

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("MARBLE_EVAL_REFERENCE_DIR", REPO.parent / "shared" / "reference" / "datasets"))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's ~/.cache/marble-eval from tests."""
    monkeypatch.setenv("MARBLE_EVAL_HOME", str(tmp_path_factory.getbasetemp() / "marble-home"))


@pytest.fixture(scope="session")
def tiny_mert_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same random weights saved as legacy .bin and as safetensors, plus a pre-LN (330M-style) model."""
    root = tmp_path_factory.mktemp("models")
    return {
        "bin": build_tiny_mert(root / "bin", weights="bin", seed=0),
        "safetensors": build_tiny_mert(root / "safetensors", weights="safetensors", seed=0),
        "pre_ln": build_tiny_mert(root / "pre_ln", weights="safetensors", seed=1, pre_layer_norm=True),
    }


@pytest.fixture(scope="session")
def small_fixture_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-clip version of the fixture dataset (fast to generate and extract)."""
    path = tmp_path_factory.mktemp("benchmarks") / "tiny-fixture.yaml"
    path.write_text(
        "name: tiny-fixture\nversion: '1'\ntask: multilabel\nsource: fixture\n"
        "vocabulary: {rule: fixed, tags: [tone-220, tone-880, tone-3520, noise-low, noise-high, pulse-2hz,"
        " pulse-8hz, chirp-up]}\n"
        "options: {n_train: 12, n_valid: 6, n_test: 6, seconds: 2.5, seed: 3}\n"
    )
    return path
