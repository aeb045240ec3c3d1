"""Paired bootstrap: exact agreement with compute_metrics, coverage of the true difference, file contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from marble_eval.errors import MarbleEvalError
from marble_eval.metrics import compute_metrics
from marble_eval.report.significance import (
    bootstrap_counts,
    bootstrap_difference,
    compare_results,
    load_predictions,
    paired_bootstrap,
    significant_winners,
    weighted_macro_metrics,
)
from marble_eval.results.store import predictions_path, write_result
from tests.result_builders import make_result


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def test_weighted_metrics_equal_compute_metrics_on_explicit_resamples():
    rng = np.random.default_rng(1)
    n, tags = 40, 5
    y = (rng.random((n, tags)) < 0.2).astype(float)
    y[:, 4] = 0
    y[0, 4] = 1  # a rare tag: often absent from a resample, so excluded there
    scores = np.round(rng.random((n, tags)), 1)  # coarse scores: many ties
    counts = bootstrap_counts(n, 30, rng)
    got = weighted_macro_metrics(y, scores, counts)
    for b in range(30):
        idx = np.repeat(np.arange(n), counts[b].astype(int))
        expected = compute_metrics(y[idx], scores[idx])
        assert got["roc_auc"][b] == pytest.approx(expected["roc_auc"], abs=1e-6)  # torchmetrics: float32 inside
        assert got["map"][b] == pytest.approx(expected["map"], abs=1e-6)


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
        interval = bootstrap_difference(y, a, b, n_boot=300, seed=trial)["roc_auc"]
        covered += interval.low <= truth <= interval.high
    # 95% nominal; with 150 trials the binomial sd is 1.8 points, so accept 88%..99.5%.
    assert 0.88 <= covered / trials <= 0.995, covered / trials


def test_pairing_by_item_id_and_seed_handling(tmp_path):
    rng = np.random.default_rng(3)
    y, a, b = _binormal(rng, 300, (2.5, 0.0), np.array([0.3, 0.5]))
    ids = np.array([f"item{i:03d}" for i in range(300)])
    a_seeds = np.concatenate([a, np.clip(a + rng.normal(0, 0.01, a.shape), 0, 1)])
    perm = rng.permutation(300)[:250]  # model b scored a shuffled subset of the items
    paths = {}
    for name, item_ids, yy, probs in (("a", ids, y, a_seeds), ("b", ids[perm], y[perm], b[:, perm])):
        paths[name] = tmp_path / f"{name}.predictions.npz"
        np.savez(paths[name], item_ids=item_ids, y_true=yy.astype(np.float32), probs=probs.astype(np.float32),
                 seeds=np.arange(probs.shape[0], dtype=np.int64), tags=np.array(["raga--x", "tala--y"]))
    pa, pb = load_predictions(paths["a"]), load_predictions(paths["b"])
    forward = paired_bootstrap(pa, pb, n_boot=200)
    backward = paired_bootstrap(pb, pa, n_boot=200)
    # The point estimate is the seed-mean difference on the 250 shared items.
    common = np.sort(ids[perm])
    rows = np.searchsorted(ids, common)
    auc_a = np.mean([compute_metrics(y[rows], pa.probs[s][rows])["roc_auc"] for s in range(2)])
    auc_b = compute_metrics(y[rows], b[0][rows].astype(np.float32))["roc_auc"]
    assert forward["roc_auc"].diff == pytest.approx(auc_a - auc_b, abs=1e-6)
    assert forward["roc_auc"].significant and forward["roc_auc"].low > 0
    assert backward["roc_auc"].diff == pytest.approx(-forward["roc_auc"].diff)
    assert backward["roc_auc"].high < 0


def test_missing_predictions_are_a_note_and_bad_files_an_error(tmp_path):
    json_path = tmp_path / "carnatic" / "m__mlp__0123abcd.json"
    assert predictions_path(json_path) == tmp_path / "carnatic" / "m__mlp__0123abcd.predictions.npz"
    assert load_predictions(predictions_path(json_path)) is None
    result = make_result("m", "carnatic", 0.8, 0.4)
    write_result(tmp_path, result)
    comparisons, notes = compare_results([result])
    assert comparisons == [] and "no significance test" in notes[0]
    bad = tmp_path / "bad.predictions.npz"
    np.savez(bad, item_ids=np.array(["a"]), y_true=np.zeros((1, 2)))
    with pytest.raises(MarbleEvalError, match="lacks probs"):
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
