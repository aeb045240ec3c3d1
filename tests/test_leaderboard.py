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
    assert board.avg_datasets["ROC-AUC / mAP"] == list(PUBLISHED_MERT)


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
    assert board.avg_datasets["ROC-AUC / mAP"] == ["carnatic"]
    assert ("Avg (ROC-AUC / mAP): mean of the ROC-AUC / mAP numbers over Carnatic (the datasets every measured row "
            "of this table has)") in board.notes
    write_result(tmp_path, make_result("c/model", "lyra", 0.70, 0.30))
    board = leaderboard_frames(read_results(tmp_path))
    assert board.avg_datasets["ROC-AUC / mAP"] == [] and set(board.frames["ROC-AUC / mAP"]["Avg"]) == {""}
    assert any(note.startswith("Avg (ROC-AUC / mAP): none") for note in board.notes)


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
    assert legend == ["† Lyra: run with another protocol than the column's reference runs (grid.lrs, preset); "
                      "not compared with them"]
    assert "- † Lyra" in render(board, "md")


def test_other_test_items_are_marked_and_skipped_items_shown(tmp_path):
    write_result(tmp_path, make_result("a/model", "carnatic", 0.833, 0.782))
    write_result(tmp_path, make_result("b/model", "carnatic", 0.8, 0.7))
    write_result(tmp_path, make_result("c/model", "carnatic", 0.8, 0.7, test_ids=TEST_IDS[:8], test_total=10))
    board = leaderboard_frames(read_results(tmp_path))
    table = board.frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["a/model", "Carnatic"] == "83.3 / 78.2"
    assert table.loc["c/model", "Carnatic"] == "80.0 / 70.0 (8/10 test)§"
    assert any(note.startswith("§ Carnatic: scored on other test items") for note in board.notes)
    relabelled = make_result("d/model", "carnatic", 0.8, 0.7, dataset={"identity": "other-labels"})
    write_result(tmp_path, relabelled)
    table = leaderboard_frames(read_results(tmp_path)).frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["d/model", "Carnatic"] == "80.0 / 70.0§"  # same items, another dataset version
    assert "(k/n test): k of the dataset's n test items had usable audio" in board.notes


def test_a_model_with_two_protocols_on_a_dataset_gets_a_row_named_by_what_differs(tmp_path):
    write_result(tmp_path, make_result("a/model", "lyra", 0.9, 0.6, preset="culturemert"))
    write_result(tmp_path, make_result("a/model", "lyra", 0.85, 0.55, lrs=(1e-2,), preset="culturemert",
                                       created="2026-03-01T00:00:00+00:00", protocol={"overrides": ["lrs"]}))
    write_result(tmp_path, make_result("b/model", "lyra", 0.8, 0.5, preset="culturemert"))
    board = leaderboard_frames(read_results(tmp_path))
    table = board.frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["a/model", "Lyra"] == "90.0 / 60.0"  # the preset's own grid, though older
    assert table.loc["a/model (grid 1 lr × all layers + weighted)", "Lyra"] == "85.0 / 55.0†"
    assert not any("run 2" in label for label in table.index)
    assert any(note.startswith('a row "<model> (...)" holds the model\'s other runs') for note in board.notes)


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
    assert table.loc["a/model", "Carnatic"] == "80.0 / 40.0 (8/10 test)§"
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


def test_latex_leaderboard_has_no_unicode_marks_and_escapes(tmp_path):
    write_result(tmp_path, make_result("a/model", "lyra", 0.9, 0.6, name="A_model & co"))
    write_result(tmp_path, make_result("b/model", "lyra", 0.8, 0.5))
    write_result(tmp_path, make_result("c/model", "lyra", 0.7, 0.4, lrs=(1e-2,)))
    write_result(tmp_path, make_result("d/model", "carnatic", 0.7, 0.4, test_ids=TEST_IDS[:8], test_total=10))
    write_result(tmp_path, make_result("ntua-slp/CultureMERT-95M", "carnatic", 0.7, 0.4))
    write_result(tmp_path, make_result("f/model", "carnatic", 0.7, 0.4))
    text = render(leaderboard_frames(read_results(tmp_path), published=True), "latex")
    assert not set("†‡§Δ≈±²–") & set(text), sorted(set("†‡§Δ≈±²–") & set(text))
    assert r"70.0 / 40.0\dag{}" in text and r"\S{}" in text and r"A\_model \& co" in text
    assert r"$\Delta$ ntua-slp/CultureMERT-95M (measured - published)" in text


def test_each_task_type_gets_its_own_tables(tmp_path):
    from tests.result_builders import make_task_result

    write_result(tmp_path, make_task_result("a/model", "gtzan", "multiclass", (0.748, 0.70)))
    write_result(tmp_path, make_task_result("a/model", "emo", "regression", (0.66, 0.763, 0.555)))
    write_result(tmp_path, make_task_result("a/model", "gs-key", "key", (0.635, 0.60)))
    write_result(tmp_path, make_task_result("a/model", "games", "multiclass", (0.688, 0.65)))
    write_result(tmp_path, make_result("a/model", "lyra", 0.9, 0.6))
    board = leaderboard_frames(read_results(tmp_path))
    assert list(board.frames) == ["ROC-AUC / mAP", "micro-F1 / macro-F1", "accuracy / macro-F1", "R²",
                                  "key score / accuracy"]
    single = board.frames["accuracy / macro-F1"].set_index("Model")
    assert list(single.columns) == ["GTZAN", "games", "Avg"]
    assert single.loc["a/model", "games"] == "68.8 / 65.0" and single.loc["a/model", "Avg"] == "69.7"  # (74.8 + 70 + 68.8 + 65) / 4
    assert board.frames["R²"].set_index("Model").loc["a/model", "EMO"] == "66.0"
    assert board.frames["key score / accuracy"].set_index("Model").loc["a/model", "GS-key"] == "63.5 / 60.0"
    assert list(board.frames["ROC-AUC / mAP"].columns) == ["Model", "Lyra", "Avg"]  # no tagging column of others
    assert any(n.startswith("Avg (accuracy / macro-F1): mean of the accuracy / macro-F1 numbers over GTZAN, games")
               for n in board.notes)
    for fmt in ("md", "csv", "latex"):
        assert "63.5 / 60.0" in render(board, fmt)


def test_marble_layout_columns_cells_and_averages(tmp_path):
    from tests.result_builders import make_task_result

    write_result(tmp_path, make_task_result("m/model", "mtg-top50", "multilabel", (0.83, 0.29, 0.4, 0.2)))
    write_result(tmp_path, make_result("m/model", "mtat-marble", 0.91, 0.393))
    write_result(tmp_path, make_task_result("m/model", "emo", "regression", (0.66, 0.763, 0.555)))
    write_result(tmp_path, make_task_result("m/model", "gtzan", "multiclass", (0.748, 0.70)))
    write_result(tmp_path, make_task_result("m/model", "vocalset-singer", "multiclass", (0.837, 0.80),
                                            dataset={"split_origin": "marble-eval"}))
    write_result(tmp_path, make_task_result("m/model", "fixture", "key", (0.5, 0.4)))
    board = leaderboard_frames(read_results(tmp_path), layout="marble")
    ((title, frame),) = board.frames.items()
    assert list(frame.columns) == ["Model", "GTZAN (accuracy)", "EMO (R² arousal / valence)",
                                   "VocalSet-singer‡ (accuracy)", "MTG-top50 (ROC-AUC / mAP)",
                                   "MTAT (MARBLE split) (ROC-AUC / mAP)", "fixture (key score)", "Avg accuracy",
                                   "Avg ROC-AUC", "Avg mAP"]
    row = frame.set_index("Model").loc["m/model"]
    assert row["EMO (R² arousal / valence)"] == "76.3 / 55.5" and row["fixture (key score)"] == "50.0"
    assert row["Avg accuracy"] == "79.2" and row["Avg ROC-AUC"] == "87.0" and row["Avg mAP"] == "34.1"
    assert "Avg accuracy: mean over GTZAN, VocalSet-singer (the columns with this metric that every measured row " \
           "has)" in board.notes
    assert any(note.startswith("‡ VocalSet-singer: split made by marble-eval") for note in board.notes)
    assert board.avg_datasets[title] == ["gtzan", "vocalset-singer", "mtg-top50", "mtat-marble"]
    with pytest.raises(MarbleEvalError, match="unknown layout 'paper'"):
        leaderboard_frames(read_results(tmp_path), layout="paper")


def test_marble_layout_without_a_shared_metric_has_no_average(tmp_path):
    from tests.result_builders import make_task_result

    write_result(tmp_path, make_task_result("m/model", "gtzan", "multiclass", (0.748, 0.70)))
    write_result(tmp_path, make_task_result("m/model", "gs-key", "key", (0.635, 0.60)))
    board = leaderboard_frames(read_results(tmp_path), layout="marble")
    (frame,) = board.frames.values()
    assert list(frame.columns) == ["Model", "GTZAN (accuracy)", "GS-key (key score)"]
    assert "Avg: none (no metric spans several columns that every measured row has)" in board.notes


def test_a_model_given_as_a_path_is_shown_by_its_last_component(tmp_path):
    write_result(tmp_path, make_result("/home/me/runs/mert-ft/", "lyra", 0.9, 0.6))
    write_result(tmp_path, make_result("./checkpoints/other", "lyra", 0.8, 0.5))
    write_result(tmp_path, make_result("m-a-p/MERT-v1-95M", "lyra", 0.8, 0.5))
    table = leaderboard_frames(read_results(tmp_path)).frames["ROC-AUC / mAP"]
    assert sorted(table["Model"]) == ["m-a-p/MERT-v1-95M", "mert-ft", "other"]


def test_cli_marble_layout_with_published_rows(tmp_path, capsys):
    from marble_eval.cli import main
    from tests.result_builders import make_task_result

    write_result(tmp_path, make_task_result("m-a-p/MERT-v1-95M", "gtzan", "multiclass", (0.75, 0.70), std=0.01))
    assert main(["leaderboard", "--results-dir", str(tmp_path), "--layout", "marble", "--published",
                 "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "| m-a-p/MERT-v1-330M (published)" in out and "| 77.6 " in out
    assert "| Δ m-a-p/MERT-v1-95M (measured - published) | +0.2≈" in out
    assert "GS-key (key score)" in out and "MARBLE v1 paper" in out
