"""`marble-eval export` (tidy CSV / JSON, LaTeX, model-index YAML) and `marble-eval compare A B`."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from marble_eval.cli import main
from marble_eval.errors import MarbleEvalError
from marble_eval.report.compare import compare_models
from marble_eval.report.export import export
from marble_eval.results.schema import ProbeResult
from marble_eval.results.store import predictions_path, read_results, write_result
from tests.result_builders import make_result

TAGS = ["raga--a", "raga--b", "tala--c"]


def _with_selected(result: ProbeResult, per_tag: dict[str, float]) -> ProbeResult:
    selected = [{"seed": seed, "lr": 1e-3, "layer": "weighted", "valid": None,
                 "test": {"roc_auc": 0.8, "per_tag": {t: {"roc_auc": v + 0.01 * seed, "ap": v / 2}
                                                       for t, v in per_tag.items()}}} for seed in (0, 1)]
    data = result.model_dump(mode="json")
    data["selected"] = selected
    data["dataset"]["tags"] = TAGS
    return ProbeResult.model_validate(data)


def _two_models(tmp_path, rng=None):
    rng = rng or np.random.default_rng(0)
    n = 120
    ids = [f"i{k}" for k in range(n)]
    y = (rng.random((n, len(TAGS))) < 0.4).astype(np.float32)
    for model, name, auc, shift, tag_auc in (("ntua-slp/CultureMERT-95M", "CultureMERT", 0.85, 3.0, 0.9),
                                             ("m-a-p/MERT-v1-95M", None, 0.75, 0.3, 0.7)):
        result = _with_selected(make_result(model, "carnatic", auc, auc - 0.4, std=0.01, test_ids=ids, name=name),
                                {t: tag_auc for t in TAGS})
        path = write_result(tmp_path, result)
        probs = 1 / (1 + np.exp(-(shift * y + rng.normal(size=(2, *y.shape)))))
        np.savez(predictions_path(path), item_ids=np.array(ids), y_true=y, probs=probs.astype(np.float32),
                 seeds=np.array([0, 1]), tags=np.array(TAGS))
    write_result(tmp_path, make_result("m-a-p/MERT-v1-95M", "lyra", 0.8, 0.5))
    return y


def test_tidy_csv_and_json_one_row_per_model_dataset_metric(tmp_path):
    _two_models(tmp_path)
    results = read_results(tmp_path)
    frame = pd.read_csv(io.StringIO(export(results, "tidy-csv")))
    assert len(frame) == 3 * 4  # 3 results x 4 metrics
    assert frame["mean"].dtype == float and frame["std"].dtype == float and frame["n_seeds"].dtype == int
    row = frame[(frame["model"] == "CultureMERT") & (frame["metric"] == "roc_auc")].iloc[0]
    assert row["mean"] == pytest.approx(85.0) and row["std"] == pytest.approx(1.0)
    assert row["model_id"] == "ntua-slp/CultureMERT-95M" and row["n_test_items"] == 120 and row["n_seeds"] == 5
    records = json.loads(export(results, "tidy-json"))
    assert len(records) == 12 and {"mean", "std", "n_seeds", "n_test_items", "preset"} <= set(records[0])


def test_latex_tables_with_std_and_the_best_in_bold(tmp_path):
    _two_models(tmp_path)
    text = export(read_results(tmp_path), "latex")
    assert text.count(r"\begin{tabular}") == 2
    assert r"\textbf{85.0 $\pm$ 1.0} / \textbf{45.0 $\pm$ 1.0}" in text  # CultureMERT best on Carnatic
    assert r"75.0 $\pm$ 1.0 / 35.0 $\pm$ 1.0" in text and "Avg over Carnatic" in text
    assert "MERT-v1-95M & 75.0" in text and r"\textbf{80.0 $\pm$ 0.0}" in text  # Lyra: only one model


def test_model_index_yaml_per_model(tmp_path):
    _two_models(tmp_path)
    documents = list(yaml.safe_load_all(export(read_results(tmp_path), "model-index")))
    assert len(documents) == 2
    block = {d["model-index"][0]["name"]: d["model-index"][0] for d in documents}
    mert = block["m-a-p/MERT-v1-95M"]
    assert [r["dataset"] for r in mert["results"]] == [{"name": "Carnatic", "type": "carnatic"},
                                                      {"name": "Lyra", "type": "lyra"}]
    first = mert["results"][0]
    assert first["task"] == {"type": "audio-classification", "name": "Music auto-tagging"}
    metrics = {m["type"]: m["value"] for m in first["metrics"][:2]}
    assert metrics == {"roc_auc": 75.0, "average_precision": 35.0}
    assert [m["type"] for m in first["metrics"]] == ["roc_auc", "average_precision", "f1", "f1"]
    assert all(isinstance(m["name"], str) for m in first["metrics"])


def test_export_cli_writes_a_file_and_refuses_an_empty_folder(tmp_path, capsys):
    _two_models(tmp_path / "results")
    out = tmp_path / "tidy.csv"
    assert main(["export", "--results-dir", str(tmp_path / "results"), "--format", "tidy-csv",
                 "--output", str(out)]) == 0
    assert len(pd.read_csv(out)) == 12
    (tmp_path / "empty").mkdir()
    assert main(["export", "--results-dir", str(tmp_path / "empty"), "--format", "latex"]) == 2
    assert "no results found" in capsys.readouterr().err


def test_compare_per_dataset_and_per_tag(tmp_path):
    y = _two_models(tmp_path)
    (carnatic,) = compare_models(read_results(tmp_path), "CultureMERT", "mert-v1-95m", n_boot=200)
    assert carnatic.dataset == "carnatic" and carnatic.intervals["roc_auc"].significant
    assert carnatic.intervals["roc_auc"].low > 0  # A (shift 3.0) beats B (shift 0.3)
    tags = carnatic.tags.set_index("tag")
    assert tags.loc["raga--a", "Δ ROC-AUC"] == pytest.approx(20.0)  # 90.5 - 70.5 (mean of two seeds)
    assert tags.loc["tala--c", "support"] == int(y[:, 2].sum())
    with pytest.raises(MarbleEvalError, match="no results for model 'nobody'"):
        compare_models(read_results(tmp_path), "nobody", "CultureMERT")
    with pytest.raises(MarbleEvalError, match="dataset 'lyra'; shared datasets: carnatic"):
        compare_models(read_results(tmp_path), "CultureMERT", "MERT-v1-95M", dataset="lyra")


def test_compare_does_not_test_results_of_different_protocols(tmp_path):
    write_result(tmp_path, make_result("a/model", "lyra", 0.9, 0.6))
    write_result(tmp_path, make_result("b/model", "lyra", 0.8, 0.5, lrs=(1e-2,)))
    (lyra,) = compare_models(read_results(tmp_path), "a/model", "b/model")
    assert lyra.intervals is None and lyra.note == "not tested: the results differ in grid.lrs"


def test_compare_cli_prints_both_tables(tmp_path, capsys):
    _two_models(tmp_path)
    assert main(["compare", "CultureMERT", "MERT-v1-95M", "--results-dir", str(tmp_path), "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "A = CultureMERT, B = m-a-p/MERT-v1-95M" in out and "85.0 ± 1.0" in out
    assert "#### Carnatic: per tag" in out and "| raga--a" in out
