"""The whole benchmark from the command line: eval, probe, leaderboard, errors, determinism, families."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from marble_eval.datasets.registry import load_dataset
from marble_eval.features.extract import ExtractSettings, extract_dataset, open_cache
from marble_eval.models import load_model
from marble_eval.pipeline import run_probe
from marble_eval.probes import GridSpec, load_recipe
from tests.test_models_mert import _fake_hub_cache
from tiny_ast import build_tiny_ast, build_tiny_maest
from tiny_generic import build_tiny_wav2vec2_style

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--grid", "quick", "--seeds", "2", "--max-epochs", "4", "--no-progress"]


def _cli(*args: str, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marble_eval", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_mert_dirs, small_fixture_yaml):
    """One eval run of the tiny model on the small fixture (shared by the tests below)."""
    root = tmp_path_factory.mktemp("eval")
    args = ["--model", str(tiny_mert_dirs["safetensors"]), "--dataset", str(small_fixture_yaml),
            "--data-dir", str(root / "audio"), "--cache-dir", str(root / "cache"), "--results-dir", str(root / "results")]
    result = _cli("eval", *args, *QUICK)
    assert result.returncode == 0, result.stderr
    return root, args, result


def test_eval_writes_a_result_with_provenance_and_prints_the_row(evaluated, tiny_mert_dirs):
    root, _, run = evaluated
    assert "items: 24 total, 24 extracted now" in run.stdout
    assert "tiny-fixture: ROC-AUC" in run.stdout
    (path,) = (root / "results").glob("tiny-fixture/*.json")
    result = json.loads(path.read_text())
    assert result["model"]["fingerprint"] == load_model(str(tiny_mert_dirs["safetensors"])).info.fingerprint
    assert result["dataset"]["splits"] == {"train": 12, "valid": 6, "test": 6}
    assert result["protocol"]["grid"] == {"lrs": [0.001, 0.005, 0.01], "layers": ["weighted"], "seeds": [0, 1]}
    assert result["protocol"]["grid_name"] == "quick"
    assert result["protocol"]["recipe"]["name"] == "mlp" and result["protocol"]["window_seconds"] == 0.0
    assert [s["seed"] for s in result["selected"]] == [0, 1]
    assert set(result["summary"]) >= {"roc_auc", "map", "micro_f1", "macro_f1"}
    assert result["environment"]["packages"]["torch"]


def test_probe_again_gives_identical_metrics(evaluated):
    root, args, _ = evaluated
    first = json.loads(next((root / "results").glob("tiny-fixture/*.json")).read_text())
    again = _cli("probe", *args[:-1], str(root / "results-again"), *QUICK)
    assert again.returncode == 0, again.stderr
    second = json.loads(next((root / "results-again").glob("tiny-fixture/*.json")).read_text())
    assert first["summary"] == second["summary"] and first["grid"] == second["grid"]


def test_a_rerun_of_the_same_protocol_is_a_no_op_and_another_protocol_a_new_file(evaluated):
    root, args, _ = evaluated
    (path,) = (root / "results").glob("tiny-fixture/*.json")
    before = path.read_bytes()
    again = _cli("probe", *args, *QUICK)
    assert again.returncode == 0, again.stderr
    assert f"results: {path} (already computed with this model, dataset and protocol" in again.stdout
    assert path.read_bytes() == before
    other = _cli("probe", *args, *QUICK[:-3], "--max-epochs", "2", "--no-progress")  # another protocol
    assert other.returncode == 0, other.stderr
    files = sorted((root / "results").glob("tiny-fixture/*.json"))
    assert len(files) == 2 and path in files and path.read_bytes() == before  # the first result is left in place
    for extra in (root / "results").glob("tiny-fixture/*"):
        if not extra.name.startswith(path.name[: -len(".json")]):
            extra.unlink()  # leave the shared results folder as the other tests expect it


def test_leaderboard_lists_the_model(evaluated):
    root, _, _ = evaluated
    board = _cli("leaderboard", "--results-dir", str(root / "results"))
    assert board.returncode == 0, board.stderr
    assert "| Model" in board.stdout and "tiny-fixture" in board.stdout
    assert (root / "results" / "LEADERBOARD.md").exists()


def test_missing_cache_entries_are_named_with_the_command_that_fills_them(evaluated, tmp_path):
    root, args, _ = evaluated
    cache = next((root / "cache").glob("tiny-fixture-v1/*"))
    shards = sorted((cache / "shards").glob("*.npz"))
    # Move the cache aside and drop its only shard: every item is now missing.
    partial = tmp_path / "cache" / "tiny-fixture-v1" / cache.name
    partial.mkdir(parents=True)
    (partial / "key.json").write_text((cache / "key.json").read_text())
    (partial / "shards").mkdir()
    assert shards
    args = [*args]
    args[args.index("--cache-dir") + 1] = str(tmp_path / "cache")
    args[args.index("--results-dir") + 1] = str(tmp_path / "results")  # the evaluated result would make it a no-op
    result = _cli("probe", *args, *QUICK)
    assert result.returncode == 2
    assert "not extracted yet" in result.stderr and "marble-eval extract" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argument,value,message", [
    ("--model", "no/such-model", "not in the Hugging Face cache"),
    ("--dataset", "nope", "unknown dataset 'nope'; known: "),
    ("--recipe", "svm", "unknown probe recipe 'svm'; known recipes: linear, mlp"),
])
def test_unknown_names_are_one_line_errors_listing_the_known_ones(evaluated, argument, value, message):
    _, args, _ = evaluated
    args = [*args]
    if argument in args:
        args[args.index(argument) + 1] = value
    else:
        args += [argument, value]
    result = _cli("probe", *args, *QUICK, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(REPO / ".no-hf-home")})
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_make_eval_with_a_hub_id_from_an_offline_hf_cache(tmp_path, tiny_mert_dirs, small_fixture_yaml):
    hf_home = tmp_path / "hf"
    _fake_hub_cache(hf_home, "ntua-slp/CultureMERT-95M", tiny_mert_dirs["bin"])
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "MARBLE_EVAL_HOME": str(tmp_path / "me")}
    result = subprocess.run(
        ["make", "--no-print-directory", "eval", "MODEL=ntua-slp/CultureMERT-95M", f"DATASET={small_fixture_yaml}",
         "SEEDS=1", f"RESULTS={tmp_path / 'results'}", "EVAL_ARGS=--grid quick --max-epochs 3 --no-progress"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ntua-slp/CultureMERT-95M on tiny-fixture: ROC-AUC" in result.stdout
    assert "| ntua-slp/CultureMERT-95M |" in result.stdout


def _tiny_family_models(root: Path) -> dict[str, Path]:
    models = {family: build_tiny_wav2vec2_style(root / family, family)
              for family in ("hubert", "wav2vec2", "wavlm", "data2vec-audio")}
    models["ast"] = build_tiny_ast(root / "ast")
    models["maest"] = build_tiny_maest(root / "maest")
    return models


def test_every_family_runs_end_to_end(tmp_path, small_fixture_yaml):
    dataset = load_dataset(str(small_fixture_yaml), data_dir=tmp_path / "audio")
    recipe = load_recipe("linear")
    models = _tiny_family_models(tmp_path / "models")
    runs = [(family, directory, None) for family, directory in models.items()]
    runs.append(("maest", models["maest"], "cls-dist-patch-mean"))  # MAEST's paper embedding, 3 x D wide
    for family, directory, pooling in runs:
        model = load_model(str(directory), pooling=pooling)
        assert model.info.family == family
        summary = extract_dataset(model, dataset, tmp_path / "cache", ExtractSettings(), show_progress=False)
        assert summary.extracted == 24 and not summary.failures, (family, pooling)
        cache = open_cache(tmp_path / "cache", model, dataset, ExtractSettings())
        result = run_probe(cache, dataset, model.info, recipe, GridSpec.quick([0]), show_progress=False, max_epochs=2)
        assert result.model.family == family
        assert 0.0 <= result.summary["roc_auc"].mean <= 1.0


def test_predictions_beside_the_result_reproduce_the_selected_test_metrics(evaluated):
    import numpy as np

    from marble_eval.metrics import compute_metrics

    root, _, _ = evaluated
    path = next((root / "results").glob("tiny-fixture/*__mlp__*.json"))
    result = json.loads(path.read_text())
    stored = np.load(path.with_suffix(".predictions.npz"))
    assert stored["probs"].shape == (2, 6, 8) and stored["y_true"].shape == (6, 8)
    assert stored["seeds"].tolist() == [0, 1] and stored["tags"].tolist() == result["dataset"]["tags"]
    for seed_index, selected in enumerate(result["selected"]):
        again = compute_metrics(stored["y_true"], stored["probs"][seed_index], tags=result["dataset"]["tags"])
        assert again["roc_auc"] == pytest.approx(selected["test"]["roc_auc"], abs=1e-6)
