"""Every task type's metrics against scikit-learn and mir_eval on random predictions, and the key labels."""

from __future__ import annotations

import mir_eval
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, r2_score

from marble_eval.errors import MarbleEvalError
from marble_eval.metrics import bootstrap_statistics, compute_metrics, monitor_scores, task_metrics
from marble_eval.metrics.keys import KEY_CLASSES, parse_key
from marble_eval.metrics.table import METRICS, metric_spec
from marble_eval.tasks import TASK_TYPES, expand_metrics

TOL = 1e-12


@pytest.mark.parametrize("seed", range(5))
def test_multiclass_accuracy_and_macro_f1_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 12))
    truth = rng.integers(0, n_classes, 150)
    probs = rng.dirichlet(np.ones(n_classes), 150)
    ours = task_metrics("multiclass", np.eye(n_classes)[truth], probs, [str(c) for c in range(n_classes)])
    guess = probs.argmax(1)
    assert ours["accuracy"] == pytest.approx(accuracy_score(truth, guess), abs=TOL)
    assert ours["macro_f1"] == pytest.approx(f1_score(truth, guess, average="macro", zero_division=0), abs=TOL)


@pytest.mark.parametrize("seed", range(5))
def test_key_score_equals_mir_eval_weighted_score(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 24, 300)
    probs = rng.dirichlet(np.ones(24), 300)
    # make every relation occur: estimated keys a fifth up, relative and parallel to the truth
    guess_shift = np.array([(t % 12 + 7) % 12 + 12 * (t // 12) for t in truth[:40]])
    probs[np.arange(40), guess_shift] = 2.0
    ours = task_metrics("key", np.eye(24)[truth], probs, KEY_CLASSES)
    expected = np.mean([mir_eval.key.weighted_score(KEY_CLASSES[t], KEY_CLASSES[g])
                        for t, g in zip(truth, probs.argmax(1))])
    assert ours["key_score"] == pytest.approx(expected, abs=TOL)
    assert ours["accuracy"] == pytest.approx(accuracy_score(truth, probs.argmax(1)), abs=TOL)


def test_every_key_pair_scores_as_mir_eval() -> None:
    for ref in range(24):
        for est in range(24):
            ours = task_metrics("key", np.eye(24)[[ref]], np.eye(24)[[est]], KEY_CLASSES)["key_score"]
            assert ours == mir_eval.key.weighted_score(KEY_CLASSES[ref], KEY_CLASSES[est]), (ref, est)


@pytest.mark.parametrize("seed", range(5))
def test_r2_uniform_average_and_per_target_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(80, 2)) * [3.0, 0.5] + [5.0, -1.0]
    pred = truth + rng.normal(size=(80, 2))
    ours = task_metrics("regression", truth, pred, ["arousal", "valence"])
    assert ours["r2"] == pytest.approx(r2_score(truth, pred), abs=1e-10)
    assert ours["r2_arousal"] == pytest.approx(r2_score(truth[:, 0], pred[:, 0]), abs=1e-10)
    assert ours["r2_valence"] == pytest.approx(r2_score(truth[:, 1], pred[:, 1]), abs=1e-10)


def test_bootstrap_statistics_equal_the_metric_on_repeated_items() -> None:
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 3, (3, 60)).astype(float)
    targets = rng.normal(size=(60, 2))
    pred = targets + rng.normal(size=(60, 2))
    classes = rng.integers(0, 24, 60)
    probs = rng.dirichlet(np.ones(24), 60)
    r2 = bootstrap_statistics("regression", targets, pred, counts)["r2"]
    keys = bootstrap_statistics("key", np.eye(24)[classes], probs, counts)
    for b, row in enumerate(counts.astype(int)):
        assert r2[b] == pytest.approx(r2_score(np.repeat(targets, row, 0), np.repeat(pred, row, 0)), abs=1e-10)
        repeated = task_metrics("key", np.eye(24)[np.repeat(classes, row)], np.repeat(probs, row, 0), KEY_CLASSES)
        assert keys["key_score"][b] == pytest.approx(repeated["key_score"], abs=TOL)
        assert keys["accuracy"][b] == pytest.approx(repeated["accuracy"], abs=TOL)


def test_monitor_scores_use_each_task_types_monitor() -> None:
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 5, 50)
    probs = rng.dirichlet(np.ones(5), (3, 50))
    probs[2, 0, 0] = np.nan  # a diverged probe
    scores = monitor_scores("multiclass", np.eye(5)[truth], probs)
    assert scores[:2] == pytest.approx([accuracy_score(truth, p.argmax(1)) for p in probs[:2]], abs=TOL)
    assert np.isnan(scores[2])
    tags = (rng.random((50, 4)) < 0.4).astype(float)
    scores = monitor_scores("multilabel", tags, probs[:2, :, :4])
    assert scores[0] == compute_metrics(tags, probs[0, :, :4])["roc_auc"]


@pytest.mark.parametrize("label, expected", [("C major", "C major"), ("F# minor", "Gb minor"),
                                             ("Db minor", "Db minor"), ("C:maj", "C major"), ("a:min", "A minor"),
                                             ("Bb", "Bb major"), ("  e minor ", "E minor"), ("A#:min", "Bb minor"),
                                             ("Cb major", "B major")])
def test_key_labels_parse_to_flat_spelled_classes(label: str, expected: str) -> None:
    assert KEY_CLASSES[parse_key(label)] == expected


@pytest.mark.parametrize("label", ["H major", "C dorian", "", "C# maj7", "12"])
def test_key_labels_that_do_not_parse_are_one_line_errors(label: str) -> None:
    with pytest.raises(MarbleEvalError, match="is not a key"):
        parse_key(label)


def test_every_task_metric_is_in_the_table() -> None:
    for task in TASK_TYPES.values():
        for key in expand_metrics(task.metrics, ["arousal"]):
            assert metric_spec(key).key == key
        assert task.monitor in METRICS and task.selection in METRICS
        for cell in task.cells:
            assert all(key in METRICS or key == "r2_*" for key in cell)
    assert metric_spec("r2_valence").tasks == ("regression",)
    assert set(metric_spec("accuracy").tasks) == {"multiclass", "key"}


def test_v1_empty_tags_score_roc_auc_and_f1_zero_but_leave_ap_out() -> None:
    rng = np.random.default_rng(9)
    y = (rng.random((60, 3)) < 0.5).astype(float)
    y[:, 2] = 0
    s = rng.random((60, 3))
    v1, zero = compute_metrics(y, s, empty_tags="v1"), compute_metrics(y, s, empty_tags="zero")
    defined = compute_metrics(y[:, :2], s[:, :2])
    assert v1["roc_auc"] == pytest.approx(zero["roc_auc"]) == pytest.approx(defined["roc_auc"] * 2 / 3)
    assert v1["map"] == pytest.approx(defined["map"])
    assert zero["map"] == pytest.approx(defined["map"] * 2 / 3)
    assert v1["macro_f1"] == zero["macro_f1"]
