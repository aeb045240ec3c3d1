"""Results JSON round trip and the CultureMERT-layout leaderboard."""

from __future__ import annotations

import json

import pytest

from marble_eval.errors import MarbleEvalError
from marble_eval.report.leaderboard import leaderboard_frames, render, write_leaderboard_md
from marble_eval.results.store import SCHEMA_VERSION, read_results, result_path, write_result

PUBLISHED_MERT = {  # PROTOCOL section 6, MERT-v1-95M, ROC-AUC / mAP in percent
    "makam": (83.2, 53.3), "hindustani": (82.4, 52.9), "carnatic": (74.9, 39.7),
    "lyra": (85.7, 56.5), "fma": (90.7, 48.1), "mtat": (89.6, 35.9),
}


def _result(model: str, dataset: str, auc: float, ap: float, recipe: str = "mlp") -> dict:
    stat = lambda v: {"mean": v, "std": 0.0, "n": 5}  # noqa: E731
    return {"schema_version": SCHEMA_VERSION, "model": {"id": model}, "dataset": {"name": dataset},
            "protocol": {"recipe": {"name": recipe}},
            "summary": {"roc_auc": stat(auc), "map": stat(ap), "micro_f1": stat(0.5), "macro_f1": stat(0.25)}}


def test_the_paper_average_is_reproduced_from_its_own_cells(tmp_path):
    for dataset, (auc, ap) in PUBLISHED_MERT.items():
        write_result(tmp_path, _result("m-a-p/MERT-v1-95M", dataset, auc / 100, ap / 100))
    frames = leaderboard_frames(read_results(tmp_path))
    table = frames["ROC-AUC / mAP"]
    assert list(table.columns) == ["Model", "Turkish-makam", "Hindustani", "Carnatic", "Lyra", "FMA-medium", "MTAT",
                                   "Avg"]
    row = table.iloc[0]
    assert row["Carnatic"] == "74.9 / 39.7"
    assert row["Avg"] == "66.1"  # the model card's Avg for MERT-v1-95M
    assert frames["micro-F1 / macro-F1"].iloc[0]["Lyra"] == "50.0 / 25.0"


def test_rows_per_model_missing_cells_blank_and_recipe_filter(tmp_path):
    write_result(tmp_path, _result("a/model", "fixture", 0.9, 0.6))
    write_result(tmp_path, _result("b/model", "lyra", 0.8, 0.5))
    write_result(tmp_path, _result("b/model", "lyra", 0.7, 0.4, recipe="linear"))
    table = leaderboard_frames(read_results(tmp_path), recipe="mlp")["ROC-AUC / mAP"]
    assert table["Model"].tolist() == ["a/model", "b/model"]
    assert table.set_index("Model").loc["a/model", "Lyra"] == ""
    linear = leaderboard_frames(read_results(tmp_path), recipe="linear")["ROC-AUC / mAP"]
    assert linear.iloc[0]["Lyra"] == "70.0 / 40.0"
    with pytest.raises(MarbleEvalError, match="no results for recipe 'svm'"):
        leaderboard_frames(read_results(tmp_path), recipe="svm")


def test_formats_and_leaderboard_file(tmp_path):
    write_result(tmp_path, _result("a/model", "carnatic", 0.792, 0.432))
    frames = leaderboard_frames(read_results(tmp_path))
    assert "| a/model | 79.2 / 43.2 |" in render(frames, "md")
    assert "a/model,79.2 / 43.2,61.2" in render(frames, "csv")
    assert "\\begin{tabular}" in render(frames, "latex")
    path = write_leaderboard_md(tmp_path, render(frames, "md"))
    assert path.name == "LEADERBOARD.md" and "79.2 / 43.2" in path.read_text()


def test_results_path_and_schema_guard(tmp_path):
    path = write_result(tmp_path, _result("ntua-slp/CultureMERT-95M", "carnatic", 0.8, 0.4))
    assert path == result_path(tmp_path, "ntua-slp/CultureMERT-95M", "carnatic", "mlp")
    assert path.relative_to(tmp_path).as_posix() == "carnatic/ntua-slp_CultureMERT-95M__mlp.json"
    stale = json.loads(path.read_text())
    stale["schema_version"] = 0
    path.write_text(json.dumps(stale))
    with pytest.raises(MarbleEvalError, match="schema_version 0"):
        read_results(tmp_path)
    with pytest.raises(MarbleEvalError, match="no results found"):
        leaderboard_frames([])
