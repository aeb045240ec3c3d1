"""Regenerate tests/golden/fixture.json from the default fixture run (`make eval` with no arguments).

Run after a change that is meant to move the fixture's numbers, and commit the file with a
message saying why. The regression test compares against it with the tolerances stored in it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from marble_eval.cli import main

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden" / "fixture.json"
# Same seeds on the same torch build give identical numbers; the margins absorb BLAS/CPU differences.
TOLERANCE = {"roc_auc": 0.01, "map": 0.015, "micro_f1": 0.03, "macro_f1": 0.04}


def default_fixture_run(workdir: Path) -> dict:
    """Run `marble-eval eval` exactly as `make eval` does by default; return the result JSON."""
    results = workdir / "results"
    code = main(["eval", "--model", "fixture", "--dataset", "fixture", "--cache-dir", str(workdir / "cache"),
                 "--results-dir", str(results), "--no-progress"])
    if code != 0:
        raise SystemExit(f"eval failed with exit code {code}")
    return json.loads(next(results.glob("fixture/*.json")).read_text())


def golden_from(result: dict) -> dict:
    return {
        "about": "metrics of the default fixture run (make eval); regenerate with scripts/update_golden.py",
        "tolerance": TOLERANCE,
        "summary": {metric: result["summary"][metric]["mean"] for metric in TOLERANCE},
        "selected": [{"seed": s["seed"], "lr": s["lr"], "layer": s["layer"]} for s in result["selected"]],
        "git_commit": result["environment"]["git_commit"],
        "packages": result["environment"]["packages"],
    }


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        golden = golden_from(default_fixture_run(Path(tmp)))
    GOLDEN.write_text(json.dumps(golden, indent=2) + "\n")
    print(f"wrote {GOLDEN}: {golden['summary']}")
    sys.exit(0)
