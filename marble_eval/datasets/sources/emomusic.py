"""Source "emomusic": EMOMusic (MediaEval 2013 "Emotion in Music") as jukemir's emomusic.json splits it.

The json (gzipped) maps each of the 744 song ids ("0002") to its split (train / valid / test: test is the
MediaEval-2013 evaluation set, development songs go to train or valid by a hash of the artist) and its
static annotations; the targets are the 9-point ``mean_arousal`` and ``mean_valence``. The json's own
``y`` is the same pair z-scored over the development songs (train + valid): the dataset keeps the raw
values and names ``target_stats: training``, so the pipeline's z-scoring reproduces ``y`` exactly.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marble_eval.datasets.assemble import audio_path, finish, reference
from marble_eval.datasets.base import SPLITS, Dataset, Item
from marble_eval.datasets.spec import BenchmarkSpec
from marble_eval.errors import MarbleEvalError

if TYPE_CHECKING:
    from marble_eval.datasets.registry import LoadContext

AUDIO_SOURCES = {
    "emo": "emoMusic's clips_45seconds folder (1,000 45-s mp3 clips from the Free Music Archive, CC licences; "
           "cvml.unige.ch/databases/emoMusic): --data-dir holds clips_45seconds/<song_id>.mp3",
}
STATIC_COLUMNS = {"arousal": "mean_arousal", "valence": "mean_valence"}


def load(spec: BenchmarkSpec, context: LoadContext) -> Dataset:
    """The songs of the json with their static (arousal, valence) means, in the YAML's target order."""
    path = reference(spec, "metadata", context)
    songs = read_emomusic(path)
    unknown = [name for name in spec.targets or [] if name not in STATIC_COLUMNS]
    if unknown:
        raise MarbleEvalError(f"benchmark {spec.name!r}: targets {unknown} are not in emomusic.json; use "
                              f"{', '.join(STATIC_COLUMNS)}")
    items = []
    for uid in sorted(songs):
        song = songs[uid]
        split = song.get("split")
        if split not in SPLITS:
            raise MarbleEvalError(f"{path}: song {uid}: split {split!r} is not one of {', '.join(SPLITS)}")
        annotations = song.get("extra", {}).get("static_annotations", {})
        targets = tuple(_number(annotations.get(STATIC_COLUMNS[name]), path, uid, name) for name in spec.targets or [])
        fields = {"id": uid, "song_id": str(int(uid))}
        items.append(Item(id=uid, split=split, path=audio_path(spec, fields), targets=targets))
    return finish(spec, context, items)


def read_emomusic(path: Path) -> dict[str, Any]:
    """jukemir's emomusic.json(.gz): song id -> {split, clip, extra, y}."""
    try:
        with (gzip.open(path, "rt", encoding="utf-8") if Path(path).suffix == ".gz" else open(path, encoding="utf-8")) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise MarbleEvalError(f"{path}: not jukemir's emomusic json ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(song, dict) for song in data.values()):
        raise MarbleEvalError(f"{path}: expected an object of songs")
    return data


def _number(value: Any, path: Path, uid: str, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise MarbleEvalError(f"{path}: song {uid}: static {name} is {value!r}, not a number")
    return number
