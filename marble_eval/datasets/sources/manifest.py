"""Source "manifest": a user's own dataset as a CSV or JSONL file of (path, split, labels).

CSV: a header with ``path``, ``split`` and ``labels`` (or ``tags``), optionally ``id``; labels are
joined by ``options.separator`` ("|"). JSONL: one object per line with the same keys, labels a
list (or a joined string). Both may start with a UTF-8 byte-order mark (Excel). Audio paths are
relative to --data-dir and may never leave it: a path that climbs out is a bad row; a symlink that
leads out is refused for that item only, when its audio is opened (Dataset.audio_path).
Every bad row is reported in one message (the first ten, and how many more).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from pydantic.dataclasses import dataclass

from marble_eval.datasets.assemble import finish, options
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


def load(spec: BenchmarkSpec, context: LoadContext) -> Dataset:
    """Items of the manifest; every bad row reported at once."""
    opts = options(ManifestOptions, spec)
    path = manifest_path(opts, context)
    problems: list[tuple[int, str]] = []
    rows = read_jsonl(path, problems) if path.suffix == ".jsonl" else read_csv(path, problems)
    items, seen = [], {}
    for line, row in rows:
        try:
            item = _item(row, opts.separator)
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
    return finish(spec, context, items)


def manifest_path(opts: ManifestOptions, context: LoadContext) -> Path:
    """``options.manifest`` resolved against the YAML's folder."""
    path = Path(opts.manifest).expanduser()
    if not path.is_absolute() and context.spec_dir is not None:
        path = context.spec_dir / path
    if not path.is_file():
        raise MarbleEvalError(f"{path}: manifest not found (options.manifest is relative to the YAML's folder)")
    return path


def read_csv(path: Path, problems: list[tuple[int, str]] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, row) of a CSV manifest; malformed rows go to ``problems`` when given."""
    return read_rows(path, ",", ("path", "split"), problems)


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


def _item(row: dict[str, Any], separator: str) -> Item:
    if "labels" in row and "tags" in row:
        raise _BadRow("give labels or tags, not both")
    for key in ("path", "split"):
        if not isinstance(row.get(key), str) or not row[key]:
            raise _BadRow(f"missing or empty {key!r}")
    if row["split"] not in SPLITS:
        raise _BadRow(f"split {row['split']!r} is not one of {', '.join(SPLITS)}")
    if escapes(row["path"]):
        raise _BadRow(f"audio path {row['path']!r} escapes the data dir; use a path relative to --data-dir")
    labels = row.get("labels", row.get("tags", []))
    if isinstance(labels, str):
        labels = [label for label in labels.split(separator) if label]
    if not isinstance(labels, list) or not all(isinstance(label, str) and label for label in labels):
        raise _BadRow(f"labels must be a list of non-empty strings (or a {separator!r}-joined string)")
    item_id = row.get("id") or row["path"]
    if not isinstance(item_id, str):
        raise _BadRow("id must be a string")
    return Item(id=item_id, split=row["split"], path=row["path"], tags=tuple(dict.fromkeys(labels)))
