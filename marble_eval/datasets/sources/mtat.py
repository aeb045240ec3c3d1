"""Sources "mtat" (the clean published split files) and "mtat_folders" (MARBLE's folder split) for
MagnaTagATune; tags from the distribution's annotations_final.csv in --data-dir (or --metadata)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic.dataclasses import dataclass

from marble_eval.datasets.assemble import audio_path, finish, options, reference
from marble_eval.datasets.base import SPLITS, Dataset, Item
from marble_eval.datasets.readers import read_rows, read_string_array
from marble_eval.datasets.sources.mtat_files import Clip, read_index
from marble_eval.datasets.spec import STRICT, BenchmarkSpec
from marble_eval.errors import MarbleEvalError

if TYPE_CHECKING:
    from marble_eval.datasets.registry import LoadContext


@dataclass(config=STRICT)
class MtatOptions:
    """The ``options`` of the MTAT YAMLs."""

    annotations: str = "annotations_final.csv"   # relative to --data-dir (or --metadata PATH)
    folders: dict[str, str] = Field(default_factory=lambda: {"train": "0123456789ab", "valid": "c", "test": "def"})
    exclude: list[str] = Field(default_factory=list)  # mp3 paths left out of the folder split


def load_split_files(spec: BenchmarkSpec, context: LoadContext) -> Dataset:
    """The clean split: rows listed in train/valid/test.npy ("<row>\\t<dir>/<clip>.mp3")."""
    opts = options(MtatOptions, spec)
    index = read_index(reference(spec, "index", context))
    annotations = _annotations_path(opts, context)
    clips = read_annotations(annotations) if annotations and annotations.is_file() else None
    items = []
    for split in SPLITS:
        split_file = reference(spec, split, context)
        for position, entry in enumerate(read_string_array(split_file)):
            row, path = _split_entry(entry, split_file, position)
            if row >= len(index) or index[row].path != path:
                raise MarbleEvalError(f"{split_file}: entry {position} ({entry!r}) does not match row {row} of "
                                      f"{spec.files['index'].path}")
            clip = index[row]
            if clips is not None:
                if row >= len(clips) or clips[row].path != path:
                    raise MarbleEvalError(f"{annotations}: line {row + 2}: expected mp3_path {path}; this is not the "
                                          "MTAT distribution's annotations_final.csv")
                clip = clips[row]
            items.append(_item(spec, clip, split))
    if clips is None:
        return finish(spec, context, items, missing_labels=_how_to_label(spec, opts, annotations))
    return finish(spec, context, items)


def load_folders(spec: BenchmarkSpec, context: LoadContext) -> Dataset:
    """MARBLE's split: first character of the mp3 folder decides train/valid/test; no filtering."""
    opts = options(MtatOptions, spec)
    folder_split = {folder: split for split, folders in opts.folders.items() for folder in folders}
    annotations = _annotations_path(opts, context)
    labelled = annotations is not None and annotations.is_file()
    clips = read_annotations(annotations) if labelled else read_index(reference(spec, "index", context))
    excluded = set(opts.exclude)
    items = []
    for clip in clips:
        if clip.path in excluded:
            continue
        split = folder_split.get(clip.path.split("/", 1)[0])
        if split is None:
            raise MarbleEvalError(f"clip {clip.clip_id} ({clip.path}): folder not in options.folders of {spec.name}")
        items.append(_item(spec, clip, split))
    if not labelled:
        return finish(spec, context, items, missing_labels=_how_to_label(spec, opts, annotations))
    return finish(spec, context, items)


def read_annotations(path: Path) -> list[Clip]:
    """annotations_final.csv (tab-separated: clip_id, binary tag columns, mp3_path) in row order."""
    clips = []
    tags: list[str] | None = None
    for line, row in read_rows(path, "\t", ("clip_id", "mp3_path")):
        if tags is None:
            tags = [name for name in row if name not in ("clip_id", "mp3_path")]
        bad = [name for name in tags if row[name] not in ("0", "1")]
        if bad:
            raise MarbleEvalError(f"{path}: line {line}: tag column {bad[0]!r} is {row[bad[0]]!r}, expected 0 or 1")
        if not row["mp3_path"]:
            raise MarbleEvalError(f"{path}: line {line}: empty mp3_path")
        clips.append(Clip(row["clip_id"], row["mp3_path"], tuple(name for name in tags if row[name] == "1")))
    return clips


def _split_entry(entry: str, path: Path, position: int) -> tuple[int, str]:
    row, sep, clip_path = entry.partition("\t")
    if not sep or not row.isdigit():
        raise MarbleEvalError(f"{path}: entry {position} ({entry!r}): expected \"<row>\\t<dir>/<clip>.mp3\"")
    return int(row), clip_path


def _item(spec: BenchmarkSpec, clip: Clip, split: str) -> Item:
    fields = {"id": clip.clip_id, "mp3_path": clip.path}
    return Item(id=clip.clip_id, split=split, path=audio_path(spec, fields), tags=clip.tags)


def _annotations_path(opts: MtatOptions, context: LoadContext) -> Path | None:
    if context.metadata is not None:
        if not Path(context.metadata).is_file():
            raise MarbleEvalError(f"{context.metadata}: annotations file not found; check --metadata")
        return Path(context.metadata)
    return Path(context.data_dir) / opts.annotations if context.data_dir else None


def _how_to_label(spec: BenchmarkSpec, opts: MtatOptions, looked: Path | None) -> str:
    where = f"{looked} does not exist" if looked else "no --data-dir or --metadata given"
    return (f"{spec.name}: labels need the MTAT distribution's {opts.annotations} ({where}); download it from "
            "https://mirg.city.ac.uk/codeapps/the-magnatagatune-dataset into --data-dir (or pass --metadata FILE)")
