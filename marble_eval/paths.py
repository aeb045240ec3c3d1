"""Where marble-eval keeps its files: cache root, benchmark and probe YAMLs."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """Root of extracted features, fetched reference files and generated fixtures."""
    env = os.environ.get("MARBLE_EVAL_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "marble-eval"


def benchmarks_dir() -> Path:
    """Folder holding one YAML per dataset (override with MARBLE_EVAL_BENCHMARKS)."""
    return Path(os.environ.get("MARBLE_EVAL_BENCHMARKS", PROJECT_ROOT / "benchmarks"))


def probes_dir() -> Path:
    """Folder holding one YAML per probe recipe (override with MARBLE_EVAL_PROBES)."""
    return Path(os.environ.get("MARBLE_EVAL_PROBES", PROJECT_ROOT / "probes"))


def protocols_dir() -> Path:
    """Folder holding one YAML per protocol preset (override with MARBLE_EVAL_PROTOCOLS)."""
    return Path(os.environ.get("MARBLE_EVAL_PROTOCOLS", PROJECT_ROOT / "protocols"))
