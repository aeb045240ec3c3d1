"""`marble-eval export` (tidy CSV / JSON, LaTeX, model-index YAML) and `marble-eval compare A B`."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from marble_eval.cli import main
from marble_eval.errors import MarbleEvalError
from marble_eval.report.compare import compare_models
from marble_eval.report.export import export
from marble_eval.results.schema import ProbeResult
from marble_eval.results.store import predictions_path, read_results, write_result
from tests.result_builders import make_result

TAGS = ["raga--a", "raga--b", "tala--c"]


def _with_selected(result: ProbeResult, per_tag: dict[str, float]) -> ProbeResult:
    selected = [{"seed": seed, "lr": 1e-3, "layer": "weighted", "valid": None,
                 "test": {"roc_auc": 0.8, "per_tag": {t: {"roc_auc": v + 0.01 * seed, "ap": v / 2}
                                                       for t, v in per_tag.items()}}} for seed in (0, 1)]
    data = result.model_dump(mode="json")
    data["selected"] = selected
    data["dataset"]["tags"] = TAGS
    return ProbeResult.model_validate(data)


def _two_models(tmp_path, rng=None):
    rng = rng or np.random.default_rng(0)
    n = 120
    ids = [f"i{k}" for k in range(n)]
    y = (rng.random((n, len(TAGS))) < 0.4).astype(np.float32)
    for model, name, auc, shift, tag_auc in (("ntua-slp/CultureMERT-95M", "CultureMERT", 0.85, 3.0, 0.9),
                                             ("m-a-p/MERT-v1-95M", None, 0.75, 0.3, 0.7)):
        result = _with_selected(make_result(model, "carnatic", auc, auc - 0.4, std=0.01, test_ids=ids, name=name),
                                {t: tag_auc for t in TAGS})
        path = write_result(tmp_path, result)
        probs = 1 / (1 + np.exp(-(shift * y + rng.normal(size=(2, *y.shape)))))
        np.savez(predictions_path(path), item_ids=np.array(ids), y_true=y, probs=probs.astype(np.float32),
                 seeds=np.array([0, 1]), tags=np.array(TAGS))
    write_result(tmp_path, make_result("m-a-p/MERT-v1-95M", "lyra", 0.8, 0.5))
    return y


def test_tidy_csv_and_json_one_row_per_model_dataset_metric(tmp_path):
    _two_models(tmp_path)
    results = read_results(tmp_path)
    frame = pd.read_csv(io.StringIO(export(results, "tidy-csv")))
    assert len(frame) == 3 * 4  # 3 results x 4 metrics
    assert frame["mean"].dtype == float and frame["std"].dtype == float and frame["n_seeds"].dtype == int
    row = frame[(frame["model"] == "CultureMERT") & (frame["metric"] == "roc_auc")].iloc[0]
    assert row["mean"] == pytest.approx(85.0) and row["std"] == pytest.approx(1.0)
    assert row["model_id"] == "ntua-slp/CultureMERT-95M" and row["n_test_items"] == 120 and row["n_seeds"] == 5
    assert row["grid"] == "grid 1 lr × all layers + weighted" and row["seeds"] == "0 1 2 3 4"
    assert row["lrs"] == pytest.approx(0.001) and row["layers"] == "0 1 2 weighted" and bool(row["reference"])
    records = json.loads(export(results, "tidy-json"))
    assert len(records) == 12 and {"mean", "std", "n_seeds", "n_test_items", "preset", "grid", "seeds"} <= set(
        records[0])


def test_latex_tables_with_std_and_the_best_in_bold(tmp_path):
    _two_models(tmp_path)
    text = export(read_results(tmp_path), "latex")
    assert text.count(r"\begin{tabular}") == 2
    assert r"\textbf{85.0 $\pm$ 1.0} / \textbf{45.0 $\pm$ 1.0}" in text  # CultureMERT best on Carnatic
    assert r"75.0 $\pm$ 1.0 / 35.0 $\pm$ 1.0" in text and "Avg over Carnatic" in text
    assert "MERT-v1-95M & 75.0" in text and r"\textbf{80.0 $\pm$ 0.0}" in text  # Lyra: only one model


def test_model_index_yaml_per_model(tmp_path):
    _two_models(tmp_path)
    documents = list(yaml.safe_load_all(export(read_results(tmp_path), "model-index")))
    assert len(documents) == 2
    block = {d["model-index"][0]["name"]: d["model-index"][0] for d in documents}
    mert = block["m-a-p/MERT-v1-95M"]
    assert [r["dataset"] for r in mert["results"]] == [{"name": "Carnatic", "type": "carnatic"},
                                                      {"name": "Lyra", "type": "lyra"}]
    first = mert["results"][0]
    assert first["task"] == {"type": "audio-classification", "name": "Music multi-label tagging"}
    metrics = {m["type"]: m["value"] for m in first["metrics"][:2]}
    assert metrics == {"roc_auc": 75.0, "average_precision": 35.0}
    assert [m["type"] for m in first["metrics"]] == ["roc_auc", "average_precision", "f1", "f1"]
    assert all(isinstance(m["name"], str) for m in first["metrics"])


def test_export_cli_writes_a_file_and_refuses_an_empty_folder(tmp_path, capsys):
    _two_models(tmp_path / "results")
    out = tmp_path / "tidy.csv"
    assert main(["export", "--results-dir", str(tmp_path / "results"), "--format", "tidy-csv",
                 "--output", str(out)]) == 0
    assert len(pd.read_csv(out)) == 12
    (tmp_path / "empty").mkdir()
    assert main(["export", "--results-dir", str(tmp_path / "empty"), "--format", "latex"]) == 2
    assert "no results found" in capsys.readouterr().err


def test_compare_per_dataset_and_per_tag(tmp_path):
    y = _two_models(tmp_path)
    (carnatic,) = compare_models(read_results(tmp_path), "CultureMERT", "mert-v1-95m", n_boot=200)
    assert carnatic.intervals is not None
    assert carnatic.dataset == "carnatic" and carnatic.intervals["roc_auc"].significant
    assert carnatic.intervals["roc_auc"].low > 0  # A (shift 3.0) beats B (shift 0.3)
    tags = carnatic.tags.set_index("tag")
    assert tags.loc["raga--a", "Δ ROC-AUC"] == pytest.approx(20.0)  # 90.5 - 70.5 (mean of two seeds)
    assert tags.loc["tala--c", "support"] == int(y[:, 2].sum())
    with pytest.raises(MarbleEvalError, match="no results for model 'nobody'"):
        compare_models(read_results(tmp_path), "nobody", "CultureMERT")
    with pytest.raises(MarbleEvalError, match="dataset 'lyra'; shared datasets: carnatic"):
        compare_models(read_results(tmp_path), "CultureMERT", "MERT-v1-95M", dataset="lyra")


def test_compare_does_not_test_results_of_different_protocols(tmp_path):
    write_result(tmp_path, make_result("a/model", "lyra", 0.9, 0.6))
    write_result(tmp_path, make_result("b/model", "lyra", 0.8, 0.5, lrs=(1e-2,)))
    (lyra,) = compare_models(read_results(tmp_path), "a/model", "b/model")
    assert lyra.intervals is None and lyra.note == "not tested: the reference runs differ in grid.lrs"


def test_compare_cli_prints_both_tables(tmp_path, capsys):
    _two_models(tmp_path)
    assert main(["compare", "CultureMERT", "MERT-v1-95M", "--results-dir", str(tmp_path), "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "A = CultureMERT, B = m-a-p/MERT-v1-95M" in out and "85.0 ± 1.0" in out
    assert "#### Carnatic: per tag" in out and "| raga--a" in out


QUICK = {"overrides": ["grid", "seeds"], "batch_unit": "window",
         "grid": {"lrs": [1e-3], "layers": ["weighted"], "seeds": [0]}}


def _default_then_quick(tmp_path):
    """A default-grid 5-seed run (86.7 ± 3.9), a later quick 1-seed run of the same model (88.5), and another
    model's default run; the quick run has the better (and latest) number."""
    write_result(tmp_path, make_result("fixture", "lyra", 0.867, 0.5, std=0.039, preset="culturemert"))
    write_result(tmp_path, make_result("fixture", "lyra", 0.885, 0.6, preset="culturemert", seeds=(0,),
                                       created="2026-02-01T00:00:00+00:00", protocol=QUICK))
    write_result(tmp_path, make_result("other", "lyra", 0.870, 0.55, std=0.02, preset="culturemert"))
    return read_results(tmp_path)


def test_one_reference_run_everywhere_the_preset_grid_before_a_later_quick_run(tmp_path, capsys):
    results = _default_then_quick(tmp_path)
    latex = export(results, "latex")
    assert r"fixture & 86.7 $\pm$ 3.9" in latex and "88.5" not in latex
    assert r"other & \textbf{87.0 $\pm$ 2.0}" in latex  # the best measured mean of the column
    (fixture,) = [d for d in yaml.safe_load_all(export(results, "model-index"))
                  if d["model-index"][0]["name"] == "fixture"]
    metrics = fixture["model-index"][0]["results"][0]["metrics"]
    assert metrics[0]["value"] == 86.7 and metrics[0]["name"].startswith("ROC-AUC (test, mean of 5 seeds")
    from marble_eval.report.leaderboard import leaderboard_frames, render

    board = leaderboard_frames(results)
    table = board.frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["fixture", "Lyra"] == "86.7 / 50.0"
    assert table.loc["fixture (quick grid, 1 seed, window batches)", "Lyra"] == "88.5 / 60.0†"
    assert "| fixture                                      | 86.7 / 50.0" in render(board, "md")
    assert "fixture,86.7 / 50.0," in render(board, "csv")
    assert "fixture & 86.7 / 50.0 &" in render(board, "latex")
    assert main(["compare", "fixture", "other", "--results-dir", str(tmp_path), "--bootstrap", "10"]) == 0
    out = capsys.readouterr().out
    assert "86.7 ± 3.9" in out and "88.5" not in out
    tidy = pd.read_csv(io.StringIO(export(results, "tidy-csv")))
    quick = tidy[(tidy["model"] == "fixture") & (tidy["grid"] == "quick grid")]
    assert len(quick) == 4 and not quick["reference"].any() and quick["std"].isna().all()  # 1 seed: no std
    assert quick["seeds"].astype(str).tolist() == ["0"] * 4


def test_the_reference_rule_most_seeds_then_latest():
    from marble_eval.report.runs import order_runs

    preset_five = make_result("m", "lyra", 0.8, 0.5, preset="culturemert")
    preset_three_later = make_result("m", "lyra", 0.8, 0.5, preset="culturemert", seeds=(0, 1, 2),
                                     created="2026-05-01T00:00:00+00:00", protocol={"overrides": ["seeds"]})
    no_preset_latest = make_result("m", "lyra", 0.8, 0.5, created="2026-06-01T00:00:00+00:00")
    three_seeds = make_result("m", "lyra", 0.8, 0.5, seeds=(0, 1, 2), created="2026-07-01T00:00:00+00:00")
    five_older = make_result("m", "lyra", 0.8, 0.5, created="2025-01-01T00:00:00+00:00")
    runs = [preset_three_later, no_preset_latest, three_seeds, five_older, preset_five]
    # seeds overridden: no longer the preset's own; then the most seeds, then the latest
    assert order_runs(runs) == [preset_five, no_preset_latest, five_older, three_seeds, preset_three_later]


def test_one_seed_runs_show_no_std_and_model_index_says_one_seed(tmp_path, capsys):
    write_result(tmp_path, make_result("a/model", "lyra", 0.8, 0.5, seeds=(0,)))
    write_result(tmp_path, make_result("b/model", "lyra", 0.7, 0.4, seeds=(0,)))
    results = read_results(tmp_path)
    (doc, _) = list(yaml.safe_load_all(export(results, "model-index")))
    names = [m["name"] for m in doc["model-index"][0]["results"][0]["metrics"]]
    assert names[0] == "ROC-AUC (test, 1 seed, mlp probe)" and not any("seeds" in n for n in names)
    latex = export(results, "latex")
    assert r"\textbf{80.0} / \textbf{50.0}" in latex and r"$\pm$ 0.0" not in latex
    assert main(["compare", "a/model", "b/model", "--results-dir", str(tmp_path), "--bootstrap", "10"]) == 0
    out = capsys.readouterr().out
    assert "80.0 (1 seed)" in out and "± 0.0" not in out


def test_a_model_path_is_shown_short_and_kept_in_full_in_the_ids(tmp_path):
    write_result(tmp_path, make_result("/home/me/ckpt/mert-finetuned/", "lyra", 0.8, 0.5))
    results = read_results(tmp_path)
    (doc,) = list(yaml.safe_load_all(export(results, "model-index")))
    assert doc["model-index"][0]["name"] == "mert-finetuned"
    tidy = pd.read_csv(io.StringIO(export(results, "tidy-csv")))
    assert set(tidy["model"]) == {"mert-finetuned"} and set(tidy["model_id"]) == {"/home/me/ckpt/mert-finetuned/"}
    assert "mert-finetuned & " in export(results, "latex") and "/home/me" not in export(results, "latex")
