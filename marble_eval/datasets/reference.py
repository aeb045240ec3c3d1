"""Reference split and metadata files: a local reference dir, or fetched into the cache, sha256-checked.

Resolution order for one ``files`` entry of a benchmark YAML:
1. a reference dir (``--reference-dir`` or ``MARBLE_EVAL_REFERENCE_DIR``) laid out like
   shared/reference/datasets: ``<dir>/<entry.path>`` must exist and match its sha256;
2. otherwise the cache (``<cache>/reference/<entry.path>``), downloaded from the pinned URL (or
   rebuilt from public inputs) when absent or stale. A file is used only once its sha256 matches.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from marble_eval.datasets.spec import BenchmarkSpec, RemoteFile
from marble_eval.errors import MarbleEvalError
from marble_eval.files import atomic_write_bytes, sha256_file
from marble_eval.paths import cache_root

REFERENCE_ENV = "MARBLE_EVAL_REFERENCE_DIR"
TIMEOUT_SECONDS = 60


def reference_dir(explicit: Path | None = None) -> Path | None:
    """The local reference dir: ``explicit``, else $MARBLE_EVAL_REFERENCE_DIR, else None (fetch)."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(REFERENCE_ENV)
    return Path(env).expanduser() if env else None


def reference_cache(cache_dir: Path | None = None) -> Path:
    """Where fetched reference files are kept."""
    return Path(cache_dir) / "reference" if cache_dir else cache_root() / "reference"


def resolve_file(spec: BenchmarkSpec, key: str, reference: Path | None = None,
                 cache_dir: Path | None = None) -> Path:
    """Local path of ``spec.files[key]``, its sha256 verified (fetching or building it if needed)."""
    if key not in spec.files:
        raise MarbleEvalError(f"benchmark {spec.name!r}: no files entry {key!r}; add it to benchmarks/{spec.name}.yaml")
    entry = spec.files[key]
    local = reference_dir(reference)
    if local is not None:
        path = local / entry.path
        if not path.is_file():
            raise MarbleEvalError(f"{path}: reference file not found (the reference dir must be laid out like "
                                  f"shared/reference/datasets); fix --reference-dir or unset {REFERENCE_ENV} to download")
        _check_hash(path, entry.sha256, str(path))
        return path
    target = reference_cache(cache_dir) / entry.path
    if target.is_file() and sha256_file(target) == entry.sha256:
        return target
    if entry.url is not None:
        _store(download(entry.url), target, entry.sha256, entry.url)
    else:
        _store(_build(spec, entry, reference, cache_dir), target, entry.sha256, f"{entry.path} (rebuilt)")
    return target


def download(url: str) -> bytes:
    """The bytes at ``url`` (https, http or file), or a one-line error naming it."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise MarbleEvalError(f"{url}: HTTP {exc.code} {exc.reason}; check the URL in the benchmark YAML") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MarbleEvalError(f"{url}: cannot download ({reason}); check the network, or pass --reference-dir "
                              f"(or {REFERENCE_ENV}) pointing at a local copy") from None


def _check_hash(path: Path, expected: str, where: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise MarbleEvalError(f"{where}: sha256 mismatch (got {actual[:16]}..., expected {expected[:16]}...); "
                              "the file is not the published one: replace it")


def _store(data: bytes, target: Path, expected: str, where: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise MarbleEvalError(f"{where}: sha256 mismatch (got {actual[:16]}..., expected {expected[:16]}...); "
                              "nothing was saved: the source changed or the download was corrupted")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, data)


def _build(spec: BenchmarkSpec, entry: RemoteFile, reference: Path | None, cache_dir: Path | None) -> bytes:
    assert entry.built_from is not None
    recipe = entry.built_from
    if recipe.recipe == "mtat_train_list":
        from marble_eval.datasets.sources.mtat_files import build_split_file

        index = resolve_file(spec, recipe.index, reference, cache_dir)
        return build_split_file(download(recipe.url), index, recipe.url)
    raise MarbleEvalError(f"benchmark {spec.name!r}: unknown build recipe {recipe.recipe!r}")
