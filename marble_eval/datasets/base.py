"""What a loaded dataset is: items with splits and raw tags, plus the ordered vocabulary."""

from __future__ import annotations

import os
import shlex
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from marble_eval.errors import MarbleEvalError
from marble_eval.files import sha256_json
from marble_eval.tasks import SPLITS

VOCABULARY_CHOICES = ("counted", "published")  # what a user may ask for (--vocabulary)
VOCABULARY_SOURCES = ("counted", "published", "fixed")  # what Dataset.vocabulary_source records


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
    vocabulary_source: str = "counted"    # "counted" over the items, "published" list, or "fixed" in the YAML
    limit: int | None = None              # smoke run: only the first `limit` items of each split
    dataset_arg: str | None = None        # what to pass as --dataset to load it again (name or YAML path)

    def identity(self) -> str:
        """sha256 of what the dataset resolved to: items (id, split, path, tags), vocabulary and audio settings.

        It changes whenever the manifest, the label files or the reference files change what is
        evaluated; the audio itself is identified per item by the feature cache.
        """
        return sha256_json({"name": self.name, "version": self.version, "task": self.task,
                            "vocabulary": list(self.vocabulary), "vocabulary_source": self.vocabulary_source,
                            "max_seconds": self.max_seconds, "window_seconds": self.window_seconds,
                            "limit": self.limit,
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
        """Absolute audio path of ``item``; refuses paths that escape the data dir (symlinks included)."""
        return safe_join(self.require_data_dir(), item.path)

    def require_data_dir(self) -> Path:
        """The data dir, or a one-line error saying how to pass it (the exact command for this dataset)."""
        if self.data_dir is None:
            raise MarbleEvalError(f"{self.name}: no --data-dir given, and its audio is needed; pass --data-dir DIR "
                                  f"(the folder its audio paths are relative to), e.g. `{self._command('data check')}`")
        return Path(self.data_dir)

    def first(self, limit: int) -> Dataset:
        """A smoke-run copy: the first ``limit`` items of each split, same vocabulary, ``limit`` recorded."""
        check_limit(limit)
        taken: Counter[str] = Counter()
        kept = []
        for item in self.items:
            if taken[item.split] < limit:
                taken[item.split] += 1
                kept.append(item)
        note = (f"smoke run: only the first {limit} item(s) of each split "
                f"({' / '.join(str(taken[split]) for split in SPLITS)}); scores are not comparable with full runs")
        return replace(self, items=kept, limit=limit, notes=[*self.notes, note])

    def check_ready(self, need_audio: bool = True, need_labels: bool = True) -> None:
        """Refuse, in one line and before any extraction, what would fail every item or make the probe
        meaningless: an empty split; with ``need_labels``, missing labels or a vocabulary without one
        train positive; with ``need_audio``, no data dir or a data dir holding none of the audio files."""
        sizes = {split: len(self.split(split)) for split in SPLITS}
        empty = [split for split in SPLITS if not sizes[split]]
        if empty:
            counts = ", ".join(f"{split} {sizes[split]:,}" for split in SPLITS)
            raise MarbleEvalError(f"{self.name}: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} "
                                  f"empty ({counts}); probing needs train, valid and test items "
                                  f"(in a manifest: rows whose split is {' / '.join(empty)})")
        if need_labels:
            self._check_labels()
        if need_audio:
            self._check_audio_dir()

    def _check_labels(self) -> None:
        if self.missing_labels:
            raise MarbleEvalError(self.missing_labels)
        if not self.vocabulary:
            raise MarbleEvalError(f"{self.name}: the vocabulary is empty: no item carries a tag to probe; "
                                  "check the labels column")
        if not self.label_matrix(self.split("train")).any():
            fix = "use --vocabulary counted" if self.vocabulary_source == "published" else "check the labels"
            raise MarbleEvalError(f"{self.name}: none of the {len(self.vocabulary)} tags of the {self.vocabulary_source} "
                                  f"vocabulary has a positive train item, so nothing can be learned; {fix}")

    def _check_audio_dir(self) -> None:
        data_dir = self.require_data_dir()
        if not data_dir.is_dir():
            raise MarbleEvalError(f"{data_dir}: --data-dir is not a directory; pass the folder holding "
                                  f"{self.name}'s audio")
        for item in self.items:  # stops at the first file found: cheap when the dir is right
            try:
                if self.audio_path(item).is_file():
                    return
            except MarbleEvalError:
                continue
        example = data_dir / self.items[0].path if self.items else data_dir
        raise MarbleEvalError(f"{data_dir}: none of {self.name}'s {len(self.items):,} audio files is there "
                              f"(e.g. {example}); is it the right --data-dir? "
                              f"`{self._command('data check')} --quick` lists what it expects")

    def _command(self, subcommand: str) -> str:
        """A command line that works for this dataset (custom YAMLs by path)."""
        data_dir = shlex.quote(str(self.data_dir)) if self.data_dir is not None else "DIR"
        return f"marble-eval {subcommand} {shlex.quote(self.dataset_arg or self.name)} --data-dir {data_dir}"


def check_limit(limit: int | None) -> None:
    """Refuse a --limit that is not a whole number of items per split, 1 or more (None = no limit)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise MarbleEvalError(f"--limit {limit!r}: give a whole number of items per split, 1 or more")


def escapes(relative: str) -> bool:
    """Whether ``relative`` is absolute or climbs above its root with '..' (judged on the text alone)."""
    return os.path.isabs(relative) or os.path.normpath(relative).split(os.sep)[0] == ".."


def safe_join(root: Path, relative: str) -> Path:
    """``root / relative`` resolved, refusing absolute paths, '..' escapes and symlinks leading out of ``root``."""
    if escapes(relative):
        raise MarbleEvalError(f"audio path {relative!r} escapes the data dir {root}; use a path inside it")
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise MarbleEvalError(f"audio path {relative!r} escapes the data dir {root} through a symlink (to "
                              f"{candidate}); copy the file into the data dir or link within it")
    return candidate


def top_n_vocabulary(tag_lists: Iterable[Iterable[str]], n: int) -> list[str]:
    """PROTOCOL top-N: count each tag once per item, sort alphabetically, stable-sort by count desc."""
    counts: Counter[str] = Counter()
    for tags in tag_lists:
        counts.update(set(tags))
    ordered = sorted(counts)
    ordered.sort(key=lambda tag: -counts[tag])
    return ordered[:n]
