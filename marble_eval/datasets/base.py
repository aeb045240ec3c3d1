"""What a loaded dataset is: items with splits and raw tags, plus the ordered vocabulary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from marble_eval.errors import MarbleEvalError
from marble_eval.files import sha256_json

SPLITS = ("train", "valid", "test")
TASKS = ("multilabel", "multiclass")


@dataclass(frozen=True)
class Item:
    """One clip or recording: its id, split, audio path relative to the data dir, raw tags."""

    id: str
    split: str
    path: str
    tags: tuple[str, ...] = ()


@dataclass
class Dataset:
    """A benchmark dataset resolved from its YAML: items, vocabulary and audio settings."""

    name: str
    task: str
    vocabulary: list[str]
    items: list[Item]
    version: str = "1"
    data_dir: Path | None = None
    max_seconds: float | None = None      # truncate audio (ccml: 150 s makam, ...)
    window_seconds: float = 0.0           # 0 = whole clip in one window
    notes: list[str] = field(default_factory=list)  # warnings to show the user (vocabulary drift, ...)
    missing_labels: str | None = None     # why labels are unavailable (splits still valid); None = labelled

    def identity(self) -> str:
        """sha256 of what the dataset resolved to: items (id, split, path, tags), vocabulary and audio settings.

        It changes whenever the manifest, the label files or the reference files change what is
        evaluated; the audio itself is identified per item by the feature cache.
        """
        return sha256_json({"name": self.name, "version": self.version, "task": self.task,
                            "vocabulary": list(self.vocabulary), "max_seconds": self.max_seconds,
                            "window_seconds": self.window_seconds,
                            "items": [[item.id, item.split, item.path, list(item.tags)] for item in self.items]})

    def split(self, name: str) -> list[Item]:
        """Items of one split, in dataset order."""
        return [item for item in self.items if item.split == name]

    def label_matrix(self, items: Iterable[Item]) -> np.ndarray:
        """[n_items, n_tags] 0/1 float32 matrix over the vocabulary (tags outside it are ignored)."""
        position = {tag: i for i, tag in enumerate(self.vocabulary)}
        items = list(items)
        matrix = np.zeros((len(items), len(self.vocabulary)), dtype=np.float32)
        for row, item in enumerate(items):
            for tag in item.tags:
                if tag in position:
                    matrix[row, position[tag]] = 1.0
        return matrix

    def audio_path(self, item: Item) -> Path:
        """Absolute audio path of ``item``; refuses paths that escape the data dir."""
        if self.data_dir is None:
            raise MarbleEvalError(f"dataset {self.name!r} has no data dir; pass --data-dir DIR")
        return safe_join(self.data_dir, item.path)


def safe_join(root: Path, relative: str) -> Path:
    """``root / relative`` resolved, refusing absolute paths and '..' escapes."""
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if Path(relative).is_absolute() or (candidate != root and root not in candidate.parents):
        raise MarbleEvalError(f"audio path {relative!r} escapes the data dir {root}; use a path inside it")
    return candidate


def top_n_vocabulary(tag_lists: Iterable[Iterable[str]], n: int) -> list[str]:
    """PROTOCOL top-N: count each tag once per item, sort alphabetically, stable-sort by count desc."""
    counts: Counter[str] = Counter()
    for tags in tag_lists:
        counts.update(set(tags))
    ordered = sorted(counts)
    ordered.sort(key=lambda tag: -counts[tag])
    return ordered[:n]
