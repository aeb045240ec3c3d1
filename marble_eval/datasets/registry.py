"""Resolve a dataset name (or a YAML path) to a loaded Dataset through its source parser."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from marble_eval.configs import load_config
from marble_eval.datasets.base import Dataset
from marble_eval.datasets.spec import BenchmarkSpec
from marble_eval.errors import MarbleEvalError
from marble_eval.paths import benchmarks_dir

# source name -> "module:function" taking (spec, context) and returning a Dataset.
SOURCES: dict[str, str] = {
    "fixture": "marble_eval.datasets.fixture:load",
}


@dataclass(frozen=True)
class LoadContext:
    """Where the user's audio and the reference files live for this run."""

    data_dir: Path | None = None
    reference_dir: Path | None = None
    cache_dir: Path | None = None


def known_datasets() -> list[str]:
    """Names of the YAMLs in benchmarks/."""
    return sorted(path.stem for path in benchmarks_dir().glob("*.yaml"))


def spec_path(name: str) -> Path:
    """The YAML for a dataset name, or ``name`` itself when it is a path to a YAML file."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    path = benchmarks_dir() / f"{name}.yaml"
    if not path.exists():
        raise MarbleEvalError(f"unknown dataset {name!r}; known: {', '.join(known_datasets())} (or a path to a YAML)")
    return path


def load_spec(name: str) -> BenchmarkSpec:
    """Read and validate the benchmark YAML for ``name``."""
    return load_config(BenchmarkSpec, spec_path(name))


def source_loader(source: str, where: str) -> Callable[[BenchmarkSpec, LoadContext], Dataset]:
    """The parser function registered for ``source``."""
    if source not in SOURCES:
        raise MarbleEvalError(f"{where}: unknown source {source!r}; known: {', '.join(sorted(SOURCES))}")
    module_name, function = SOURCES[source].split(":")
    return getattr(importlib.import_module(module_name), function)


def load_dataset(name: str, data_dir: Path | None = None, reference_dir: Path | None = None,
                 cache_dir: Path | None = None) -> Dataset:
    """Load a dataset by name or YAML path; ``data_dir`` holds its audio."""
    spec = load_spec(name)
    context = LoadContext(
        data_dir=Path(data_dir) if data_dir else None,
        reference_dir=Path(reference_dir) if reference_dir else None,
        cache_dir=Path(cache_dir) if cache_dir else None,
    )
    return source_loader(spec.source, str(spec_path(name)))(spec, context)
