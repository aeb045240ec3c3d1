"""Source "mtg_jamendo": the MTG-Jamendo autotagging subsets as MARBLE v1 reads them (PROTOCOL 8).

Split 0's TSVs: TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, DURATION, then one tab-separated tag per field
(v1 reads ``line.split('\\t')[5:]``, each tag stripped). The class order is the order of first
appearance over the train, validation and test files. Audio: PATH with ``.mp3`` replaced by
``.low.mp3`` (the ``raw_30s`` ``audio-low`` download).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from marble_eval.datasets.assemble import audio_path, finish, reference
from marble_eval.datasets.base import SPLITS, Dataset, Item
from marble_eval.datasets.readers import not_utf8
from marble_eval.datasets.spec import BenchmarkSpec
from marble_eval.errors import MarbleEvalError

if TYPE_CHECKING:
    from marble_eval.datasets.registry import LoadContext

FIXED_COLUMNS = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION")
_RAW_30S_LOW = ("MTG-Jamendo raw_30s audio-low (156 GB): `python3 scripts/download/download.py --dataset raw_30s "
                "--type audio-low DIR --unpack --remove` from https://github.com/MTG/mtg-jamendo-dataset, so that "
                "DIR/<NN>/<id>.low.mp3 exist")
# Where to get each dataset's audio (shown by `data check`); moves to the YAML once the spec has a field.
AUDIO_SOURCES = {
    "mtg-top50": _RAW_30S_LOW,
    "mtg-genre": _RAW_30S_LOW,
    "mtg-instrument": _RAW_30S_LOW,
    "mtg-moodtheme": _RAW_30S_LOW + " (or the 46 GB `--dataset autotagging_moodtheme --type audio-low`)",
}


@dataclass(frozen=True)
class Track:
    """One row of an autotagging TSV."""

    track_id: str
    artist_id: str
    album_id: str
    path: str
    duration: float
    tags: tuple[str, ...]


def load(spec: BenchmarkSpec, context: LoadContext) -> Dataset:
    """The subset's tracks of split 0 (files train / valid / test), tags in first-appearance order."""
    if spec.options:
        raise MarbleEvalError(f"benchmark {spec.name!r}: source mtg_jamendo takes no options (got {sorted(spec.options)})")
    items: list[Item] = []
    seen: dict[str, str] = {}
    for split in SPLITS:
        path = reference(spec, split, context)
        for line, track in read_tracks(path):
            if track.track_id in seen:
                raise MarbleEvalError(f"{path}: line {line}: track {track.track_id} is already in the {seen[track.track_id]} "
                                      "split")
            seen[track.track_id] = split
            fields = {"id": track.track_id, "path": track.path, "low_path": low_quality_path(track.path),
                      "artist": track.artist_id, "album": track.album_id}
            items.append(Item(id=track.track_id, split=split, path=audio_path(spec, fields), tags=track.tags))
    dataset = finish(spec, context, items)
    order = first_appearance(item.tags for item in items)
    if sorted(order) != sorted(dataset.vocabulary):
        raise MarbleEvalError(f"benchmark {spec.name!r}: vocabulary must keep every tag (vocabulary: rule all, "
                              "count_over all) for the first-appearance order")
    dataset.vocabulary = order
    return dataset


def read_tracks(path: Path) -> list[tuple[int, Track]]:
    """(line number, Track) of every data row of an autotagging TSV, as v1 splits it (no quoting)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise MarbleEvalError(f"{path}: cannot read ({exc.strerror or exc}); check the path") from None
    except UnicodeDecodeError as exc:
        raise not_utf8(path, 0, exc) from None
    if not lines or tuple(lines[0].split("\t")[:5]) != FIXED_COLUMNS:
        raise MarbleEvalError(f"{path}: line 1: expected the header {chr(9).join(FIXED_COLUMNS)}<TAB>TAGS")
    rows = []
    for number, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        fields = text.split("\t")
        tags = tuple(filter(None, map(str.strip, fields[5:])))  # v1 strips each tag; empty fields are none
        if len(fields) < 6 or not tags:
            raise MarbleEvalError(f"{path}: line {number}: expected 5 columns then at least one tag, "
                                  f"found {len(fields)} field(s)")
        try:
            duration = float(fields[4])
        except ValueError:
            raise MarbleEvalError(f"{path}: line {number}: DURATION {fields[4]!r} is not a number") from None
        rows.append((number, Track(fields[0], fields[1], fields[2], fields[3], duration, tags)))
    return rows


def low_quality_path(path: str) -> str:
    """The audio-low file of a TSV PATH: ``.mp3`` replaced by ``.low.mp3`` (v1's str.replace)."""
    return path.replace(".mp3", ".low.mp3")


def first_appearance(tag_lists: Iterable[Iterable[str]]) -> list[str]:
    """Tags in the order they first appear (MARBLE v1's class2id)."""
    order: dict[str, None] = {}
    for tags in tag_lists:
        for tag in tags:
            order.setdefault(tag, None)
    return list(order)
