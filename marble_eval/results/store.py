"""Where results live: one file per (model, dataset, protocol), never mixed, never overwritten silently.

The file's schema is marble_eval.results.schema.ProbeResult (docs/results.md). A result's path is
``results/<dataset>/<model slug>__<recipe>__<identity digest[:8]>.json``: a different protocol (or
model weights, or dataset contents) lands in a different file, and the same one is found again by
``find_existing`` so a rerun can be a no-op.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

from marble_eval.errors import MarbleEvalError
from marble_eval.files import atomic_write_bytes, slug
from marble_eval.paths import PROJECT_ROOT
from marble_eval.results.schema import EnvironmentRecord, ProbeResult, ResultIdentity
from marble_eval.tasks import task_type

PACKAGES = ("marble-eval", "torch", "transformers", "lightning", "torchmetrics", "numpy", "huggingface_hub",
            "soundfile", "soxr")
PROJECT_NAME = "marble-eval"


def environment(package_dir: Path = PROJECT_ROOT) -> EnvironmentRecord:
    """Package versions, interpreter, platform and the git commit of the code that ran."""
    versions: dict[str, Any] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return EnvironmentRecord(packages=versions, python=sys.version.split()[0], platform=platform.platform(),
                             git_commit=git_commit(package_dir))


def _is_marble_eval_checkout(directory: Path) -> bool:
    """True when ``directory`` holds marble-eval's own pyproject.toml (a source checkout, not a site-packages)."""
    try:
        project = tomllib.loads((directory / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return project.get("name") == PROJECT_NAME


def git_commit(package_dir: Path = PROJECT_ROOT) -> str | None:
    """HEAD of the marble-eval git checkout at ``package_dir`` ("-dirty" with uncommitted changes).

    None unless ``package_dir`` is the top of a git work tree whose pyproject.toml names marble-eval:
    an installed package inside some other repository must not record that repository's commit.
    """
    if not _is_marble_eval_checkout(package_dir):
        return None
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], check=False, cwd=package_dir, capture_output=True,
                             text=True, timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != Path(package_dir).resolve():
            return None
        head = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=package_dir, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False,
                               cwd=package_dir,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def utc_now() -> str:
    """The current UTC time, ISO 8601, whole seconds."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def result_path(results_dir: Path, result: ProbeResult) -> Path:
    """results/<dataset>/<model slug>__<recipe>__<identity digest[:8]>.json"""
    name = f"{slug(result.model.id, 80)}__{slug(result.protocol.recipe_name)}__{result.identity().digest()[:8]}"
    return Path(results_dir) / slug(result.dataset.name) / f"{name}.json"


def find_existing(results_dir: Path, identity: ResultIdentity) -> Path | None:
    """The result file under ``results_dir`` that measured exactly ``identity``, if there is one."""
    digest = identity.digest()
    folder = Path(results_dir) / slug(identity.dataset)
    for path in sorted(folder.glob(f"*__{digest[:8]}.json")) if folder.is_dir() else []:
        if ProbeResult.from_disk(path).identity().digest() == digest:
            return path
    return None


def write_result(results_dir: Path, result: ProbeResult, overwrite: bool = False) -> Path:
    """Write ``result`` to its own file; returns the path.

    A file of the same identity is left as it is (a rerun of the same protocol is a no-op) unless
    ``overwrite``; results of any other identity have other names and are never touched.
    """
    existing = find_existing(results_dir, result.identity())
    if existing is not None and not overwrite:
        return existing
    return result.to_disk(existing or result_path(results_dir, result))


def read_results(results_dir: Path) -> list[ProbeResult]:
    """Every results JSON under ``results_dir`` (schema-1 files migrated; other files' errors name them).

    JSON files without ``schema_version`` (e.g. a report's own JSON) are not results and are skipped.
    """
    results = []
    for path in sorted(Path(results_dir).glob("**/*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise MarbleEvalError(f"{path}: not a readable results JSON ({exc}); delete or regenerate it") from None
        if isinstance(data, dict) and "schema_version" in data:
            results.append(ProbeResult.from_data(data, str(path), path=path))
    return results


def predictions_path(result_json: Path) -> Path:
    """The per-item predictions file beside a results JSON: ``<name>.predictions.npz``."""
    path = Path(result_json)
    stem = path.name.removesuffix(".json")
    return path.with_name(stem + ".predictions.npz")


def write_predictions(result_json: Path, item_ids: list[str], y_true: np.ndarray, outputs: list[np.ndarray],
                      seeds: list[int], tags: list[str], task: str = "multilabel") -> Path:
    """Store the selected probes' test outputs per seed (for paired bootstrap tests and re-scoring).

    Arrays: item_ids [n], y_true [n, T], seeds [S], tags [T] (tags, classes or target names), and
    ``probs`` [S, n, T] float32 for classification tasks or ``y_pred`` [S, n, T] (regression, in the
    targets' units, like ``y_true``).
    """
    path = predictions_path(result_json)
    key = "y_pred" if task_type(task).activation == "identity" else "probs"
    buffer = io.BytesIO()
    np.savez_compressed(buffer, item_ids=np.array(item_ids), y_true=np.asarray(y_true, dtype=np.float32),
                        seeds=np.array(seeds, dtype=np.int64), tags=np.array(tags),
                        **{key: np.stack(outputs).astype(np.float32)})
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_predictions(result_json: Path) -> dict[str, np.ndarray] | None:
    """The predictions file beside a results JSON as {item_ids, y_true, seeds, tags, outputs}
    (``outputs`` = its ``probs`` or ``y_pred``), or None when there is none."""
    path = predictions_path(result_json)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise MarbleEvalError(f"{path}: not a readable predictions file ({exc}); rerun the probe to rewrite it") from None
    missing = [key for key in ("item_ids", "y_true", "seeds", "tags") if key not in arrays]
    missing += [] if "y_pred" in arrays or "probs" in arrays else ["probs (or y_pred)"]
    if missing:
        raise MarbleEvalError(f"{path}: predictions file lacks {', '.join(missing)}; rerun the probe to rewrite it")
    arrays["outputs"] = arrays.pop("y_pred") if "y_pred" in arrays else arrays.pop("probs")
    return arrays
