"""Source "giantsteps": MARBLE v1's GiantSteps key split (PROTOCOL 8), built from the two GiantSteps
repositories' annotation files, its test keys from jukemir's clips json, its previews from MARBLE's
assets json.

Train/valid: the giantsteps-mtg-key-dataset tracks with confidence 2 and one key. An artist is
"valid" when ``int(sha1(name.lower()))`` falls in the last 16 of 116 buckets; every collaborator of a
valid artist (an ARTIST field lists them comma-separated) becomes valid too, over two passes. The
artist assignment runs over all 1,486 tracks before the confidence filter, as v1 does. A track goes
where its artists go. Test: the 604 giantsteps-key-dataset tracks (``GIANTSTEPS_KEY_<id>`` in the
assets json). Their keys are the ``annotations/key/<id>.LOFI.key`` files, which jukemir's clips json
holds verbatim (one pinned file instead of 604); where the local reference dir has the key files too,
each one is compared with jukemir's copy.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic.dataclasses import dataclass

from marble_eval.datasets.assemble import audio_path, canonical_key, finish, options, reference
from marble_eval.datasets.base import Dataset, Item
from marble_eval.datasets.fetch import Download
from marble_eval.datasets.readers import read_json, read_rows
from marble_eval.datasets.reference import reference_dir
from marble_eval.datasets.spec import STRICT, BenchmarkSpec
from marble_eval.errors import MarbleEvalError

if TYPE_CHECKING:
    from marble_eval.datasets.registry import LoadContext

ARTIST_BUCKETS = 116   # v1 (after jukemir): 100 train buckets then 16 valid buckets, ~80/20
TRAIN_BUCKETS = 100
COLLABORATOR_PASSES = 2
TEST_ASSET_PREFIX = "GIANTSTEPS_KEY_"
POOL_ASSET_PREFIX = "GIANTSTEPS_MTG_KEY_"
ASSET_DIR_PREFIX = "datasets/giantsteps/"   # what MARBLE strips from an asset's path_rel

# Where to get each dataset's audio (shown by `data check`); moves to the YAML once the spec has a field.
AUDIO_SOURCES = {
    "gs-key": "the 2-min Beatport LOFI previews listed (URL + md5) in MARBLE's benchmark/tasks/GS/assets/"
              "giantsteps.json, served from http://www.cp.jku.at/datasets/giantsteps/: "
              "`marble-eval data fetch gs-key --output DIR` downloads and md5-checks them into DIR/audio/<id>.LOFI.mp3",
}


@dataclass(config=STRICT)
class GiantStepsOptions:
    """The ``options`` of gs-key.yaml."""

    # the test key files inside a local reference dir, compared with jukemir's copies when present
    key_dir: str = "giantsteps/giantsteps-key-dataset/annotations/key"


def load(spec: BenchmarkSpec, context: LoadContext) -> Dataset:
    """gs-key's tracks: the artist-split train/valid pool, then the 604 test tracks."""
    opts = options(GiantStepsOptions, spec)
    pool = pool_tracks(reference(spec, "annotations", context), reference(spec, "metadata", context))
    clips = read_clips(reference(spec, "clips", context))
    test_ids = asset_ids(read_json(reference(spec, "assets", context)), TEST_ASSET_PREFIX)
    test_keys = jukemir_test_keys(clips, test_ids, spec.files["clips"].path)
    local = reference_dir(context.reference_dir)
    if local is not None and (local / opts.key_dir).is_dir():
        compare_key_files(local / opts.key_dir, test_keys)
    items = [_item(spec, track, split, key) for track, (split, key) in pool.items()]
    items += [_item(spec, track, "test", key) for track, key in test_keys.items()]
    notes = []
    differing = split_differences({item.id: item.split for item in items}, clips)
    if differing:
        notes.append(f"{len(differing)} track(s) differ from the split in {spec.files['clips'].path} "
                     f"(e.g. {', '.join(differing[:5])})")
    return finish(spec, context, items, notes)


def artist_names(field: str) -> list[str]:
    """The artists of a Beatport ARTIST field: comma-separated, whitespace stripped (as v1 reads it)."""
    return [name.strip() for name in field.strip().split(",")]


def artist_bucket_split(name: str) -> str:
    """"train" or "valid" for one artist name by its sha1 bucket (case-insensitive)."""
    bucket = int(hashlib.sha1(name.lower().encode("utf-8")).hexdigest(), 16) % ARTIST_BUCKETS
    return "train" if bucket < TRAIN_BUCKETS else "valid"


def artist_splits(artist_fields: list[str]) -> dict[str, str]:
    """Each artist's split: its bucket, then valid for every collaborator of a valid artist (two passes)."""
    groups = [artist_names(field) for field in artist_fields]
    split = {name: artist_bucket_split(name) for group in groups for name in group}
    for _ in range(COLLABORATOR_PASSES):
        for group in groups:
            if any(split[name] == "valid" for name in group):
                for name in group:
                    split[name] = "valid"
    return split


def pool_tracks(annotations: Path, metadata: Path) -> dict[str, tuple[str, str]]:
    """``{track id: (split, key class)}`` of the confident single-key giantsteps-mtg-key tracks, file order."""
    artists: dict[str, str] = {}
    for line, row in read_rows(metadata, "\t", ("ID", "ARTIST")):
        artists[_track_id(row["ID"], metadata, line)] = row["ARTIST"]
    by_artist = artist_splits(list(artists.values()))
    tracks: dict[str, tuple[str, str]] = {}
    for line, row in read_rows(annotations, "\t", ("ID", "MANUAL KEY", "C")):
        track = _track_id(row["ID"], annotations, line)
        if row["C"].strip() != "2" or "/" in row["MANUAL KEY"]:
            continue  # low confidence or several keys: skipped as in Korzeniowski and Widmer (2018)
        if track not in artists:
            raise MarbleEvalError(f"{annotations}: line {line}: track {track} is not in {metadata.name}")
        splits = {by_artist[name] for name in artist_names(artists[track])}
        if len(splits) != 1:  # cannot happen after the collaborator passes of a one-hop group
            raise MarbleEvalError(f"{metadata}: track {track}'s artists fall in both splits ({artists[track]!r})")
        tracks[track] = (splits.pop(), _key(row["MANUAL KEY"], f"{annotations}: line {line}"))
    return tracks


def read_clips(path: Path) -> dict[str, Any]:
    """jukemir's clips json (gzip): ``{"<7-digit id>-<clip>": {"clip": ..., "extra": ..., "split": ..., "y": ...}}``."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MarbleEvalError(f"{path}: not jukemir's gzipped clips json ({exc})") from None
    if not isinstance(data, dict):
        raise MarbleEvalError(f"{path}: expected an object of clips")
    return data


def clip_tracks(clips: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One entry per track of the clips json: ``{track id: {"split", "y", "key", "clips"}}`` (clips = count)."""
    tracks: dict[str, dict[str, Any]] = {}
    for name, clip in clips.items():
        track = str(int(clip["clip"]["audio_uid"]))
        entry = tracks.setdefault(track, {"split": clip["split"], "y": clip["y"],
                                          "key": clip["extra"].get("key", ""), "clips": 0})
        if entry["split"] != clip["split"]:
            raise MarbleEvalError(f"clips json: clip {name} is in {clip['split']}, other clips of track {track} "
                                  f"in {entry['split']}")
        entry["clips"] += 1
    return tracks


def asset_ids(assets: Any, prefix: str) -> list[str]:
    """Track ids of the assets json entries named ``<prefix><id>``, in numeric order."""
    if not isinstance(assets, dict):
        raise MarbleEvalError("assets json: expected an object of assets")
    ids = [name[len(prefix):] for name in assets if name.startswith(prefix)]
    return sorted(ids, key=int)


def jukemir_test_keys(clips: dict[str, Any], test_ids: list[str], where: str) -> dict[str, str]:
    """``{track id: key class}`` of the test tracks, from the key-file text jukemir stored for each."""
    tracks = clip_tracks(clips)
    keys = {}
    for track in test_ids:
        entry = tracks.get(track)
        if entry is None or entry["split"] != "test":
            raise MarbleEvalError(f"{where}: test track {track} of the assets json is not a test track there")
        keys[track] = _key(entry["key"], f"{where}: track {track}")
    return keys


def compare_key_files(key_dir: Path, keys: dict[str, str]) -> None:
    """Refuse a local giantsteps-key-dataset key folder that disagrees with ``keys`` (ids or labels)."""
    files = {path.name.split(".", 1)[0]: path for path in key_dir.glob("*.LOFI.key")}
    if set(files) != set(keys):
        extra, missing = sorted(set(files) - set(keys), key=int), sorted(set(keys) - set(files), key=int)
        raise MarbleEvalError(f"{key_dir}: key files differ from the 604 test tracks (only on disk: "
                              f"{', '.join(extra[:5]) or '-'}; missing: {', '.join(missing[:5]) or '-'})")
    for track, path in files.items():
        label = _key(path.read_text(encoding="utf-8"), str(path))
        if label != keys[track]:
            raise MarbleEvalError(f"{path}: key {label!r} differs from jukemir's {keys[track]!r} for track {track}")


def split_differences(splits: dict[str, str], clips: dict[str, Any]) -> list[str]:
    """Track ids whose split differs from jukemir's (or that only one of the two has), sorted."""
    theirs = {track: entry["split"] for track, entry in clip_tracks(clips).items()}
    return sorted((track for track in set(splits) | set(theirs) if splits.get(track) != theirs.get(track)), key=int)


def preview_downloads(spec: BenchmarkSpec, context: LoadContext, items: list[Item]) -> list[Download]:
    """The previews of ``items`` as listed in MARBLE's assets json (URL, md5, path under --output)."""
    assets = read_json(reference(spec, "assets", context))
    downloads = []
    for item in items:
        prefix = TEST_ASSET_PREFIX if item.split == "test" else POOL_ASSET_PREFIX
        asset = assets.get(prefix + item.id) if isinstance(assets, dict) else None
        if not isinstance(asset, dict) or not {"url", "checksum", "path_rel"} <= set(asset):
            raise MarbleEvalError(f"{spec.files['assets'].path}: no complete asset {prefix}{item.id} (url, checksum, "
                                  "path_rel)")
        relative = str(asset["path_rel"]).strip()
        relative = relative[len(ASSET_DIR_PREFIX):] if relative.startswith(ASSET_DIR_PREFIX) else relative
        if relative != item.path:
            raise MarbleEvalError(f"{spec.files['assets'].path}: asset {prefix}{item.id} lies at {relative}, "
                                  f"but the YAML's audio.layout gives {item.path}")
        downloads.append(Download(url=asset["url"], path=relative, md5=asset["checksum"]))
    return downloads


def _item(spec: BenchmarkSpec, track: str, split: str, key: str) -> Item:
    return Item(id=track, split=split, path=audio_path(spec, {"id": track}), tags=(key,))


def _key(label: str, where: str) -> str:
    """The canonical class name (``KEY_CLASSES``) of a GiantSteps key label ("D# minor" -> "Eb minor")."""
    try:
        return canonical_key(label.strip())
    except MarbleEvalError as exc:
        raise MarbleEvalError(f"{where}: {exc}") from None


def _track_id(value: str, path: Path, line: int) -> str:
    if not value.strip().isdigit():
        raise MarbleEvalError(f"{path}: line {line}: ID {value!r} is not a track number")
    return str(int(value))

