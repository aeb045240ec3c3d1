"""Where marble-eval keeps its files: cache root, benchmark and probe YAMLs.

The dataset and recipe YAMLs live in the top-level ``benchmarks/`` and ``probes/`` folders of a source
checkout; the wheel ships them inside the package as ``marble_eval/benchmarks`` and
``marble_eval/probe_recipes`` (pyproject's package-dir mapping), found through importlib.resources.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# folder inside the installed package -> folder of the source checkout (see pyproject's package-dir)
SHIPPED_FOLDERS = {"benchmarks": "benchmarks", "probe_recipes": "probes", "protocol_presets": "protocols"}


def cache_root() -> Path:
    """Root of extracted features, fetched reference files and generated fixtures."""
    env = os.environ.get("MARBLE_EVAL_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "marble-eval"


def source_checkout() -> Path | None:
    """The source checkout marble_eval runs from (editable install or PYTHONPATH), None when installed."""
    if (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "marble_eval" / "paths.py").is_file():
        return PROJECT_ROOT
    return None


def shipped_folder(name: str) -> Path:
    """The YAML folder ``name`` (a key of SHIPPED_FOLDERS): in the installed package, else in the checkout."""
    installed = resources.files("marble_eval").joinpath(name)
    if isinstance(installed, Path) and installed.is_dir():
        return installed
    return PROJECT_ROOT / SHIPPED_FOLDERS[name]


def benchmarks_dir() -> Path:
    """Folder holding one YAML per dataset (override with MARBLE_EVAL_BENCHMARKS)."""
    env = os.environ.get("MARBLE_EVAL_BENCHMARKS")
    return Path(env).expanduser() if env else shipped_folder("benchmarks")


def probes_dir() -> Path:
    """Folder holding one YAML per probe recipe (override with MARBLE_EVAL_PROBES)."""
    env = os.environ.get("MARBLE_EVAL_PROBES")
    return Path(env).expanduser() if env else shipped_folder("probe_recipes")


def protocols_dir() -> Path:
    """Folder holding one YAML per protocol preset (override with MARBLE_EVAL_PROTOCOLS)."""
    env = os.environ.get("MARBLE_EVAL_PROTOCOLS")
    return Path(env).expanduser() if env else shipped_folder("protocol_presets")
