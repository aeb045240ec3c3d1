"""Resolve a dataset name (or a YAML path) to a loaded Dataset through its source parser."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from marble_eval.configs import load_config
from marble_eval.datasets.base import VOCABULARY_CHOICES, Dataset, check_limit
from marble_eval.datasets.spec import BenchmarkSpec
from marble_eval.errors import MarbleEvalError
from marble_eval.paths import benchmarks_dir

# source name -> "module:function" taking (spec, context) and returning a Dataset.
SOURCES: dict[str, str] = {
    "fixture": "marble_eval.datasets.sources.fixture:load",
    "dunya": "marble_eval.datasets.sources.dunya:load",            # makam, hindustani, carnatic (ccml split + metadata JSON)
    "path_lists": "marble_eval.datasets.sources.path_lists:load",  # one path list per split, class = folder (gtzan)
    "emomusic": "marble_eval.datasets.sources.emomusic:load",      # jukemir's emomusic.json (emo)
    "nsynth": "marble_eval.datasets.sources.nsynth:load",          # NSynth examples.json in --data-dir
    "vocalset": "marble_eval.datasets.sources.vocalset:load",      # VocalSet files in --data-dir, marble-eval's split
    "lyra": "marble_eval.datasets.sources.lyra:load",              # Lyra TSVs
    "fma": "marble_eval.datasets.sources.fma:load",                # ccml FMA-medium split + metadata.npy or tracks.csv
    "mtat": "marble_eval.datasets.sources.mtat:load_split_files",  # MTAT clean split files + annotations_final.csv
    "mtat_folders": "marble_eval.datasets.sources.mtat:load_folders",  # MARBLE's MTAT folder split
    "manifest": "marble_eval.datasets.sources.manifest:load",      # a user's CSV/JSONL manifest
    "giantsteps": "marble_eval.datasets.sources.giantsteps:load",  # MARBLE v1's GiantSteps key split (gs-key)
    "mtg_jamendo": "marble_eval.datasets.sources.mtg_jamendo:load",  # MTG-Jamendo autotagging split-0 TSVs (mtg-*)
}

# The MARBLE v1 suite (`--dataset marble`): its clip-level tasks in the order of MARBLE's tables.
MARBLE_TASKS: tuple[str, ...] = (
    "gtzan", "gs-key", "emo", "nsynth-instrument", "nsynth-pitch", "vocalset-technique", "vocalset-singer",
    "mtg-top50", "mtg-genre", "mtg-instrument", "mtg-moodtheme", "mtat-marble",
)


@dataclass(frozen=True)
class LoadContext:
    """Where the user's audio and the reference files live for this run."""

    data_dir: Path | None = None
    reference_dir: Path | None = None   # None: $MARBLE_EVAL_REFERENCE_DIR, else fetch into the cache
    cache_dir: Path | None = None       # None: marble_eval.paths.cache_root()
    metadata: Path | None = None        # the user's label file (Dunya JSON, FMA tracks.csv, MTAT annotations)
    spec_dir: Path | None = None        # folder of the YAML (relative manifest paths start there)
    vocabulary: str = "counted"         # --vocabulary: "counted" (the YAML's rule) or "published"


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
                 cache_dir: Path | None = None, metadata: Path | None = None,
                 allow_unlabelled: bool = False, vocabulary: str = "counted", limit: int | None = None) -> Dataset:
    """Load a dataset by name or YAML path; ``data_dir`` holds its audio.

    Reference files come from ``reference_dir`` (or $MARBLE_EVAL_REFERENCE_DIR), else are fetched into
    ``cache_dir`` and sha256-checked. ``metadata`` is the user's label file where a dataset needs one.
    A dataset whose labels are unavailable raises unless ``allow_unlabelled`` (then
    ``Dataset.missing_labels`` says why and how to get them). ``vocabulary``: "counted" builds the
    label set by the YAML's rule; "published" takes the dataset's published tag list (LC-Protonets'
    "train" list for makam, hindustani, carnatic) in its order. ``limit``: keep the first N items of
    each split (a smoke run; the vocabulary is the full dataset's). Both are recorded on the Dataset
    (``vocabulary_source``, ``limit``) and in its ``identity()``.
    """
    if vocabulary not in VOCABULARY_CHOICES:
        raise MarbleEvalError(f"--vocabulary {vocabulary!r}: use one of {', '.join(VOCABULARY_CHOICES)}")
    check_limit(limit)
    spec = load_spec(name)
    path = spec_path(name)
    context = LoadContext(
        data_dir=Path(data_dir) if data_dir else None,
        reference_dir=Path(reference_dir) if reference_dir else None,
        cache_dir=Path(cache_dir) if cache_dir else None,
        metadata=Path(metadata) if metadata else None,
        spec_dir=path.resolve().parent,
        vocabulary=vocabulary,
    )
    dataset = source_loader(spec.source, _where_key(path, "source"))(spec, context)
    dataset.dataset_arg = str(name)  # hints then name the exact --dataset that works (a custom YAML by path)
    if vocabulary == "published" and dataset.vocabulary_source != "published":
        raise MarbleEvalError(f"{spec.name}: --vocabulary published needs a published tag list (vocabulary."
                              f"compare_with in its YAML), and this dataset has none (its vocabulary is "
                              f"{dataset.vocabulary_source}); use --vocabulary counted")
    if dataset.missing_labels and not allow_unlabelled:
        raise MarbleEvalError(dataset.missing_labels)
    return dataset.first(limit) if limit is not None else dataset


def _where_key(path: Path, key: str) -> str:
    """``path: line N`` of a top-level YAML key (just ``path`` when not found)."""
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith(f"{key}:"):
            return f"{path}: line {number}"
    return str(path)
