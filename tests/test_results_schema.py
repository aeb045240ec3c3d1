"""ProbeResult: schema-1 migration, strictness, docs in sync; the store: one file per identity, no overwrite."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from marble_eval.errors import MarbleEvalError
from marble_eval.results.schema import SCHEMA_VERSION, ProbeResult, schema_markdown
from marble_eval.results.store import find_existing, git_commit, read_results, result_path, write_result
from tests.result_builders import make_result

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]
SCHEMA_1_FILES = ["result_schema1.json", "result_schema1_presets.json"]
OLD_FILES = [*SCHEMA_1_FILES, "result_schema2.json"]  # result_schema2.json: written by the schema-2 code


@pytest.mark.parametrize("name", OLD_FILES)
def test_schema_1_and_2_files_are_migrated_on_read_and_written_as_schema_3(tmp_path, name):
    raw = json.loads((DATA / name).read_text())
    assert raw["schema_version"] == (2 if name == "result_schema2.json" else 1)
    result = ProbeResult.from_disk(DATA / name)
    assert result.schema_version == SCHEMA_VERSION == 3
    stat = result.summary["roc_auc"]
    assert isinstance(stat.mean, float) and isinstance(stat.std, float) and isinstance(stat.n, int)
    assert stat.mean == raw["summary"]["roc_auc"]["mean"] and stat.n == len(raw["selected"])
    assert [s.seed for s in result.selected] == [s["seed"] for s in raw["selected"]]
    assert result.selected[0].test.per_tag[raw["dataset"]["tags"][0]].roc_auc is not None
    assert result.protocol.recipe_name == "mlp" and result.protocol.grid.seeds == raw["protocol"]["grid"]["seeds"]
    assert result.dataset.identity is None and result.dataset.skipped_test_items == 0  # unknown in schema 1
    again = ProbeResult.from_disk(result.to_disk(tmp_path / "migrated.json"))
    written = json.loads((tmp_path / "migrated.json").read_text())
    assert written["schema_version"] == 3
    assert "accuracy" not in written["selected"][0]["test"]  # schema 2's null fields of other tasks are dropped
    assert result.selected[0].test.value("roc_auc") == raw["selected"][0]["test"]["roc_auc"]
    assert again == result


def test_a_metric_outside_the_metric_table_is_refused(tmp_path):
    data = make_result("a/model", "lyra", 0.9, 0.6).model_dump(mode="json")
    data["summary"]["rocauc"] = data["summary"]["roc_auc"]
    with pytest.raises(MarbleEvalError, match="unknown metric 'rocauc'"):
        ProbeResult.from_data(data, "typo.json")
    data["summary"].pop("rocauc")
    data["selected"] = [{"seed": 0, "lr": 0.001, "layer": 1, "valid": {"rocauc": 0.5}, "test": None}]
    with pytest.raises(MarbleEvalError, match="unknown metric 'rocauc'"):
        ProbeResult.from_data(data, "typo.json")


def test_newer_or_malformed_files_are_one_line_errors_naming_the_file(tmp_path):
    data = make_result("a/model", "lyra", 0.9, 0.6).model_dump(mode="json")
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**data, "schema_version": 4}))
    with pytest.raises(MarbleEvalError, match=r"newer\.json: schema_version 4 is not one this marble-eval reads"):
        ProbeResult.from_disk(newer)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({**data, "model": {**data["model"], "colour": "red"}}))
    with pytest.raises(MarbleEvalError, match=r"unknown\.json: model\.colour: Extra inputs are not permitted") as err:
        ProbeResult.from_disk(unknown)
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(MarbleEvalError, match=r"broken\.json: not a readable results JSON"):
        read_results(tmp_path)


def test_our_own_writes_cannot_drift_from_the_schema():
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        make_result("a/model", "lyra", 0.9, 0.6, timings={"load_seconds": 1, "probe_seconds": 2, "extra": 3})


def test_docs_results_md_carries_the_generated_field_reference():
    doc = (REPO / "docs" / "results.md").read_text()
    assert schema_markdown() in doc, "docs/results.md is stale: paste `python -m marble_eval.results.schema`"
    for name in ProbeResult.model_fields:
        assert f"| `{name}` |" in doc


def test_a_different_protocol_goes_to_a_different_file_and_a_rerun_is_a_no_op(tmp_path):
    full = make_result("a/model", "lyra", 0.9, 0.6, lrs=(1e-3, 1e-2, 1e-4))
    quick = make_result("a/model", "lyra", 0.7, 0.4, lrs=(1e-3,))
    full_path = write_result(tmp_path, full)
    before = full_path.read_bytes()
    quick_path = write_result(tmp_path, quick)
    assert quick_path != full_path and full_path.read_bytes() == before  # the quick grid left the full one alone
    assert full_path == result_path(tmp_path, full) and full_path.parent.name == "lyra"
    assert full_path.name.startswith("a_model__mlp__") and full_path.name.endswith(f"{full.identity().digest()[:8]}.json")
    assert find_existing(tmp_path, full.identity()) == full_path
    assert find_existing(tmp_path, make_result("a/model", "lyra", 0.9, 0.6, lrs=(5e-4,)).identity()) is None
    rerun = make_result("a/model", "lyra", 0.5, 0.2, lrs=(1e-3, 1e-2, 1e-4))  # same identity, other numbers
    assert write_result(tmp_path, rerun) == full_path and full_path.read_bytes() == before
    assert write_result(tmp_path, rerun, overwrite=True) == full_path
    assert ProbeResult.from_disk(full_path).summary["roc_auc"].mean == 0.5
    assert len(read_results(tmp_path)) == 2


def test_identity_covers_weights_dataset_and_protocol_not_the_display_name():
    base = make_result("a/model", "lyra", 0.9, 0.6)
    digest = base.identity().digest()
    assert make_result("a/model", "lyra", 0.1, 0.1, name="Shown name").identity().digest() == digest
    assert make_result("a/model", "lyra", 0.9, 0.6, fingerprint="other-weights").identity().digest() != digest
    assert make_result("a/model", "lyra", 0.9, 0.6, preset="culturemert").identity().digest() != digest
    assert make_result("a/model", "lyra", 0.9, 0.6, dataset={"identity": "other-items"}).identity().digest() != digest
    assert make_result("a/model", "lyra", 0.9, 0.6, protocol={"precision": "bf16"}).identity().digest() != digest


def _git(directory: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=directory, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="no git binary")
def test_git_commit_only_inside_a_marble_eval_checkout(tmp_path):
    other = tmp_path / "other-project"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "someone-else"\n')
    _git(other, "init", "-q")
    _git(other, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x")
    assert git_commit(other) is None  # a git checkout, but not of marble-eval
    inside = other / "site-packages"  # a package dir somewhere inside another repository
    inside.mkdir()
    (inside / "pyproject.toml").write_text('[project]\nname = "marble-eval"\n')
    assert git_commit(inside) is None
    ours = tmp_path / "marble-eval"
    ours.mkdir()
    (ours / "pyproject.toml").write_text('[project]\nname = "marble-eval"\n')
    assert git_commit(ours) is None  # not a git checkout at all
    _git(ours, "init", "-q")
    _git(ours, "add", "pyproject.toml")
    _git(ours, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "x")
    commit = git_commit(ours)
    assert commit is not None and len(commit) == 40
    (ours / "pyproject.toml").write_text('[project]\nname = "marble-eval"\nversion = "2"\n')
    assert git_commit(ours) == commit + "-dirty"
