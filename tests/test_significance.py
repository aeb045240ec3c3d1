"""Paired bootstrap: each task's own statistic, coverage of the true difference, one set of replicates per pair
(A - B mirrors B - A exactly, in the leaderboard and in compare), file contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from marble_eval.errors import MarbleEvalError
from marble_eval.metrics import compute_metrics, task_metrics
from marble_eval.report.significance import (
    bootstrap_difference,
    compare_results,
    load_predictions,
    paired_bootstrap,
    significant_winners,
)
from marble_eval.results.store import predictions_path, read_results, write_result
from marble_eval.tasks import TASK_TYPES
from tests.result_builders import (
    VOCABULARY,
    make_result,
    make_task_result,
    predictions_for,
    write_with_predictions,
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("task", list(TASK_TYPES))
def test_the_point_difference_is_each_tasks_own_metric(task):
    rng = np.random.default_rng(11)
    y, good = predictions_for(task, 80, 2, 3.0, rng)
    _, poor = predictions_for(task, 80, 1, 0.5, rng, y)
    intervals = bootstrap_difference(task, y, good, poor, n_boot=50, seed=1)
    targets = VOCABULARY[task]
    for metric, interval in intervals.items():
        assert metric in TASK_TYPES[task].metrics  # the task's own statistic, nothing else
        mean_good = np.mean([task_metrics(task, y, good[s], targets)[metric] for s in range(2)])
        expected = mean_good - task_metrics(task, y, poor[0], targets)[metric]
        assert interval.diff == pytest.approx(expected, abs=1e-5)
    assert set(intervals) == {"multilabel": {"roc_auc", "map"}, "multiclass": {"accuracy"},
                              "key": {"key_score", "accuracy"}, "regression": {"r2"}}[task]


def _binormal(rng: np.random.Generator, n: int, shifts: tuple[float, float], prevalence: np.ndarray):
    """Two models' scores sharing an item effect; separation ``shift`` gives ROC-AUC Phi(shift / 2)."""
    y = (rng.random((n, prevalence.size)) < prevalence).astype(float)
    item = rng.normal(size=y.shape)  # shared by both models: the pairing matters
    probs = [_sigmoid(shift * y + item + rng.normal(size=y.shape))[None] for shift in shifts]
    return y, probs[0], probs[1]


def test_roc_auc_interval_covers_the_true_difference_at_the_stated_rate():
    # Signal = shift * y, noise = item + model noise ~ N(0, 2): population ROC-AUC = Phi(shift / 2)
    # for every tag, so the true macro difference is known exactly.
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    shifts = (1.6, 1.2)
    truth = phi(shifts[0] / 2) - phi(shifts[1] / 2)
    prevalence = np.array([0.3, 0.4, 0.5])
    rng = np.random.default_rng(2024)
    trials, covered = 150, 0
    for trial in range(trials):
        y, a, b = _binormal(rng, 120, shifts, prevalence)
        interval = bootstrap_difference("multilabel", y, a, b, n_boot=300, seed=trial)["roc_auc"]
        covered += interval.low <= truth <= interval.high
    # 95% nominal; with 150 trials the binomial sd is 1.8 points, so accept 88%..99.5%.
    assert 0.88 <= covered / trials <= 0.995, covered / trials


def test_pairing_by_item_id_and_exact_mirror_images(tmp_path):
    rng = np.random.default_rng(3)
    y, a, b = _binormal(rng, 300, (2.5, 0.0), np.array([0.3, 0.5]))
    ids = np.array([f"item{i:03d}" for i in range(300)])
    a_seeds = np.concatenate([a, np.clip(a + rng.normal(0, 0.01, a.shape), 0, 1)])
    perm = rng.permutation(300)[:250]  # model b scored a shuffled subset of the items
    paths = {}
    for name, item_ids, yy, probs in (("a", ids, y, a_seeds), ("b", ids[perm], y[perm], b[:, perm])):
        paths[name] = tmp_path / f"{name}.json"
        np.savez(predictions_path(paths[name]), item_ids=item_ids, y_true=yy.astype(np.float32),
                 probs=probs.astype(np.float32), seeds=np.arange(probs.shape[0], dtype=np.int64),
                 tags=np.array(["raga--x", "tala--y"]))
    pa, pb = load_predictions(paths["a"]), load_predictions(paths["b"])
    forward, n_items = paired_bootstrap("multilabel", pa, pb, n_boot=200)
    backward, _ = paired_bootstrap("multilabel", pb, pa, n_boot=200)
    assert n_items == 250
    # The point estimate is the seed-mean difference on the 250 shared items.
    common = np.sort(ids[perm])
    rows = np.searchsorted(ids, common)
    auc_a = np.mean([compute_metrics(y[rows], pa.outputs[s][rows])["roc_auc"] for s in range(2)])
    auc_b = compute_metrics(y[rows], b[0][rows].astype(np.float32))["roc_auc"]
    assert forward["roc_auc"].diff == pytest.approx(auc_a - auc_b, abs=1e-6)
    assert forward["roc_auc"].significant and forward["roc_auc"].low > 0
    for metric in forward:  # one set of replicates: B - A is exactly the mirror of A - B
        assert (backward[metric].diff, backward[metric].low, backward[metric].high) == (
            -forward[metric].diff, -forward[metric].high, -forward[metric].low)
    again, _ = paired_bootstrap("multilabel", pa, pb, n_boot=200)
    assert again == forward  # seeded from the items: the same every time


def test_missing_predictions_are_a_note_and_bad_files_an_error(tmp_path):
    json_path = tmp_path / "carnatic" / "m__mlp__0123abcd.json"
    assert predictions_path(json_path) == tmp_path / "carnatic" / "m__mlp__0123abcd.predictions.npz"
    assert load_predictions(json_path) is None
    result = make_result("m", "carnatic", 0.8, 0.4)
    write_result(tmp_path, result)
    comparisons, notes = compare_results([result])
    assert comparisons == [] and "no significance test" in notes[0]
    bad = tmp_path / "bad.json"
    np.savez(predictions_path(bad), item_ids=np.array(["a"]), y_true=np.zeros((1, 2)))
    with pytest.raises(MarbleEvalError, match="lacks seeds, tags, probs"):
        load_predictions(bad)


def test_compare_results_marks_the_significant_winner(tmp_path):
    rng = np.random.default_rng(5)
    y, strong, weak = _binormal(rng, 200, (3.0, 0.3), np.array([0.3, 0.5, 0.4]))
    results = []
    for model, probs in (("good/model", strong), ("weak/model", weak), ("weak/twin", weak), ("other/grid", weak)):
        result = make_result(model, "fixture", 0.8, 0.4, test_ids=[str(i) for i in range(200)],
                             lrs=(1e-2,) if model == "other/grid" else (1e-3,))
        path = write_result(tmp_path, result)
        np.savez(predictions_path(path), item_ids=np.arange(200).astype(str), y_true=y, probs=probs,
                 seeds=np.array([0]), tags=np.array(["a", "b", "c"]))
        results.append(result)
    comparisons, notes = compare_results(results, n_boot=200)
    # other/grid ran another protocol: left out of the comparisons, with a note.
    assert notes == ["other/grid on fixture: another protocol or other test items than the other results there; "
                     "no significance test for it"]
    assert len(comparisons) == 3
    twins = [c for c in comparisons if {c.model_a, c.model_b} == {"weak/model", "weak/twin"}][0]
    assert twins.intervals["roc_auc"].diff == 0 and not twins.intervals["roc_auc"].significant
    winners = significant_winners(comparisons)
    assert winners == {("fixture", "good/model", "roc_auc"): True, ("fixture", "good/model", "map"): True}


def _interval_cell(text: str, dataset: str, metric_label: str) -> str:
    """The interval of ``metric_label`` in the Markdown row of ``dataset`` (``|``-separated table)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if dataset in cells[0]:
            return cells[header.index(metric_label)]
    raise AssertionError(f"no row for {dataset}")


def test_leaderboard_and_compare_show_mirror_images_of_one_interval(tmp_path, capsys):
    from marble_eval.cli import main

    rng = np.random.default_rng(8)
    ids = [f"i{k}" for k in range(90)]
    y = None
    for model, skill in (("strong/model", 2.5), ("weak/model", 1.0)):
        y, outputs = predictions_for("multiclass", 90, 3, skill, rng, y)
        write_with_predictions(tmp_path, make_task_result(model, "gtzan", "multiclass", (0.8 if skill > 2 else 0.6,
                                                                                         0.5), test_ids=ids),
                               y, outputs, ids)
    assert main(["leaderboard", "--results-dir", str(tmp_path), "--bootstrap", "300"]) == 0
    board = capsys.readouterr().out
    significance = board[board.index("### Paired bootstrap"):]
    leaderboard_cell = _interval_cell(significance, "GTZAN", "Δ accuracy")  # A = strong (higher accuracy)
    assert "strong/model | weak/model" in significance.replace("  ", " ").replace("  ", " ")
    assert main(["compare", "weak/model", "strong/model", "--results-dir", str(tmp_path), "--bootstrap", "300"]) == 0
    compare_cell = _interval_cell(capsys.readouterr().out, "GTZAN", "Δ A - B")
    number = r"([+-]\d+\.\d)"
    import re

    lb = [float(x) for x in re.findall(number, leaderboard_cell)]
    cp = [float(x) for x in re.findall(number, compare_cell)]
    assert lb[0] > 0 and cp == [-lb[0], -lb[2], -lb[1]]  # e.g. +17.0 [+3.8, +31.1] <-> -17.0 [-31.1, -3.8]
    assert read_results(tmp_path)  # the predictions files sit beside the results
