"""Published rows beside measured ones, measured - published differences, significance marks."""

from __future__ import annotations

import pytest

from marble_eval.cli import main
from marble_eval.report.published import PUBLISHED, find_published
from marble_eval.report.leaderboard import leaderboard_frames
from marble_eval.results.store import SCHEMA_VERSION, read_results, write_result


def _result(model: str, dataset: str, auc: float, ap: float) -> dict:
    stat = lambda v: {"mean": v, "std": 0.0, "n": 5}  # noqa: E731
    return {"schema_version": SCHEMA_VERSION, "model": {"id": model}, "dataset": {"name": dataset},
            "protocol": {"recipe": {"name": "mlp"}},
            "summary": {"roc_auc": stat(auc), "map": stat(ap), "micro_f1": stat(0.5), "macro_f1": stat(0.25)}}


@pytest.mark.parametrize("entry", PUBLISHED, ids=lambda e: e.model_id)
def test_published_cells_reproduce_the_cards_averages(entry):
    auc_map = [v for s in entry.scores.values() for v in (s.roc_auc, s.map)]
    f1 = [v for s in entry.scores.values() for v in (s.micro_f1, s.macro_f1)]
    assert len(entry.scores) == 6
    assert sum(auc_map) / 12 == pytest.approx(entry.avg_auc_map, abs=0.05)
    assert sum(f1) / 12 == pytest.approx(entry.avg_f1, abs=0.15)  # the card averaged unrounded cells


def test_published_rows_and_measured_minus_published(tmp_path):
    write_result(tmp_path, _result("ntua-slp/CultureMERT-95M", "carnatic", 0.80, 0.401))
    write_result(tmp_path, _result("other/model", "carnatic", 0.70, 0.30))
    frames = leaderboard_frames(read_results(tmp_path), published=True)
    table = frames["ROC-AUC / mAP"].set_index("Model")
    assert "ntua-slp/CultureMERT-95M (published)" in table.index
    assert table.loc["m-a-p/MERT-v1-95M (published)", "Carnatic"] == "74.9 / 39.7"
    assert table.loc["m-a-p/MERT-v1-95M (published)", "Avg"] == "66.1"
    delta = table.loc["Δ ntua-slp/CultureMERT-95M (measured - published)"]
    assert delta["Carnatic"] == "+0.8 / -3.0"  # 80.0 - 79.2, 40.1 - 43.1
    assert delta["Avg"] == "-1.1" and delta["Lyra"] == ""
    assert not any(name.startswith("Δ other") for name in table.index)
    plain = leaderboard_frames(read_results(tmp_path))["ROC-AUC / mAP"]
    assert list(plain["Model"]) == ["ntua-slp/CultureMERT-95M", "other/model"]


def test_find_published_by_short_name():
    assert find_published("CultureMERT-TA-95M").model_id == "ntua-slp/CultureMERT-TA-95M"
    assert find_published("/models/mert-v1-95m/").model_id == "m-a-p/MERT-v1-95M"
    assert find_published("fixture") is None


def test_winner_marks_and_cli_published(tmp_path, capsys):
    write_result(tmp_path, _result("a/model", "lyra", 0.9, 0.6))
    write_result(tmp_path, _result("b/model", "lyra", 0.8, 0.5))
    winners = {("lyra", "a/model", "roc_auc"): True}
    table = leaderboard_frames(read_results(tmp_path), winners=winners)["ROC-AUC / mAP"].set_index("Model")
    assert table.loc["a/model", "Lyra"] == "90.0* / 60.0" and table.loc["b/model", "Lyra"] == "80.0 / 50.0"
    assert main(["leaderboard", "--results-dir", str(tmp_path), "--published"]) == 0
    out = capsys.readouterr().out
    assert "| ntua-slp/CultureMERT-TA-95M (published) |" in out.replace("  ", "")
    assert "no per-item predictions for a/model on lyra" in out
    assert "(published)" in (tmp_path / "LEADERBOARD.md").read_text()
