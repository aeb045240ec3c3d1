"""Source "manifest": a user's own dataset as a CSV or JSONL file of (path, split, labels or targets).

CSV: a header with ``path``, ``split`` and ``labels`` (or ``tags``), optionally ``id``; labels are
joined by ``options.separator`` ("|"). JSONL: one object per line with the same keys, labels a
list (or a joined string). Both may start with a UTF-8 byte-order mark (Excel). By task:
multilabel rows carry any number of labels; multiclass and key rows exactly one (a key label is
parsed, e.g. "F# minor" or "C:maj", and stored as its canonical class); regression rows carry one
number per target named in the YAML's ``targets`` (CSV: a column each; JSONL: a key each) and no labels.
Spaces around a label are stripped, and the dataset notes say how many were. Audio paths are
relative to --data-dir and may never leave it: a path that climbs out is a bad row; a symlink that
leads out is refused for that item only, when its audio is opened (Dataset.audio_path).
Every bad row is reported in one message (the first ten, and how many more).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass as plain_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from pydantic.dataclasses import dataclass

from marble_eval.datasets.assemble import canonical_key, finish, options
from marble_eval.datasets.base import SPLITS, Dataset, Item, escapes
from marble_eval.datasets.readers import bad_rows_message, not_utf8, read_rows
from marble_eval.datasets.spec import STRICT, BenchmarkSpec
from marble_eval.errors import MarbleEvalError

if TYPE_CHECKING:
    from marble_eval.datasets.registry import LoadContext


@dataclass(config=STRICT)
class ManifestOptions:
    """The ``options`` of a manifest YAML."""

    manifest: str            # .csv or .jsonl; relative to the YAML's folder, or absolute
    separator: str = "|"     # between labels in a CSV cell (or a JSONL string)


class _BadRow(ValueError):
    """What is wrong with one manifest row (collected, then reported together)."""


@plain_dataclass
class _RowReader:
    """Turns manifest rows into items for one task; counts the labels it had to strip."""

    task: str
    targets: tuple[str, ...]
    separator: str
    stripped: int = 0
    example: str | None = None   # the first stripped label, as written

    def labels(self, row: dict[str, Any]) -> tuple[str, ...]:
        labels = row.get("labels", row.get("tags", []))
        joined = isinstance(labels, str)
        if joined:
            labels = labels.split(self.separator)
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise _BadRow(f"labels must be a list of non-empty strings (or a {self.separator!r}-joined string)")
        clean = []
        for label in labels:
            if label != label.strip():
                self.stripped += 1
                self.example = self.example or label
            if label.strip():
                clean.append(label.strip())
            elif not joined:  # "a||b" in a joined cell is a harmless empty; [""] in a list is a mistake
                raise _BadRow(f"labels must be a list of non-empty strings (or a {self.separator!r}-joined string)")
        return tuple(dict.fromkeys(clean))

    def item(self, row: dict[str, Any]) -> Item:
        if "labels" in row and "tags" in row:
            raise _BadRow("give labels or tags, not both")
        for key in ("path", "split"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise _BadRow(f"missing or empty {key!r}")
        if row["split"] not in SPLITS:
            raise _BadRow(f"split {row['split']!r} is not one of {', '.join(SPLITS)}")
        if escapes(row["path"]):
            raise _BadRow(f"audio path {row['path']!r} escapes the data dir; use a path relative to --data-dir")
        item_id = row.get("id") or row["path"]
        if not isinstance(item_id, str):
            raise _BadRow("id must be a string")
        labels = self.labels(row)
        targets: tuple[float, ...] = ()
        if self.task == "regression":
            if labels:
                raise _BadRow(f"a regression row has targets ({', '.join(self.targets)}), not labels; "
                              "leave the labels empty")
            targets = tuple(self.target(row, name) for name in self.targets)
        elif self.task in ("multiclass", "key") and len(labels) != 1:
            raise _BadRow(f"task {self.task} needs exactly one label per item, this row has {len(labels)}"
                          + (f" ({', '.join(labels)})" if labels else ""))
        if self.task == "key":
            try:
                labels = (canonical_key(labels[0]),)
            except MarbleEvalError as exc:
                raise _BadRow(str(exc)) from None
        return Item(id=item_id, split=row["split"], path=row["path"], tags=labels, targets=targets)

    @staticmethod
    def target(row: dict[str, Any], name: str) -> float:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise _BadRow(f"target {name!r} is missing")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _BadRow(f"target {name!r} is {value!r}, not a number")
        try:
            number = float(value)
        except ValueError:
            raise _BadRow(f"target {name!r} is {value!r}, not a number") from None
        if not math.isfinite(number):
            raise _BadRow(f"target {name!r} is {value!r}, not a finite number")
        return number

    def notes(self) -> list[str]:
        if not self.stripped:
            return []
        return [f"{self.stripped:,} label(s) had spaces around them, which were stripped (e.g. {self.example!r} -> "
                f"{self.example.strip()!r}); spaces never make a new label"]


def load(spec: BenchmarkSpec, context: LoadContext) -> Dataset:
    """Items of the manifest; every bad row reported at once."""
    opts = options(ManifestOptions, spec)
    path = manifest_path(opts, context)
    targets = tuple(spec.targets or ())
    problems: list[tuple[int, str]] = []
    rows = read_jsonl(path, problems) if path.suffix == ".jsonl" else read_csv(path, problems, targets)
    reader = _RowReader(spec.task, targets, opts.separator)
    items, seen = [], {}
    for line, row in rows:
        try:
            item = reader.item(row)
            if item.id in seen:
                raise _BadRow(f"id {item.id!r} repeats line {seen[item.id]}")
        except _BadRow as exc:
            problems.append((line, str(exc)))
            continue
        seen[item.id] = line
        items.append(item)
    if problems:
        raise MarbleEvalError(bad_rows_message(path, problems))
    if not items:
        raise MarbleEvalError(f"{path}: no rows")
    return finish(spec, context, items, notes=reader.notes())


def manifest_path(opts: ManifestOptions, context: LoadContext) -> Path:
    """``options.manifest`` resolved against the YAML's folder."""
    path = Path(opts.manifest).expanduser()
    if not path.is_absolute() and context.spec_dir is not None:
        path = context.spec_dir / path
    if not path.is_file():
        raise MarbleEvalError(f"{path}: manifest not found (options.manifest is relative to the YAML's folder)")
    return path


def read_csv(path: Path, problems: list[tuple[int, str]] | None = None,
             targets: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, row) of a CSV manifest (the header must name ``targets`` too); malformed rows go to
    ``problems`` when given."""
    return read_rows(path, ",", ("path", "split", *targets), problems)


def read_jsonl(path: Path, problems: list[tuple[int, str]] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) of a JSONL manifest; blank lines skipped, malformed ones to ``problems`` when given."""
    try:
        handle = open(path, encoding="utf-8-sig")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise MarbleEvalError(f"{path}: cannot read ({exc.strerror or exc}); check the path") from None
    with handle:
        line = 0
        while True:
            try:
                text = next(handle, None)
            except UnicodeDecodeError as exc:
                raise not_utf8(path, line, exc) from None
            if text is None:
                return
            line += 1
            if not text.strip():
                continue
            try:
                row = json.loads(text)
                if not isinstance(row, dict):
                    raise _BadRow("expected a JSON object with path, split, labels")
            except (json.JSONDecodeError, _BadRow) as exc:
                problem = f"invalid JSON ({exc.msg})" if isinstance(exc, json.JSONDecodeError) else str(exc)
                if problems is None:
                    raise MarbleEvalError(f"{path}: line {line}: {problem}") from None
                problems.append((line, problem))
                continue
            yield line, row
