"""Published rows beside measured ones (CultureMERT cards; MARBLE v1 paper), measured - published per cell with
its marks, significance marks."""

from __future__ import annotations

import pytest

from marble_eval.cli import main
from marble_eval.report.leaderboard import leaderboard_frames
from marble_eval.report.published import CULTUREMERT, find_published, marble_v1_rows
from marble_eval.results.store import read_results, write_result
from marble_eval.tasks import TASK_TYPES
from tests.result_builders import make_result, make_task_result


@pytest.mark.parametrize("entry", CULTUREMERT, ids=lambda e: e.model_id)
def test_published_cells_reproduce_the_cards_averages(entry):
    auc_map, f1 = TASK_TYPES["multilabel"].cells
    assert len(entry.scores) == 6
    values = [entry.value(d, m) for d in entry.scores for m in auc_map]
    assert sum(values) / 12 == pytest.approx(entry.averages[auc_map], abs=0.05)
    values = [entry.value(d, m) for d in entry.scores for m in f1]
    assert sum(values) / 12 == pytest.approx(entry.averages[f1], abs=0.15)  # the card averaged unrounded cells


def test_marble_v1_rows_hold_each_tasks_own_metrics():
    small, large = marble_v1_rows()  # read from the MARBLE tasks' YAMLs
    assert (small.model_id, large.model_id) == ("m-a-p/MERT-v1-95M", "m-a-p/MERT-v1-330M")
    assert small.scores["gtzan"] == {"accuracy": 74.8} and large.scores["gs-key"] == {"key_score": 61.7}
    assert small.scores["emo"] == {"r2_arousal": 76.3, "r2_valence": 55.5}
    assert large.scores["mtat-marble"] == {"roc_auc": 91.1, "map": 39.5}
    assert len(small.scores) == len(large.scores) == 12


def test_published_rows_and_measured_minus_published(tmp_path):
    # Carnatic, CultureMERT-95M card: 79.2 / 43.1. Measured 80.0 / 40.1 with a seed std of 1 point.
    write_result(tmp_path, make_result("ntua-slp/CultureMERT-95M", "carnatic", 0.80, 0.401, std=0.01))
    write_result(tmp_path, make_result("other/model", "carnatic", 0.70, 0.30))
    board = leaderboard_frames(read_results(tmp_path), published=True)
    table = board.frames["ROC-AUC / mAP"].set_index("Model")
    assert "ntua-slp/CultureMERT-95M (published)" in table.index
    assert table.loc["m-a-p/MERT-v1-95M (published)", "Carnatic"] == "74.9 / 39.7"
    # Avg over the datasets every measured row has (Carnatic), also for the published rows.
    assert table.loc["m-a-p/MERT-v1-95M (published)", "Avg"] == "57.3"
    delta = table.loc["Δ ntua-slp/CultureMERT-95M (measured - published)"]
    # +0.8 is within 2 std (2 points) but not within 0.5: no mark; -3.0 is beyond twice the std: "!".
    assert delta["Carnatic"] == "+0.8 / -3.0!"
    assert delta["Avg"] == "-1.1" and delta["Lyra"] == ""
    assert not any(name.startswith("Δ other") for name in table.index)
    assert any("Δ rows: measured - published" in note for note in board.notes)
    plain = leaderboard_frames(read_results(tmp_path)).frames["ROC-AUC / mAP"]
    assert list(plain["Model"]) == ["ntua-slp/CultureMERT-95M", "other/model"]


def test_cells_within_half_a_point_are_marked(tmp_path):
    write_result(tmp_path, make_result("m-a-p/MERT-v1-95M", "lyra", 0.859, 0.50, std=0.001))  # card 85.7 / 56.5
    table = leaderboard_frames(read_results(tmp_path), published=True).frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["Δ m-a-p/MERT-v1-95M (measured - published)", "Lyra"] == "+0.2≈ / -6.5!"


def test_a_one_seed_run_has_no_seed_std_to_be_far_from(tmp_path):
    write_result(tmp_path, make_result("m-a-p/MERT-v1-95M", "lyra", 0.877, 0.50, seeds=(0,)))
    table = leaderboard_frames(read_results(tmp_path), published=True).frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["Δ m-a-p/MERT-v1-95M (measured - published)", "Lyra"] == "+2.0 / -6.5"


def test_full_coverage_uses_the_cards_printed_average(tmp_path):
    for dataset in ("makam", "hindustani", "carnatic", "lyra", "fma", "mtat"):
        write_result(tmp_path, make_result("x/model", dataset, 0.8, 0.4))
    table = leaderboard_frames(read_results(tmp_path), published=True).frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["m-a-p/MERT-v1-95M (published)", "Avg"] == "66.1"
    assert table.loc["ntua-slp/CultureMERT-95M (published)", "Avg"] == "69.3"


def test_marble_layout_published_rows_and_deltas(tmp_path):
    # GTZAN 95M: 74.8 (measured 75.0, std 1: "≈"); EMO arousal 76.3 / valence 55.5 (measured 70.0 / 55.8)
    write_result(tmp_path, make_task_result("m-a-p/MERT-v1-95M", "gtzan", "multiclass", (0.75, 0.7), std=0.01))
    write_result(tmp_path, make_task_result("m-a-p/MERT-v1-95M", "emo", "regression", (0.63, 0.70, 0.558),
                                            std=0.01))
    write_result(tmp_path, make_task_result("m-a-p/MERT-v1-95M", "vocalset-singer", "multiclass", (0.84, 0.8),
                                            std=0.01, dataset={"split_origin": "marble-eval"}))
    board = leaderboard_frames(read_results(tmp_path), published=True, layout="marble")
    (frame,) = board.frames.values()
    table = frame.set_index("Model")
    assert list(table.index) == ["m-a-p/MERT-v1-95M", "m-a-p/MERT-v1-95M (published)",
                                 "m-a-p/MERT-v1-330M (published)", "Δ m-a-p/MERT-v1-95M (measured - published)"]
    assert table.loc["m-a-p/MERT-v1-330M (published)", "EMO (R² arousal / valence)"] == "75.8 / 59.0"
    delta = table.loc["Δ m-a-p/MERT-v1-95M (measured - published)"]
    assert delta["GTZAN (accuracy)"] == "+0.2≈" and delta["EMO (R² arousal / valence)"] == "-6.3! / +0.3≈"
    assert delta["VocalSet-singer‡ (accuracy)"] == "+0.3≈"
    assert delta["Avg accuracy"] == "+0.2"  # mean of +0.2 and +0.3 (GTZAN and VocalSet-singer)
    assert list(table.columns)[:3] == ["GTZAN (accuracy)", "GS-key (key score)", "EMO (R² arousal / valence)"]
    assert any(note.startswith("published rows: MARBLE v1 paper") for note in board.notes)


def test_find_published_by_short_name():
    assert find_published("CultureMERT-TA-95M").model_id == "ntua-slp/CultureMERT-TA-95M"
    assert find_published("/models/mert-v1-95m/").model_id == "m-a-p/MERT-v1-95M"
    assert find_published("fixture") is None
    assert find_published("MERT-v1-330M", marble_v1_rows()).model_id == "m-a-p/MERT-v1-330M"


def test_winner_marks_and_cli_published(tmp_path, capsys):
    write_result(tmp_path, make_result("a/model", "lyra", 0.9, 0.6))
    write_result(tmp_path, make_result("b/model", "lyra", 0.8, 0.5))
    winners = {("lyra", "a/model", "roc_auc"): True}
    table = leaderboard_frames(read_results(tmp_path), winners=winners).frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["a/model", "Lyra"] == "90.0* / 60.0" and table.loc["b/model", "Lyra"] == "80.0 / 50.0"
    assert main(["leaderboard", "--results-dir", str(tmp_path), "--published"]) == 0
    out = capsys.readouterr().out
    assert "| ntua-slp/CultureMERT-TA-95M (published) |" in out.replace("  ", "")
    assert "no per-item predictions for a/model on lyra" in out
    assert "(published)" in (tmp_path / "LEADERBOARD.md").read_text()
