"""What `data describe` and `data check` report about a loaded dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from marble_eval.audio.decode import audio_info, load_audio
from marble_eval.datasets.base import SPLITS, Dataset, Item
from marble_eval.errors import AudioError, MarbleEvalError


@dataclass(frozen=True)
class AudioProblem:
    """One item whose audio cannot be used."""

    item: Item
    path: str
    kind: str    # "missing", "corrupt", or "refused" (its path leads out of the data dir)
    reason: str


def describe(dataset: Dataset, check_audio_presence: bool = True) -> dict[str, Any]:
    """The describe JSON: name, task, ordered tags, per-split size and positives, missing audio count.

    ``support`` is per class or tag the number of items that have it (regression: per target the
    number of items with a value), null when labels are unavailable; a regression split also has
    ``targets``: per target its mean and std (population). ``missing_audio`` is null without a data dir.
    """
    labelled = dataset.missing_labels is None
    splits = {}
    for split in SPLITS:
        items = dataset.split(split)
        entry: dict[str, Any] = {"n_items": len(items), "support": None}
        if labelled:
            matrix = dataset.label_matrix(items)
            counts = ((~np.isnan(matrix)).sum(axis=0) if dataset.task == "regression" else matrix.sum(axis=0)) \
                if items else [0] * len(dataset.vocabulary)
            entry["support"] = {tag: int(count) for tag, count in zip(dataset.vocabulary, counts)}
            if dataset.task == "regression":
                entry["targets"] = {name: {"mean": float(matrix[:, i].mean()), "std": float(matrix[:, i].std())}
                                    if items else None for i, name in enumerate(dataset.vocabulary)}
        splits[split] = entry
    missing = None
    if dataset.data_dir is not None and check_audio_presence:
        missing = len(missing_audio(dataset))
    summary = {"name": dataset.name, "task": dataset.task, "version": dataset.version, "tags": list(dataset.vocabulary),
               "vocabulary_source": dataset.vocabulary_source, "limit": dataset.limit,
               "splits": splits, "missing_audio": missing, "missing_labels": dataset.missing_labels,
               "split_origin": dataset.split_origin, "score_per": dataset.score_per,
               "window_seconds": dataset.window_seconds, "max_seconds": dataset.max_seconds,
               "drop_partial_windows": dataset.drop_partial_windows, "notes": list(dataset.notes)}
    if dataset.task == "regression" and labelled and dataset.items:
        mean, std = dataset.target_stats()  # type: ignore[misc]
        summary["target_stats"] = {"source": dataset.target_stats_source, "mean": mean.tolist(), "std": std.tolist()}
    return summary


def missing_audio(dataset: Dataset) -> list[Item]:
    """Items whose audio file does not exist under the data dir, or is refused there (no decoding)."""
    return [item for item in dataset.items if _usable_path(dataset, item) is None]


def _usable_path(dataset: Dataset, item: Item) -> Path | None:
    try:
        path = dataset.audio_path(item)
    except MarbleEvalError:
        return None
    return path if path.is_file() else None


def check_audio(dataset: Dataset, decode: bool = True, advance: Callable[[], None] | None = None) -> list[AudioProblem]:
    """Every item's audio present and readable; with ``decode``, decoded up to the dataset's max_seconds.

    A dataset whose items come with its labels (NSynth's examples.json, VocalSet's files) and has
    neither raises why, rather than reporting "0 of 0 items OK".
    """
    data_dir = dataset.require_data_dir()
    if not dataset.items and dataset.missing_labels:
        raise MarbleEvalError(dataset.missing_labels)
    problems = []
    for item in dataset.items:
        problem = audio_problem(dataset, item, data_dir, decode)
        if problem is not None:
            problems.append(problem)
        if advance:
            advance()
    return problems


def audio_problem(dataset: Dataset, item: Item, data_dir: Path, decode: bool = True) -> AudioProblem | None:
    """Why ``item``'s audio cannot be used (refused path, missing, corrupt), or None when it can."""
    try:
        path = dataset.audio_path(item)
    except MarbleEvalError as exc:
        return AudioProblem(item, str(Path(data_dir) / item.path), "refused", str(exc))
    if not path.is_file():
        return AudioProblem(item, str(path), "missing", "file not found")
    try:
        info = audio_info(path)
        if decode:
            load_audio(path, info.sample_rate, dataset.max_seconds)
        elif info.frames <= 0:
            raise AudioError(f"{path}: no audio frames")
    except AudioError as exc:
        reason = str(exc)
        reason = reason[len(str(path)) + 2:] if reason.startswith(f"{path}: ") else reason
        return AudioProblem(item, str(path), "corrupt", reason)
    return None
