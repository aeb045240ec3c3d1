"""Multiclass, regression (two targets) and key datasets end to end, on audio the test builds: eval, the
result's summary recomputed from its own predictions file, leaderboard, compare, export and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

import marble_eval
from marble_eval.metrics import task_metrics
from marble_eval.metrics.keys import KEY_CLASSES, parse_key
from marble_eval.results.store import read_predictions
from marble_eval.tasks import expand_metrics, task_type

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
RATE = 16000
SPLIT_SIZES = {"train": 6, "valid": 3, "test": 3}  # per class (or per target level)


def _tone(frequencies: list[float], seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * sum(np.sin(2 * np.pi * f * t) for f in frequencies) / len(frequencies)).astype(np.float32)


def _write(root: Path, name: str, wave: np.ndarray) -> str:
    (root / "audio").mkdir(parents=True, exist_ok=True)
    sf.write(root / "audio" / name, wave, RATE)
    return f"audio/{name}"


def _dataset(root: Path, name: str, task: str, header: list[str], rows: list[list[str]],
             targets: list[str] | None = None) -> Path:
    manifest = root / f"{name}.csv"
    manifest.write_text("\n".join(",".join(row) for row in [header, *rows]) + "\n")
    spec = {"name": name, "version": "1", "task": task, "source": "manifest", "options": {"manifest": manifest.name}}
    if targets:
        spec["targets"] = targets
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tasks")
    rng = np.random.default_rng(0)
    classes = {"low": 220.0, "mid": 880.0, "high": 3520.0}
    rows = []
    for label, frequency in classes.items():
        for split, count in SPLIT_SIZES.items():
            for k in range(count):
                path = _write(root, f"mc-{label}-{split}-{k}.wav", _tone([frequency * (1 + 0.01 * k)]))
                rows.append([path, split, label])
    multiclass = _dataset(root, "tones-class", "multiclass", ["path", "split", "labels"], rows)
    rows = []
    for split, count in SPLIT_SIZES.items():
        for k in range(3 * count):
            arousal, valence = rng.uniform(0, 1), rng.uniform(0, 1)
            path = _write(root, f"rg-{split}-{k}.wav", _tone([200 + 2000 * arousal], amplitude=0.05 + 0.4 * valence))
            rows.append([path, split, f"{1 + 8 * arousal:.3f}", f"{1 + 8 * valence:.3f}"])
    regression = _dataset(root, "tones-emotion", "regression", ["path", "split", "arousal", "valence"], rows,
                          targets=["arousal", "valence"])
    rows = []
    semitone = 2 ** (1 / 12)
    for label in ("C major", "A minor", "G:maj", "E minor"):
        index = parse_key(label)
        root_hz = 261.63 * semitone ** (index % 12)
        third = 3 if index >= 12 else 4
        chord = [root_hz, root_hz * semitone**third, root_hz * semitone**7]
        for split, count in SPLIT_SIZES.items():
            for k in range(count):
                path = _write(root, f"key-{index}-{split}-{k}.wav", _tone([f * (1 + 0.003 * k) for f in chord]))
                rows.append([path, split, label])
    key = _dataset(root, "chords-key", "key", ["path", "split", "labels"], rows)
    return {"root": root, "multiclass": multiclass, "regression": regression, "key": key}


@pytest.fixture(scope="module")
def evaluated(datasets, tmp_path_factory) -> dict[str, marble_eval.ProbeResult]:
    out = tmp_path_factory.mktemp("task-results")
    results = {}
    for task in ("multiclass", "regression", "key"):
        for model in ("fixture", "fixture-pre-ln"):
            results[task, model] = marble_eval.evaluate(
                model, str(datasets[task]), seeds=2, grid="quick", max_epochs=5, data_dir=datasets["root"],
                cache_dir=out / "cache", results_dir=out / "results", probe_device="cpu")
    results["dir"] = out / "results"
    return results


@pytest.mark.parametrize("task", ["multiclass", "regression", "key"])
def test_each_task_type_reports_its_own_metrics(evaluated, task):
    result = evaluated[task, "fixture"]
    assert result.dataset.task == task
    expected = set(expand_metrics(task_type(task).metrics, result.dataset.tags))
    assert set(result.summary) == expected
    if task == "key":
        assert result.dataset.tags == list(KEY_CLASSES)
        assert all(s.aggregation in task_type("key").aggregations for s in result.selected)
    if task == "regression":
        assert result.dataset.tags == ["arousal", "valence"] and result.dataset.target_stats is not None


@pytest.mark.parametrize("task", ["multiclass", "regression", "key"])
def test_the_summary_equals_what_a_reader_recomputes_from_the_predictions_file(evaluated, task):
    result = evaluated[task, "fixture"]
    predictions = read_predictions(result.path)
    assert list(predictions["seeds"]) == [s.seed for s in result.selected]
    per_seed = [task_metrics(task, predictions["y_true"], outputs, list(predictions["tags"]))
                for outputs in predictions["outputs"]]
    for metric, stat in result.summary.items():
        assert np.mean([m[metric] for m in per_seed]) == pytest.approx(stat.mean, abs=1e-5), metric
    if task == "regression":  # predictions in the targets' units (the manifest's 1..9 scale)
        assert 0.5 < predictions["y_true"].min() and predictions["y_true"].max() < 9.5


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marble_eval", *args], capture_output=True, text=True,
                          env={**os.environ}, cwd=REPO, timeout=600)


def test_leaderboard_shows_each_tasks_metric(evaluated):
    results_dir = str(evaluated["dir"])
    board = _cli("leaderboard", "--results-dir", results_dir)
    assert board.returncode == 0, board.stderr
    for label in ("accuracy", "R²", "key score"):
        assert label in board.stdout
    marble = _cli("leaderboard", "--results-dir", results_dir, "--layout", "marble")
    assert marble.returncode == 0, marble.stderr
    assert "R² arousal" in marble.stdout or "arousal" in marble.stdout
    latex = _cli("leaderboard", "--results-dir", results_dir, "--format", "latex")
    assert latex.returncode == 0 and "†" not in latex.stdout


def test_compare_export_and_report_take_every_task_type(evaluated, tmp_path):
    results_dir = str(evaluated["dir"])
    for dataset in ("tones-class", "tones-emotion", "chords-key"):
        compared = _cli("compare", "fixture", "fixture-pre-ln", "--dataset", dataset, "--results-dir", results_dir)
        assert compared.returncode == 0, compared.stderr
    tidy = _cli("export", "--format", "tidy-csv", "--results-dir", results_dir)
    assert tidy.returncode == 0, tidy.stderr
    for metric in ("accuracy", "r2_valence", "key_score"):
        assert metric in tidy.stdout
    for fmt in ("latex", "model-index"):
        exported = _cli("export", "--format", fmt, "--results-dir", results_dir)
        assert exported.returncode == 0, exported.stderr
    index = list(yaml.safe_load_all(_cli("export", "--format", "model-index", "--results-dir", results_dir).stdout))
    assert "key_score" in json.dumps(index) or "key score" in json.dumps(index)
    page = _cli("report", "--results-dir", results_dir, "--output", str(tmp_path / "report"))
    assert page.returncode == 0, page.stderr
    html = next((tmp_path / "report").glob("*.html")).read_text()
    assert "chords-key" in html and "tones-emotion" in html
