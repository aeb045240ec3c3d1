"""Source "lyra": the Lyra dataset's training.tsv / test.tsv, valid carved out of training as in ccml."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass

from marble_eval.datasets.assemble import audio_path, finish, options, reference
from marble_eval.datasets.base import Dataset, Item
from marble_eval.datasets.readers import read_rows
from marble_eval.datasets.spec import STRICT, BenchmarkSpec
from marble_eval.errors import MarbleEvalError

if TYPE_CHECKING:
    from marble_eval.datasets.registry import LoadContext


@dataclass(config=STRICT)
class LyraOptions:
    """The ``options`` of the Lyra YAML."""

    columns: list[str] = Field(default_factory=lambda: ["instruments", "genres", "place"])
    separator: str = "|"
    valid_fraction: float = Field(default=0.1, ge=0, lt=1)
    valid_seed: int = 10


def load(spec: BenchmarkSpec, context: LoadContext) -> Dataset:
    """Items of training.tsv (train + valid) and test.tsv with ``<column>--<value>`` tags."""
    opts = options(LyraOptions, spec)
    training = _read(spec, reference(spec, "training", context), opts)
    test = _read(spec, reference(spec, "test", context), opts)
    valid = set(valid_indices(len(training), opts.valid_fraction, opts.valid_seed))
    items = [Item(item.id, "valid" if index in valid else "train", item.path, item.tags)
             for index, item in enumerate(training)]
    items += [Item(item.id, "test", item.path, item.tags) for item in test]
    return finish(spec, context, items)


def valid_indices(n: int, fraction: float, seed: int) -> list[int]:
    """ccml's validation carve-out: shuffle range(n) with numpy's legacy seed, take the first floor(f * n)."""
    indices = np.arange(n)
    np.random.RandomState(seed).shuffle(indices)  # same stream as np.random.seed(seed); np.random.shuffle
    return indices[: int(np.floor(fraction * n))].tolist()


def _read(spec: BenchmarkSpec, path, opts: LyraOptions) -> list[Item]:
    items = []
    required = ("id", *opts.columns)
    for line, row in read_rows(path, "\t", required):
        if not row["id"]:
            raise MarbleEvalError(f"{path}: line {line}: empty id")
        tags = []
        for column in opts.columns:
            values = row[column].split(opts.separator)
            if any(not value for value in values):
                raise MarbleEvalError(f"{path}: line {line}: empty value in column {column!r} ({row[column]!r})")
            tags += [f"{column}--{value}" for value in values]
        fields = {"id": row["id"], "youtube_id": row.get("youtube-id", ""),
                  "start": row.get("start-ts", ""), "end": row.get("end-ts", "")}
        items.append(Item(id=row["id"], split="", path=audio_path(spec, fields), tags=tuple(dict.fromkeys(tags))))
    return items
