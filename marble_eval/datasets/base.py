"""What a loaded dataset is: items with splits and raw tags, plus the ordered vocabulary."""

from __future__ import annotations

import os
import shlex
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from marble_eval.errors import MarbleEvalError
from marble_eval.files import sha256_json
from marble_eval.tasks import SPLITS

if TYPE_CHECKING:
    from marble_eval.datasets.spec import MarbleV1Settings

VOCABULARY_CHOICES = ("counted", "published")  # what a user may ask for (--vocabulary)
VOCABULARY_SOURCES = ("counted", "published", "fixed")  # what Dataset.vocabulary_source records


# Dataset.target_stats_rule values: the split(s) the z-scoring statistics are computed over, or
# "explicit" (numbers a source set in Dataset.explicit_target_stats).
TARGET_STATS_SPLITS = {"train": ("train",), "training": ("train", "valid")}
SCORE_UNITS = ("item", "window")  # Dataset.score_per values
TARGET_STATS_SOURCES = {"train": "train split", "training": "train + valid splits", "explicit": "fixed by the source"}


@dataclass(frozen=True)
class Item:
    """One clip or recording: its id, split, audio path relative to the data dir, and its labels.

    ``tags``: the raw tags (multilabel), or the one class (multiclass; key: the canonical name of
    ``marble_eval.metrics.keys.KEY_CLASSES``). ``targets``: the numeric targets of a regression
    dataset, in the order of ``Dataset.vocabulary`` (the target names); empty for other tasks.
    """

    id: str
    split: str
    path: str
    tags: tuple[str, ...] = ()
    targets: tuple[float, ...] = ()


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
    window_seconds: float | None = None   # 0 = whole clip in one window; None = the model's native context
    notes: list[str] = field(default_factory=list)  # warnings to show the user (vocabulary drift, ...)
    missing_labels: str | None = None     # why labels are unavailable (splits still valid); None = labelled
    vocabulary_source: str = "counted"    # "counted" over the items, "published" list, or "fixed" in the YAML
    limit: int | None = None              # smoke run: only the first `limit` items of each split
    dataset_arg: str | None = None        # what to pass as --dataset to load it again (name or YAML path)
    drop_partial_windows: bool = False    # a last window shorter than window_seconds is not used
    target_stats_rule: str = "train"      # regression: "train", "training" (train + valid) or "explicit"
    explicit_target_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # (mean, std) per target
    marble_v1: MarbleV1Settings | None = None  # what MARBLE v1 ran for this task, and its published numbers
    split_origin: str | None = None       # None: the source's published split; "marble-eval": built here (mark it)
    score_per: str = "item"               # "item": windows' logits averaged per item; "window": each window scored

    def identity(self) -> str:
        """sha256 of what the dataset resolved to: items (id, split, path, labels), vocabulary, audio
        settings and the regression z-scoring rule.

        It changes whenever the manifest, the label files or the reference files change what is
        evaluated; the audio itself is identified per item by the feature cache. Settings at their
        defaults are left out, so a multilabel dataset keeps the identity it had before they existed.
        """
        content = {"name": self.name, "version": self.version, "task": self.task,
                   "vocabulary": list(self.vocabulary), "vocabulary_source": self.vocabulary_source,
                   "max_seconds": self.max_seconds,
                   # an open window (None) keeps the old identity; the window used is in the cache key
                   "window_seconds": 0.0 if self.window_seconds is None else self.window_seconds,
                   "limit": self.limit,
                   "items": [[item.id, item.split, item.path, list(item.tags)]
                             + ([list(item.targets)] if item.targets else []) for item in self.items]}
        if self.drop_partial_windows:
            content["drop_partial_windows"] = True
        if self.split_origin is not None:
            content["split_origin"] = self.split_origin
        if self.score_per != "item":
            content["score_per"] = self.score_per
        if self.task == "regression":
            content["target_stats"] = {"rule": self.target_stats_rule,
                                       "explicit": [list(v) for v in self.explicit_target_stats or ()]}
        return sha256_json(content)

    @property
    def target_stats_source(self) -> str:
        """Where the regression z-scoring statistics come from, in words ("train split", ...)."""
        return TARGET_STATS_SOURCES[self.target_stats_rule]

    def target_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, std) per target, float64, for z-scoring a regression dataset's targets; None for other tasks.

        Computed over ``target_stats_rule``'s split(s) (population std, ddof 0), or the numbers a source fixed.
        """
        if self.task != "regression":
            return None
        if self.target_stats_rule == "explicit":
            if self.explicit_target_stats is None:
                raise MarbleEvalError(f"{self.name}: target_stats_rule is explicit but no statistics were given")
            mean, std = self.explicit_target_stats
            return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        splits = TARGET_STATS_SPLITS[self.target_stats_rule]
        rows = [item.targets for item in self.items if item.split in splits]
        if not rows:
            raise MarbleEvalError(f"{self.name}: no {' or '.join(splits)} items to compute the target statistics over")
        values = np.asarray(rows, dtype=np.float64)
        return values.mean(axis=0), values.std(axis=0)

    def with_score_per(self, unit: str) -> Dataset:
        """A copy scored per ``unit``: "item" (an item's window logits averaged, e.g. per VocalSet recording)
        or "window" (every window its own example, as MARBLE scores VocalSet's 3-s chunks); noted, and
        recorded in identity()."""
        if unit not in SCORE_UNITS:
            raise MarbleEvalError(f"score per {unit!r}: use one of {', '.join(SCORE_UNITS)}")
        if unit == self.score_per:
            return self
        note = (f"scored per {unit}, where {self.name} is scored per {self.score_per}: not comparable with runs "
                f"scored per {self.score_per}")
        return replace(self, score_per=unit, notes=[*self.notes, note])

    def split(self, name: str) -> list[Item]:
        """Items of one split, in dataset order."""
        return [item for item in self.items if item.split == name]

    def label_matrix(self, items: Iterable[Item]) -> np.ndarray:
        """[n_items, T] float32 label rows, by task: multilabel 0/1 over the vocabulary (tags outside it
        are ignored); multiclass and key one-hot over the classes; regression the raw targets (the
        targets' units; the pipeline z-scores them with ``target_stats()``)."""
        items = list(items)
        if self.task == "regression":
            if not items:
                return np.zeros((0, len(self.vocabulary)), dtype=np.float32)
            return np.asarray([item.targets for item in items], dtype=np.float32).reshape(len(items), -1)
        position = {tag: i for i, tag in enumerate(self.vocabulary)}
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
        meaningless: an empty split; with ``need_labels``, missing labels, a vocabulary without one
        train positive, a multiclass class that valid/test items have and no train item has, or a
        regression target that is constant where its statistics come from; with ``need_audio``, no data
        dir or a data dir holding none of the audio files (saying so when they exist behind symlinks
        that lead out of it)."""
        if need_labels and self.missing_labels and not self.items:
            raise MarbleEvalError(self.missing_labels)  # the items come with the labels (NSynth, VocalSet)
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
        if self.task == "regression":
            self._check_targets()
            return
        train = self.label_matrix(self.split("train"))
        if not train.any():
            fix = "use --vocabulary counted" if self.vocabulary_source == "published" else "check the labels"
            raise MarbleEvalError(f"{self.name}: none of the {len(self.vocabulary)} tags of the {self.vocabulary_source} "
                                  f"vocabulary has a positive train item, so nothing can be learned; {fix}")
        if self.task == "multiclass":
            # a class some valid/test item has but no train item cannot be learned; a class of a fixed
            # vocabulary no item has (NSynth's unused MIDI pitches) is an output that is never right: fine
            used = {item.tags[0] for item in self.items if item.tags}
            absent = [tag for tag, count in zip(self.vocabulary, train.sum(axis=0)) if not count and tag in used]
            if absent:
                shown = ", ".join(absent[:10]) + (f" and {len(absent) - 10} more" if len(absent) > 10 else "")
                raise MarbleEvalError(f"{self.name}: {len(absent)} of the {len(self.vocabulary)} classes have no train "
                                      f"item, so the probe cannot learn them: {shown}; move items of "
                                      f"{'them' if len(absent) > 1 else 'it'} into the train split")

    def _check_targets(self) -> None:
        stats = self.target_stats()
        assert stats is not None
        constant = [name for name, std in zip(self.vocabulary, stats[1]) if not std > 0]
        if constant:
            raise MarbleEvalError(f"{self.name}: target(s) {', '.join(constant)} have the same value on every item of "
                                  f"the {self.target_stats_source}, so they cannot be z-scored; check the targets")

    def _check_audio_dir(self) -> None:
        data_dir = self.require_data_dir()
        if not data_dir.is_dir():
            raise MarbleEvalError(f"{data_dir}: --data-dir is not a directory; pass the folder holding "
                                  f"{self.name}'s audio")
        linked_out: list[Item] = []
        for item in self.items:  # stops at the first file found: cheap when the dir is right
            try:
                if self.audio_path(item).is_file():
                    return
            except MarbleEvalError:
                if not escapes(item.path) and (data_dir / item.path).is_file():
                    linked_out.append(item)  # there, but a symlink leads out of the data dir
        if linked_out:
            raise MarbleEvalError(self._linked_out_message(data_dir, linked_out))
        example = data_dir / self.items[0].path if self.items else data_dir
        raise MarbleEvalError(f"{data_dir}: none of {self.name}'s {len(self.items):,} audio files is there "
                              f"(e.g. {example}); is it the right --data-dir? "
                              f"`{self._command('data check')} --quick` lists what it expects")

    def _linked_out_message(self, data_dir: Path, linked_out: list[Item]) -> str:
        """Why audio files that exist are refused: symlinks lead out of the data dir; what to do."""
        example = linked_out[0]
        target = (data_dir / example.path).resolve()
        # the folder that would hold every path as written, when the links mirror the layout
        depth = len(Path(example.path).parts)
        root = target.parents[depth - 1] if len(target.parents) >= depth else None
        instead = (f"or pass the folder the links point into as --data-dir (e.g. --data-dir {root})"
                   if root is not None and (root / example.path).resolve() == target
                   else "or make --data-dir the folder that holds the files themselves, laid out as the paths say")
        others = len(self.items) - len(linked_out)
        missing = f" (the other {others:,} are not there)" if others else ""
        return (f"{data_dir}: {len(linked_out):,} of {self.name}'s {len(self.items):,} audio files exist but lead "
                f"out of the data dir through symlinks{missing} (e.g. {data_dir / example.path} -> {target}), and "
                f"audio is read only inside --data-dir; copy the files into the data dir, {instead}")

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
