"""The CultureMERT-layout leaderboard: paper averages, like-with-like marks, Avg scope, skipped items."""

from __future__ import annotations

import pytest

from marble_eval.errors import MarbleEvalError
from marble_eval.report.leaderboard import leaderboard_frames, render, write_leaderboard_md
from marble_eval.results.store import read_results, write_result
from tests.result_builders import TEST_IDS, make_result

PUBLISHED_MERT = {  # PROTOCOL section 6, MERT-v1-95M, ROC-AUC / mAP in percent
    "makam": (83.2, 53.3), "hindustani": (82.4, 52.9), "carnatic": (74.9, 39.7),
    "lyra": (85.7, 56.5), "fma": (90.7, 48.1), "mtat": (89.6, 35.9),
}


def test_the_paper_average_is_reproduced_from_its_own_cells(tmp_path):
    for dataset, (auc, ap) in PUBLISHED_MERT.items():
        write_result(tmp_path, make_result("m-a-p/MERT-v1-95M", dataset, auc / 100, ap / 100))
    board = leaderboard_frames(read_results(tmp_path))
    table = board.frames["ROC-AUC / mAP"]
    assert list(table.columns) == ["Model", "Turkish-makam", "Hindustani", "Carnatic", "Lyra", "FMA-medium", "MTAT",
                                   "Avg"]
    row = table.iloc[0]
    assert row["Carnatic"] == "74.9 / 39.7"
    assert row["Avg"] == "66.1"  # the model card's Avg for MERT-v1-95M
    assert board.frames["micro-F1 / macro-F1"].iloc[0]["Lyra"] == "50.0 / 25.0"
    assert board.avg_datasets == list(PUBLISHED_MERT)


def test_rows_per_model_missing_cells_blank_and_recipe_filter(tmp_path):
    write_result(tmp_path, make_result("a/model", "fixture", 0.9, 0.6))
    write_result(tmp_path, make_result("b/model", "lyra", 0.8, 0.5))
    write_result(tmp_path, make_result("b/model", "lyra", 0.7, 0.4, recipe="linear"))
    table = leaderboard_frames(read_results(tmp_path), recipe="mlp").frames["ROC-AUC / mAP"]
    assert table["Model"].tolist() == ["a/model", "b/model"]
    assert table.set_index("Model").loc["a/model", "Lyra"] == ""
    linear = leaderboard_frames(read_results(tmp_path), recipe="linear").frames["ROC-AUC / mAP"]
    assert linear.iloc[0]["Lyra"] == "70.0 / 40.0"
    with pytest.raises(MarbleEvalError, match="no results for recipe 'svm'"):
        leaderboard_frames(read_results(tmp_path), recipe="svm")
    with pytest.raises(MarbleEvalError, match="no results found"):
        leaderboard_frames([])


def test_avg_only_over_the_datasets_every_row_has_and_says_which(tmp_path):
    write_result(tmp_path, make_result("a/model", "carnatic", 0.80, 0.40))
    write_result(tmp_path, make_result("a/model", "lyra", 0.90, 0.60))
    write_result(tmp_path, make_result("b/model", "carnatic", 0.70, 0.30))
    board = leaderboard_frames(read_results(tmp_path))
    table = board.frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["a/model", "Avg"] == "60.0"  # carnatic only: (80 + 40) / 2, not lyra's 90 / 60
    assert table.loc["b/model", "Avg"] == "50.0"
    assert board.avg_datasets == ["carnatic"]
    assert "Avg: mean over Carnatic (the datasets every measured row has)" in board.notes
    write_result(tmp_path, make_result("c/model", "lyra", 0.70, 0.30))
    board = leaderboard_frames(read_results(tmp_path))
    assert board.avg_datasets == [] and set(board.frames["ROC-AUC / mAP"]["Avg"]) == {""}
    assert any(note.startswith("Avg: none") for note in board.notes)


def test_a_result_of_another_protocol_is_marked_and_explained(tmp_path):
    write_result(tmp_path, make_result("a/model", "lyra", 0.9, 0.6))
    write_result(tmp_path, make_result("b/model", "lyra", 0.8, 0.5))
    write_result(tmp_path, make_result("c/model", "lyra", 0.7, 0.4, lrs=(1e-2,)))
    write_result(tmp_path, make_result("d/model", "lyra", 0.7, 0.4, preset="culturemert"))
    board = leaderboard_frames(read_results(tmp_path))
    table = board.frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["a/model", "Lyra"] == "90.0 / 60.0" and table.loc["b/model", "Lyra"] == "80.0 / 50.0"
    assert table.loc["c/model", "Lyra"] == "70.0 / 40.0†" and table.loc["d/model", "Lyra"] == "70.0 / 40.0†"
    legend = [note for note in board.notes if note.startswith("†")]
    assert legend == ["† Lyra: run with another protocol than the column's other results (grid.lrs, preset); "
                      "not compared with them"]
    assert "- † Lyra" in render(board, "md")


def test_other_test_items_are_marked_and_skipped_items_shown(tmp_path):
    write_result(tmp_path, make_result("a/model", "carnatic", 0.833, 0.782))
    write_result(tmp_path, make_result("b/model", "carnatic", 0.8, 0.7))
    write_result(tmp_path, make_result("c/model", "carnatic", 0.8, 0.7, test_ids=TEST_IDS[:8], test_total=10))
    board = leaderboard_frames(read_results(tmp_path))
    table = board.frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["a/model", "Carnatic"] == "83.3 / 78.2"
    assert table.loc["c/model", "Carnatic"] == "80.0 / 70.0 (8/10 test)‡"
    assert any(note.startswith("‡ Carnatic: scored on other test items") for note in board.notes)
    relabelled = make_result("d/model", "carnatic", 0.8, 0.7, dataset={"identity": "other-labels"})
    write_result(tmp_path, relabelled)
    table = leaderboard_frames(read_results(tmp_path)).frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["d/model", "Carnatic"] == "80.0 / 70.0‡"  # same items, another dataset version
    assert "(k/n test): k of the dataset's n test items had usable audio" in board.notes


def test_a_model_with_two_protocols_on_a_dataset_gets_two_rows(tmp_path):
    write_result(tmp_path, make_result("a/model", "lyra", 0.9, 0.6))
    write_result(tmp_path, make_result("a/model", "lyra", 0.85, 0.55, lrs=(1e-2,)))
    write_result(tmp_path, make_result("b/model", "lyra", 0.8, 0.5))
    table = leaderboard_frames(read_results(tmp_path)).frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["a/model", "Lyra"] == "90.0 / 60.0"
    assert table.loc["a/model (run 2)", "Lyra"] == "85.0 / 55.0†"


def test_display_names_and_formats_and_leaderboard_file(tmp_path):
    write_result(tmp_path, make_result("a/model", "carnatic", 0.792, 0.432, name="Model A"))
    board = leaderboard_frames(read_results(tmp_path))
    assert "| Model A | 79.2 / 43.2 |" in render(board, "md")
    assert "Model A,79.2 / 43.2,61.2" in render(board, "csv")
    assert "\\begin{tabular}" in render(board, "latex")
    path = write_leaderboard_md(tmp_path, render(board, "md"))
    assert path.name == "LEADERBOARD.md" and "79.2 / 43.2" in path.read_text()


def test_a_tie_between_test_item_sets_keeps_the_larger_as_reference(tmp_path):
    write_result(tmp_path, make_result("a/model", "carnatic", 0.8, 0.4, test_ids=TEST_IDS[:8], test_total=10))
    write_result(tmp_path, make_result("b/model", "carnatic", 0.7, 0.3))
    table = leaderboard_frames(read_results(tmp_path)).frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["a/model", "Carnatic"] == "80.0 / 40.0 (8/10 test)‡"
    assert table.loc["b/model", "Carnatic"] == "70.0 / 30.0"


def test_smoke_runs_are_left_out_unless_asked(tmp_path, capsys):
    from marble_eval.cli import main
    from marble_eval.report.leaderboard import full_runs

    full = make_result("full-model", "lyra", 0.8, 0.5)
    smoke = make_result("smoke-model", "lyra", 0.9, 0.6)
    smoke.dataset.limit = 5
    for result in (full, smoke):
        write_result(tmp_path, result)
    assert [r.model.id for r in full_runs(read_results(tmp_path))] == ["full-model"]
    assert sorted(r.model.id for r in full_runs(read_results(tmp_path), smoke=True)) == ["full-model", "smoke-model"]
    assert main(["leaderboard", "--results-dir", str(tmp_path), "--bootstrap", "0"]) == 0
    assert "smoke-model" not in capsys.readouterr().out
    assert main(["leaderboard", "--results-dir", str(tmp_path), "--bootstrap", "0", "--smoke"]) == 0
    assert "smoke-model" in capsys.readouterr().out
