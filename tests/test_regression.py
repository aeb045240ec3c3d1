"""CI regression: the default fixture run (what `make eval` does) against the committed golden file.

Tolerances are stored in tests/golden/fixture.json (absolute, on fractions); a change that breaks
learning moves ROC-AUC far outside them (chance is 0.5), and the run must stay clearly above chance.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from update_golden import GOLDEN, default_fixture_run  # noqa: E402


@pytest.mark.slow
def test_default_fixture_run_matches_the_golden_file(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    result = default_fixture_run(tmp_path)
    protocol = result["protocol"]
    assert (protocol["preset"], protocol["batch_unit"], protocol["weighted_init"], protocol["precision"]) == (
        "culturemert", "item", "randn", "fp32")
    assert protocol["grid"]["seeds"] == [0, 1, 2, 3, 4] and not protocol["overrides"]
    measured = {metric: result["summary"][metric]["mean"] for metric in golden["tolerance"]}
    assert measured["roc_auc"] > 0.7, f"fixture ROC-AUC {measured['roc_auc']:.3f}: the probes no longer learn"
    for metric, tolerance in golden["tolerance"].items():
        assert measured[metric] == pytest.approx(golden["summary"][metric], abs=tolerance), (
            f"{metric}: measured {measured[metric]:.4f}, golden {golden['summary'][metric]:.4f} (± {tolerance}); "
            f"if the change is intended, run scripts/update_golden.py and commit the file")


def test_the_readme_make_eval_output_stays_within_the_golden_tolerance():
    """The README's `make eval` "real output" must show numbers the golden run still gives (regenerate
    both together: scripts/update_golden.py, then paste a real `make eval`)."""
    import re

    golden = json.loads(GOLDEN.read_text())
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("$ make eval\n", 1)[1].split("```", 1)[0]
    line = next(text for text in block.splitlines() if text.startswith("fixture on fixture:"))
    labels = {"roc_auc": "ROC-AUC", "map": "mAP", "micro_f1": "micro-F1", "macro_f1": "macro-F1"}
    for metric, tolerance in golden["tolerance"].items():
        shown = float(re.search(rf"{re.escape(labels[metric])} (\d+\.\d)", line).group(1))
        assert shown == pytest.approx(100 * golden["summary"][metric], abs=100 * tolerance + 0.05), (
            f"README shows {labels[metric]} {shown}, the golden run gives {100 * golden['summary'][metric]:.1f}")
