"""Published rows beside measured ones, measured - published per cell with its marks, significance marks."""

from __future__ import annotations

import pytest

from marble_eval.cli import main
from marble_eval.report.leaderboard import leaderboard_frames
from marble_eval.report.published import PUBLISHED, find_published
from marble_eval.results.store import read_results, write_result
from tests.result_builders import make_result


@pytest.mark.parametrize("entry", PUBLISHED, ids=lambda e: e.model_id)
def test_published_cells_reproduce_the_cards_averages(entry):
    auc_map = [v for s in entry.scores.values() for v in (s.roc_auc, s.map)]
    f1 = [v for s in entry.scores.values() for v in (s.micro_f1, s.macro_f1)]
    assert len(entry.scores) == 6
    assert sum(auc_map) / 12 == pytest.approx(entry.avg_auc_map, abs=0.05)
    assert sum(f1) / 12 == pytest.approx(entry.avg_f1, abs=0.15)  # the card averaged unrounded cells


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
    assert any(note.startswith("Δ rows: measured - published") for note in board.notes)
    plain = leaderboard_frames(read_results(tmp_path)).frames["ROC-AUC / mAP"]
    assert list(plain["Model"]) == ["ntua-slp/CultureMERT-95M", "other/model"]


def test_cells_within_half_a_point_are_marked(tmp_path):
    write_result(tmp_path, make_result("m-a-p/MERT-v1-95M", "lyra", 0.859, 0.50, std=0.001))  # card 85.7 / 56.5
    table = leaderboard_frames(read_results(tmp_path), published=True).frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["Δ m-a-p/MERT-v1-95M (measured - published)", "Lyra"] == "+0.2≈ / -6.5!"


def test_full_coverage_uses_the_cards_printed_average(tmp_path):
    for dataset in ("makam", "hindustani", "carnatic", "lyra", "fma", "mtat"):
        write_result(tmp_path, make_result("x/model", dataset, 0.8, 0.4))
    table = leaderboard_frames(read_results(tmp_path), published=True).frames["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["m-a-p/MERT-v1-95M (published)", "Avg"] == "66.1"
    assert table.loc["ntua-slp/CultureMERT-95M (published)", "Avg"] == "69.3"


def test_find_published_by_short_name():
    assert find_published("CultureMERT-TA-95M").model_id == "ntua-slp/CultureMERT-TA-95M"
    assert find_published("/models/mert-v1-95m/").model_id == "m-a-p/MERT-v1-95M"
    assert find_published("fixture") is None


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
