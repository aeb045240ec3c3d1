"""Source "path_lists": one text file of audio paths per split, the class being the path's first folder
(GTZAN: dnn-mgr's fault-filtered lists, ``<genre>/<genre>.<n>.wav``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic.dataclasses import dataclass

from marble_eval.datasets.assemble import audio_path, finish, options, reference
from marble_eval.datasets.base import SPLITS, Dataset, Item, escapes
from marble_eval.datasets.spec import STRICT, BenchmarkSpec
from marble_eval.errors import MarbleEvalError

if TYPE_CHECKING:
    from marble_eval.datasets.registry import LoadContext

AUDIO_SOURCES = {
    "gtzan": "GTZAN's Kaggle copy (kaggle.com/datasets/andradaolteanu/gtzan-dataset-music-genre-classification): "
             "unzip it so that --data-dir holds genres_original/<genre>/<genre>.<n>.wav; GTZAN has no licence "
             "for redistribution, so marble-eval does not download it",
}


@dataclass(config=STRICT)
class PathListOptions:
    """The ``options`` of a path-list YAML."""

    exclude: dict[str, list[str]] = Field(default_factory=dict)  # split -> listed paths left out (with a note)


def load(spec: BenchmarkSpec, context: LoadContext) -> Dataset:
    """Items of the ``train``/``valid``/``test`` list files; the class is the first folder of each path."""
    opts = options(PathListOptions, spec)
    items, notes = [], []
    for split in SPLITS:
        listed = read_path_list(reference(spec, split, context))
        excluded = set(opts.exclude.get(split, []))
        absent = sorted(excluded - set(listed))
        if absent:
            raise MarbleEvalError(f"benchmark {spec.name!r}: options.exclude.{split} names {absent[0]!r}, which the "
                                  f"{split} list does not hold")
        if excluded:
            notes.append(f"{len(excluded)} listed {split} file(s) left out: {', '.join(sorted(excluded))}")
        for path in listed:
            if path in excluded:
                continue
            folder, _, name = path.partition("/")
            fields = {"id": path, "path": path, "label": folder, "name": name}
            items.append(Item(id=path, split=split, path=audio_path(spec, fields), tags=(folder,)))
    return finish(spec, context, items, notes)


def read_path_list(path: Path) -> list[str]:
    """The non-empty lines of a list file: relative ``<class>/<file>`` paths."""
    entries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        if "/" not in entry or escapes(entry):
            raise MarbleEvalError(f"{path}: line {number}: {entry!r} is not a relative '<class>/<file>' path")
        entries.append(entry)
    return entries
