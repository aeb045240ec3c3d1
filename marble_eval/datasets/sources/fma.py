"""Source "fma": ccml's random FMA-medium split; genres (parents included) from the published
metadata.npy (hash-checked before unpickling) or from FMA's own tracks.csv + genres.csv."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic.dataclasses import dataclass

from marble_eval.datasets.assemble import audio_path, finish, options, reference
from marble_eval.datasets.base import SPLITS, Dataset, Item
from marble_eval.datasets.readers import read_pickled_mapping, read_string_array
from marble_eval.datasets.spec import STRICT, BenchmarkSpec
from marble_eval.errors import MarbleEvalError

if TYPE_CHECKING:
    from marble_eval.datasets.registry import LoadContext


@dataclass(config=STRICT)
class FmaOptions:
    """The ``options`` of the FMA YAML."""

    genres_column: str = "genres_all"   # tracks.csv column (under "track") used with --metadata tracks.csv


def load(spec: BenchmarkSpec, context: LoadContext) -> Dataset:
    """Items of the train/valid/test id files with their genre names."""
    opts = options(FmaOptions, spec)
    ids = {split: read_string_array(reference(spec, split, context)) for split in SPLITS}
    if context.metadata is not None:
        genres = genres_from_tracks(Path(context.metadata), opts.genres_column)
    else:
        genres = read_pickled_mapping(reference(spec, "metadata", context))  # sha256 checked by reference()
    items = []
    for split in SPLITS:
        for track in ids[split]:
            if track not in genres:
                raise MarbleEvalError(f"track {track} of the {split} split has no genres in "
                                      f"{context.metadata or spec.files['metadata'].path}")
            fields = {"id": track, "folder": track[:3]}
            items.append(Item(id=track, split=split, path=audio_path(spec, fields), tags=tuple(genres[track])))
    return finish(spec, context, items)


def genres_from_tracks(tracks_csv: Path, column: str = "genres_all") -> dict[str, list[str]]:
    """``{six-digit track id: [genre titles]}`` from fma_metadata/tracks.csv and genres.csv beside it."""
    genres_csv = tracks_csv.parent / "genres.csv"
    for path in (tracks_csv, genres_csv):
        if not path.is_file():
            raise MarbleEvalError(f"{path}: not found; --metadata must be fma_metadata/tracks.csv with genres.csv beside it")
    import pandas as pd  # imported here: it costs a second and only this label source needs it

    try:
        tracks = pd.read_csv(tracks_csv, index_col=0, header=[0, 1])
        titles = pd.read_csv(genres_csv, index_col=0)["title"]
    except (pd.errors.ParserError, ValueError, KeyError) as exc:
        raise MarbleEvalError(f"{tracks_csv}: not FMA's tracks.csv/genres.csv layout ({str(exc).splitlines()[0]})") from None
    if ("track", column) not in tracks.columns:
        raise MarbleEvalError(f"{tracks_csv}: no column track/{column}")
    result = {}
    for track, value in tracks[("track", column)].items():
        # rows are named by track_id: tracks.csv has multi-line quoted fields, so line numbers would lie
        try:
            genre_ids = json.loads(value)
            result[f"{int(track):06d}"] = [str(titles[genre]) for genre in genre_ids]
        except (TypeError, ValueError, KeyError) as exc:
            raise MarbleEvalError(f"{tracks_csv}: row track_id={track}: bad {column} value {value!r} "
                                  f"({type(exc).__name__}: {exc})") from None
    return result
