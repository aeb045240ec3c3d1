"""Source "dunya": Turkish-makam, Hindustani, Carnatic (ccml split ids + the user's metadata JSON).

Labels are not public files: they come from the Dunya API with a personal token. The user keeps
them as a JSON object ``{recording mbid: [tags] or null}``, by default ``metadata.json`` in
--data-dir (or --metadata PATH); ``marble-eval data fetch-dunya`` writes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic.dataclasses import dataclass

from marble_eval.datasets.assemble import audio_path, finish, options, reference
from marble_eval.datasets.base import SPLITS, Dataset, Item
from marble_eval.datasets.readers import read_json, read_string_array
from marble_eval.datasets.spec import STRICT, BenchmarkSpec
from marble_eval.errors import MarbleEvalError

if TYPE_CHECKING:
    from marble_eval.datasets.registry import LoadContext


@dataclass(config=STRICT)
class TagField:
    """One kind of tag in an API recording: ``<prefix>--<entry[key]>`` for each entry of ``field``."""

    prefix: str
    field: str
    key: str  # dotted path inside each entry, e.g. instrument.name


@dataclass(config=STRICT)
class DunyaOptions:
    """The ``options`` of a Dunya benchmark YAML."""

    tradition: str                        # API path segment: <api>/<tradition>/recording/<mbid>
    metadata: str = "metadata.json"       # default label file, relative to --data-dir
    tags: list[TagField] = Field(default_factory=list)


def load(spec: BenchmarkSpec, context: LoadContext) -> Dataset:
    """Items from the train/valid/test id files; labels from the metadata JSON when there is one."""
    opts = options(DunyaOptions, spec)
    ids = {split: read_string_array(reference(spec, split, context)) for split in SPLITS}
    source = metadata_path(opts, context)
    if source is None or not source.is_file():
        items = [_item(spec, mbid, split, ()) for split in SPLITS for mbid in ids[split]]
        return finish(spec, context, items, missing_labels=_how_to_label(spec, opts, source))
    labels = read_metadata(source)
    notes = []
    items = [_item(spec, mbid, split, tuple(labels.get(mbid) or ())) for split in SPLITS for mbid in ids[split]]
    absent = sum(mbid not in labels for split in SPLITS for mbid in ids[split])
    empty = sum(mbid in labels and not labels[mbid] for split in SPLITS for mbid in ids[split])
    if absent:
        notes.append(f"{absent} recording(s) are not in {source}; they stay unlabelled (all-zero rows). "
                     f"Rerun `marble-eval data fetch-dunya {spec.name}` to complete it")
    if empty:
        notes.append(f"{empty} recording(s) have no tags (null or []) in {source}; they are all-zero rows")
    return finish(spec, context, items, notes)


def metadata_path(opts: DunyaOptions, context: LoadContext) -> Path | None:
    """--metadata, else ``<data-dir>/<options.metadata>``, else None."""
    if context.metadata is not None:
        if not Path(context.metadata).is_file():
            raise MarbleEvalError(f"{context.metadata}: metadata file not found; check --metadata")
        return Path(context.metadata)
    return Path(context.data_dir) / opts.metadata if context.data_dir else None


def read_metadata(path: Path) -> dict[str, list[str] | None]:
    """The ``{mbid: [tags] | null}`` JSON, validated."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise MarbleEvalError(f"{path}: expected a JSON object {{recording mbid: [tags]}}")
    for mbid, tags in data.items():
        if tags is not None and not (isinstance(tags, list) and all(isinstance(tag, str) for tag in tags)):
            raise MarbleEvalError(f"{path}: entry {mbid!r}: expected a list of tag strings or null")
    return data


def _item(spec: BenchmarkSpec, mbid: str, split: str, tags: tuple[str, ...]) -> Item:
    return Item(id=mbid, split=split, path=audio_path(spec, {"id": mbid}), tags=tags)


def _how_to_label(spec: BenchmarkSpec, opts: DunyaOptions, looked: Path | None) -> str:
    where = f"{looked} does not exist" if looked else "no --data-dir or --metadata given"
    return (f"{spec.name}: labels need a metadata JSON {{mbid: [tags]}} ({where}); build it from the Dunya API with "
            f"`marble-eval data fetch-dunya {spec.name} --token TOKEN --output DIR/{opts.metadata}` "
            "(token: register at https://dunya.compmusic.upf.edu), then pass --data-dir DIR or --metadata FILE")
