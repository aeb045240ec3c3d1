"""Source "manifest": a user's own dataset as a CSV or JSONL file of (path, split, labels).

CSV: a header with ``path``, ``split`` and ``labels`` (or ``tags``), optionally ``id``; labels are
joined by ``options.separator`` ("|"). JSONL: one object per line with the same keys, labels a
list (or a joined string). Audio paths are relative to --data-dir and may never leave it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from pydantic.dataclasses import dataclass

from marble_eval.datasets.assemble import finish, options
from marble_eval.datasets.base import SPLITS, Dataset, Item, safe_join
from marble_eval.datasets.readers import read_rows
from marble_eval.datasets.spec import STRICT, BenchmarkSpec
from marble_eval.errors import MarbleEvalError

if TYPE_CHECKING:
    from marble_eval.datasets.registry import LoadContext


@dataclass(config=STRICT)
class ManifestOptions:
    """The ``options`` of a manifest YAML."""

    manifest: str            # .csv or .jsonl; relative to the YAML's folder, or absolute
    separator: str = "|"     # between labels in a CSV cell (or a JSONL string)


def load(spec: BenchmarkSpec, context: LoadContext) -> Dataset:
    """Items of the manifest; paths checked against the data dir."""
    opts = options(ManifestOptions, spec)
    path = manifest_path(opts, context)
    rows = read_jsonl(path) if path.suffix == ".jsonl" else read_csv(path)
    items, seen = [], {}
    # the data dir may be unknown (describe without audio): check escapes against a stand-in root
    root = Path(context.data_dir) if context.data_dir else Path("/data-dir")
    for line, row in rows:
        item = _item(row, opts.separator, path, line)
        try:
            safe_join(root, item.path)
        except MarbleEvalError:
            raise MarbleEvalError(f"{path}: line {line}: audio path {item.path!r} escapes the data dir; "
                                  "use a path relative to --data-dir") from None
        if item.id in seen:
            raise MarbleEvalError(f"{path}: line {line}: id {item.id!r} repeats line {seen[item.id]}")
        seen[item.id] = line
        items.append(item)
    if not items:
        raise MarbleEvalError(f"{path}: no rows")
    return finish(spec, context, items)


def manifest_path(opts: ManifestOptions, context: LoadContext) -> Path:
    """``options.manifest`` resolved against the YAML's folder."""
    path = Path(opts.manifest).expanduser()
    if not path.is_absolute() and context.spec_dir is not None:
        path = context.spec_dir / path
    if not path.is_file():
        raise MarbleEvalError(f"{path}: manifest not found (options.manifest is relative to the YAML's folder)")
    return path


def read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, row) of a CSV manifest."""
    return read_rows(path, ",", ("path", "split"))


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) of a JSONL manifest; blank lines skipped."""
    with open(path, encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise MarbleEvalError(f"{path}: line {line}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise MarbleEvalError(f"{path}: line {line}: expected a JSON object with path, split, labels")
            yield line, row


def _item(row: dict[str, Any], separator: str, path: Path, line: int) -> Item:
    where = f"{path}: line {line}"
    if "labels" in row and "tags" in row:
        raise MarbleEvalError(f"{where}: give labels or tags, not both")
    for key in ("path", "split"):
        if not isinstance(row.get(key), str) or not row[key]:
            raise MarbleEvalError(f"{where}: missing or empty {key!r}")
    if row["split"] not in SPLITS:
        raise MarbleEvalError(f"{where}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
    labels = row.get("labels", row.get("tags", []))
    if isinstance(labels, str):
        labels = [label for label in labels.split(separator) if label]
    if not isinstance(labels, list) or not all(isinstance(label, str) and label for label in labels):
        raise MarbleEvalError(f"{where}: labels must be a list of non-empty strings (or a {separator!r}-joined string)")
    item_id = row.get("id") or row["path"]
    if not isinstance(item_id, str):
        raise MarbleEvalError(f"{where}: id must be a string")
    return Item(id=item_id, split=row["split"], path=row["path"], tags=tuple(dict.fromkeys(labels)))
