"""marble_eval.metrics against scikit-learn, and the exclusion of undefined tags."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from marble_eval.errors import MarbleEvalError
from marble_eval.metrics import compute_metrics, macro_roc_auc, weighted_macro_metrics

TOL = 1e-6


def _random_case(seed: int, n: int = 300, n_tags: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_tags)) < 0.3).astype(np.float32)
    scores = np.clip(0.35 * y + rng.random((n, n_tags)) * 0.7, 0, 1)
    scores[:5] = np.round(scores[:5], 1)  # a few ties, and scores exactly at 0.5
    return y, scores


def _sklearn(y: np.ndarray, s: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    if y.shape[1] == 1:  # scikit-learn reads one column as a binary task, where "micro" means accuracy
        f1 = f1_score(y[:, 0], s[:, 0] > threshold, zero_division=0)
        return {"roc_auc": roc_auc_score(y, s), "map": average_precision_score(y, s), "micro_f1": f1, "macro_f1": f1}
    return {
        "roc_auc": roc_auc_score(y, s, average="macro"),
        "map": average_precision_score(y, s, average="macro"),
        "micro_f1": f1_score(y, s > threshold, average="micro", zero_division=0),
        "macro_f1": f1_score(y, s > threshold, average="macro", zero_division=0),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_four_metrics_match_sklearn(seed: int) -> None:
    y, s = _random_case(seed)
    ours = compute_metrics(y, s)
    for key, expected in _sklearn(y, s).items():
        assert ours[key] == pytest.approx(expected, abs=TOL), key
    assert ours["excluded_tags"] == []
    for tag in range(y.shape[1]):
        assert ours["per_tag"][tag]["roc_auc"] == pytest.approx(roc_auc_score(y[:, tag], s[:, tag]), abs=TOL)
        assert ours["per_tag"][tag]["ap"] == pytest.approx(average_precision_score(y[:, tag], s[:, tag]), abs=TOL)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(4, 40),
    n_tags=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    threshold=st.sampled_from([0.3, 0.5, 0.7]),
)
def test_metrics_match_sklearn_on_random_inputs(n: int, n_tags: int, seed: int, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_tags)) < 0.5).astype(np.float32)
    y[0], y[1] = 1, 0  # every tag has a positive and a negative
    s = np.round(rng.random((n, n_tags)), 2)  # coarse scores: many ties
    ours = compute_metrics(y, s, threshold=threshold)
    for key, expected in _sklearn(y, s, threshold).items():
        assert ours[key] == pytest.approx(expected, abs=TOL), key


def test_tag_without_positive_is_excluded_and_named_not_scored_zero() -> None:
    y, s = _random_case(3, n_tags=6)
    y[:, 2] = 0  # no positive in this split
    tags = [f"tag{i}" for i in range(6)]
    ours = compute_metrics(y, s, tags=tags)
    kept = [0, 1, 3, 4, 5]
    assert ours["excluded_tags"] == ["tag2"]
    assert ours["roc_auc"] == pytest.approx(roc_auc_score(y[:, kept], s[:, kept]), abs=TOL)
    assert ours["map"] == pytest.approx(average_precision_score(y[:, kept], s[:, kept]), abs=TOL)
    assert ours["macro_f1"] == pytest.approx(f1_score(y[:, kept], s[:, kept] > 0.5, average="macro"), abs=TOL)
    # micro-F1 still counts false positives on the empty tag
    assert ours["micro_f1"] == pytest.approx(f1_score(y, s > 0.5, average="micro"), abs=TOL)
    assert ours["per_tag"]["tag2"] == {"roc_auc": None, "ap": None}
    # scored as 0 it would have pulled the macro ROC-AUC down by a sixth
    assert ours["roc_auc"] > 5 / 6 * ours["roc_auc"] + 0.05


def test_tag_without_negative_is_excluded_from_roc_auc_only() -> None:
    y, s = _random_case(4, n_tags=4)
    y[:, 1] = 1
    ours = compute_metrics(y, s)
    assert ours["excluded_tags"] == [1]
    assert ours["per_tag"][1]["roc_auc"] is None
    assert ours["per_tag"][1]["ap"] == pytest.approx(1.0)
    assert ours["roc_auc"] == pytest.approx(roc_auc_score(y[:, [0, 2, 3]], s[:, [0, 2, 3]]), abs=TOL)
    assert ours["map"] == pytest.approx(average_precision_score(y, s), abs=TOL)


def test_scores_must_be_probabilities() -> None:
    y, s = _random_case(5)
    with pytest.raises(MarbleEvalError, match="probabilities"):
        compute_metrics(y, s * 4 - 2)  # logits: torchmetrics would silently apply a sigmoid
    with pytest.raises(MarbleEvalError, match="NaN"):
        compute_metrics(y, np.where(s > 0.9, np.nan, s))
    with pytest.raises(MarbleEvalError, match="one name per column"):
        compute_metrics(y, s, tags=["a"])
    nudged = s.copy()
    nudged[0, 0] = 1 + 1e-9  # float rounding above 1 is clamped, not sigmoided
    assert compute_metrics(y, nudged)["roc_auc"] == pytest.approx(roc_auc_score(y, np.clip(nudged, 0, 1)), abs=TOL)


def test_macro_roc_auc_of_many_probes_matches_one_at_a_time() -> None:
    y, s = _random_case(6)
    y[:, 0] = 0
    stack = np.stack([s, s**3, 1 - s])
    many = macro_roc_auc(y, stack)
    assert many.shape == (3,)
    for value, scores in zip(many, stack):
        assert value == compute_metrics(y, scores)["roc_auc"]


def test_ranking_metrics_do_not_depend_on_column_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    import marble_eval.metrics.multilabel as metrics

    y, s = _random_case(7, n=120, n_tags=5)
    stack = np.stack([s, np.round(s, 1), s**2, 1 - s])  # rounding: many ties
    whole = macro_roc_auc(y, stack)
    whole_metrics = compute_metrics(y, stack[1])
    monkeypatch.setattr(metrics, "_COLUMN_CHUNK", 3)  # 20 columns in 7 chunks, one of them short
    np.testing.assert_array_equal(macro_roc_auc(y, stack), whole)
    assert compute_metrics(y, stack[1]) == whole_metrics
    assert whole[1] == pytest.approx(roc_auc_score(y, stack[1], average="macro"), abs=TOL)


def test_weighted_macro_metrics_equal_compute_metrics_on_repeated_items() -> None:
    rng = np.random.default_rng(11)
    y, s = _random_case(11, n=40, n_tags=4)
    s = np.round(s, 1)  # ties between items, on top of the copies of a drawn item
    y[:, 3] = 0
    y[:5, 3] = 1
    counts = np.stack([np.bincount(rng.integers(0, 40, 40), minlength=40) for _ in range(6)]).astype(np.float64)
    counts[5] = 0
    counts[5, 5:15] = 1  # a replicate without tag 3's positives (no ROC-AUC, no AP for it)
    ours = weighted_macro_metrics(y, s, counts)
    for b in range(6):
        rows = np.repeat(np.arange(40), counts[b].astype(int))
        expected = compute_metrics(y[rows], s[rows])
        assert (3 in expected["excluded_tags"]) == (b == 5)
        assert ours["roc_auc"][b] == pytest.approx(expected["roc_auc"], abs=TOL)
        assert ours["map"][b] == pytest.approx(expected["map"], abs=TOL)
    plain = weighted_macro_metrics(y, s, np.ones((1, 40)))
    assert plain["roc_auc"][0] == compute_metrics(y, s)["roc_auc"]
