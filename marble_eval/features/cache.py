"""On-disk feature cache: per item [n_windows, n_hidden_states, dim] time-means, and the audio they came from.

Layout (one folder per dataset x cache key):

    <cache-dir>/<dataset>/<model-slug>-<key digest[:16]>/
        key.json         everything the features depend on (refused if it differs)
        shards/*.npz     features [windows, L, D], frames [windows], offsets [items+1], ids [items],
                         and per item its audio file's size, mtime_ns and sha256, and the decoder that read it
        index.json       item id -> shard and audio stamp (derived from the shards, rebuilt when they change)
        failures.json    items skipped on the last run, with the reason
        parts/*.json     per-process failures and counts of a distributed run, until merged

Shards are written to a temporary name and renamed, so a killed run never leaves a half
file; a rerun skips the items found in shards whose audio is unchanged (same size and mtime, or
else the same sha256). Temporary names carry the host and process id, so a later run on the same
host removes the leftovers of dead processes (never a live one's). Two runs writing the same cache
only ever add whole shards; shard names start with their write time and when an id appears in
several shards the newest wins (a re-extracted item replaces the features of its old audio).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import struct
import time
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from marble_eval.errors import MarbleEvalError
from marble_eval.files import (
    atomic_write_json,
    remove_stale_temporaries,
    sha256_file,
    sha256_json,
    slug,
    temporary_path,
    write_error,
)
from marble_eval.models.base import normalise_precision

if TYPE_CHECKING:
    from marble_eval.datasets.base import Dataset

CACHE_FORMAT_VERSION = 2  # 2: per-item audio stamps, dataset identity in the key, newest shard wins
STORAGE_DTYPES = {"fp16": np.float16, "fp32": np.float32}


@dataclass(frozen=True)
class AudioStamp:
    """What identifies an item's audio file: size and mtime (cheap to check) and the content sha256; and what
    decoded it (recorded, not compared)."""

    size: int
    mtime_ns: int
    sha256: str
    decoder: str = ""

    @property
    def known(self) -> bool:
        return bool(self.sha256)


UNKNOWN_AUDIO = AudioStamp(-1, 0, "")  # no stamp (a stream such as a FIFO): such features are never reused


def audio_stamp(path: Path, decoder: str = "") -> AudioStamp:
    """Size, mtime and sha256 of a regular file (and the decoder that read it); UNKNOWN_AUDIO's for anything
    else (a FIFO is read once only)."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        return AudioStamp(UNKNOWN_AUDIO.size, UNKNOWN_AUDIO.mtime_ns, UNKNOWN_AUDIO.sha256, decoder)
    return AudioStamp(int(info.st_size), int(info.st_mtime_ns), sha256_file(Path(path)), decoder)


@dataclass
class AudioCheck:
    """Which cached items still match their audio file (``FeatureCache.check_audio``)."""

    current: set[str] = field(default_factory=set)   # cached and unchanged: reused
    changed: set[str] = field(default_factory=set)   # cached from other audio: extracted again
    hashed: int = 0                                  # files whose content had to be hashed


@dataclass(frozen=True)
class CacheKey:
    """Everything extracted features depend on; its digest names the cache folder."""

    dataset: str
    dataset_identity: str
    model_id: str
    model_fingerprint: str
    family: str
    sample_rate: int
    n_hidden_states: int
    dim: int
    window_seconds: float
    max_seconds: float | None
    precision: str
    storage: str = "fp16"
    model_settings: dict[str, Any] = field(default_factory=dict)
    format_version: int = CACHE_FORMAT_VERSION
    n_parameters: int = 0   # recorded so that the probe stage can describe the model without loading it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """sha256 of the canonical JSON of every field except the human-readable model id and parameter count
        (both follow from the fingerprint)."""
        fields = {k: v for k, v in self.to_dict().items() if k not in ("model_id", "n_parameters")}
        return sha256_json(fields)


class FeatureCache:
    """One cache folder for a (dataset, key): resumable, sharded, never mixed across keys."""

    def __init__(self, root: Path, key: CacheKey) -> None:
        self.key = key
        self.directory = Path(root) / slug(key.dataset) / f"{slug(key.model_id.split('/')[-1])}-{key.digest()[:16]}"
        self.shard_dir = self.directory / "shards"
        self._index: tuple[list[str], dict[str, str], dict[str, AudioStamp]] | None = None  # shards seen, maps

    # -- opening ---------------------------------------------------------------------------
    def create(self) -> "FeatureCache":
        """Create the folder (or check that an existing one has exactly this key)."""
        try:
            self.shard_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.shard_dir, exc) from None
        remove_stale_temporaries(self.directory)
        remove_stale_temporaries(self.shard_dir)
        key_file = self.directory / "key.json"
        if key_file.exists():
            self.check_key()
        else:
            atomic_write_json(key_file, self.key.to_dict())
        return self

    def exists(self) -> bool:
        return (self.directory / "key.json").exists()

    def check_key(self) -> None:
        """Refuse a folder whose recorded key differs from ours (features would be mixed)."""
        key_file = self.directory / "key.json"
        try:
            stored = json.loads(key_file.read_text())
        except (OSError, json.JSONDecodeError):
            raise MarbleEvalError(f"{key_file}: unreadable cache key; delete {self.directory} and extract again") from None
        if stored != self.key.to_dict():
            differing = sorted(k for k in set(stored) | set(self.key.to_dict())
                               if stored.get(k) != self.key.to_dict().get(k))
            raise MarbleEvalError(f"{key_file}: cache was made with different {', '.join(differing)}; "
                                  f"refusing to mix features (use another --cache-dir or delete the folder)")

    # -- index -----------------------------------------------------------------------------
    def shard_files(self) -> list[Path]:
        return sorted(self.shard_dir.glob("shard-*.npz")) if self.shard_dir.exists() else []

    def index(self) -> dict[str, str]:
        """item id -> shard file name (the newest shard holding it), from index.json refreshed against the shards."""
        return self._entries()[0]

    def stamps(self) -> dict[str, AudioStamp]:
        """item id -> the stamp of the audio its cached features came from."""
        return self._entries()[1]

    def _entries(self) -> tuple[dict[str, str], dict[str, AudioStamp]]:
        on_disk = [path.name for path in self.shard_files()]
        if self._index is not None and self._index[0] == on_disk:
            return self._index[1], self._index[2]
        index_file = self.directory / "index.json"
        stored: dict[str, Any] = {}
        if index_file.exists():
            try:
                stored = json.loads(index_file.read_text())
            except (OSError, json.JSONDecodeError):
                stored = {}
        stored_ids, stored_audio = stored.get("shards", {}), stored.get("audio", {})
        shards, audio = {}, {}
        for name in on_disk:
            if name in stored_ids and name in stored_audio and len(stored_ids[name]) == len(stored_audio[name]):
                shards[name], audio[name] = stored_ids[name], stored_audio[name]
            else:
                shards[name], audio[name] = self._read_entries(name)
        if (shards != stored_ids or audio != stored_audio) and self.directory.exists():
            with contextlib.suppress(MarbleEvalError):  # derived from the shards: rebuilt next time if it fails
                atomic_write_json(index_file, {"format_version": CACHE_FORMAT_VERSION, "shards": shards,
                                               "audio": audio})
        mapping: dict[str, str] = {}
        stamps: dict[str, AudioStamp] = {}
        for name in on_disk:  # sorted by write time: the newest shard holding an id wins
            for item_id, (size, mtime_ns, sha256, *decoder) in zip(shards[name], audio[name]):
                mapping[item_id] = name
                stamps[item_id] = AudioStamp(int(size), int(mtime_ns), str(sha256), str(decoder[0]) if decoder else "")
        self._index = (on_disk, mapping, stamps)
        return mapping, stamps

    def _read_entries(self, shard_name: str) -> tuple[list[str], list[list[Any]]]:
        with self._open_shard(shard_name) as shard:
            try:
                ids = [str(item_id) for item_id in shard["ids"]]
                if "audio_sha256" not in shard.files:
                    return ids, [[-1, 0, ""] for _ in ids]
                decoders = shard["audio_decoder"] if "audio_decoder" in shard.files else [""] * len(ids)
                audio = [[int(size), int(mtime), str(sha), str(decoder)] for size, mtime, sha, decoder in
                         zip(shard["audio_size"], shard["audio_mtime_ns"], shard["audio_sha256"], decoders)]
            except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
                raise self._corrupt(shard_name, exc) from None
        if len(audio) != len(ids):
            raise self._corrupt(shard_name, ValueError("audio stamps do not match the ids"))
        return ids, audio

    @contextlib.contextmanager
    def _open_shard(self, shard_name: str) -> Any:
        """np.load of a shard without pickles; a corrupt or foreign file is a one-line error."""
        try:
            shard = np.load(self.shard_dir / shard_name, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise self._corrupt(shard_name, exc) from None
        with shard:
            yield shard

    def _corrupt(self, shard_name: str, exc: Exception) -> MarbleEvalError:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        return MarbleEvalError(f"{self.shard_dir / shard_name}: corrupt or foreign cache shard ({reason}); delete "
                               f"it and rerun `marble-eval extract` (the other shards are kept)")

    def done_ids(self) -> set[str]:
        """Ids with features in the cache (whatever audio they came from; see ``check_audio``)."""
        return set(self.index())

    def check_audio(self, paths: dict[str, Path | None]) -> AudioCheck:
        """Which cached items of ``paths`` (id -> audio file) still match that file.

        Size and mtime equal to the recorded ones: unchanged, nothing is read. Otherwise the file is
        hashed and compared with the recorded sha256 (a copy with a new mtime is still the same
        audio). Items without a recorded stamp, or whose file is gone, count as changed.
        """
        check = AudioCheck()
        stamps = self.stamps()
        for item_id, path in paths.items():
            stamp = stamps.get(item_id)
            if stamp is None:
                continue
            try:
                info = os.stat(path) if path is not None and stamp.known else None
            except OSError:
                info = None
            if info is None or not stat.S_ISREG(info.st_mode):
                check.changed.add(item_id)
            elif (int(info.st_size), int(info.st_mtime_ns)) == (stamp.size, stamp.mtime_ns):
                check.current.add(item_id)
            elif int(info.st_size) != stamp.size:
                check.changed.add(item_id)  # other bytes for sure: no need to read them
            else:
                check.hashed += 1
                same = sha256_file(Path(path)) == stamp.sha256
                (check.current if same else check.changed).add(item_id)
        return check

    def audio_digest(self, ids: Iterable[str]) -> str:
        """sha256 over (id, audio sha256) of ``ids`` in the given order: identifies the audio a result used."""
        stamps = self.stamps()
        missing = [item_id for item_id in ids if item_id not in stamps]
        if missing:
            raise MarbleEvalError(f"{self.directory}: {len(missing)} item(s) not extracted (e.g. {missing[:3]}); "
                                  f"run `marble-eval extract` for this model and dataset first")
        return sha256_json([[item_id, stamps[item_id].sha256] for item_id in ids])

    def missing(self, ids: Iterable[str]) -> list[str]:
        index = self.index()
        return [item_id for item_id in ids if item_id not in index]

    # -- writing ---------------------------------------------------------------------------
    def write_shard(self, items: dict[str, tuple]) -> Path | None:
        """Atomically add a shard: id -> (features [W, L, D] float32, frames [W][, AudioStamp of its file])."""
        if not items:
            return None
        dtype = STORAGE_DTYPES[self.key.storage]
        ids = list(items)
        features = np.concatenate([items[i][0] for i in ids]).astype(dtype)
        if not np.isfinite(features).all():
            bad = [i for i in ids if not np.isfinite(items[i][0].astype(dtype)).all()]
            raise MarbleEvalError(f"features of {bad[:3]} overflow {self.key.storage}; extract with --storage fp32")
        frames = np.concatenate([items[i][1] for i in ids]).astype(np.int64)
        offsets = np.cumsum([0] + [len(items[i][0]) for i in ids]).astype(np.int64)
        stamps = [items[i][2] if len(items[i]) > 2 else UNKNOWN_AUDIO for i in ids]
        path = self.shard_dir / f"shard-{time.time_ns():020d}-{uuid.uuid4().hex}.npz"
        temporary = temporary_path(path)
        try:
            with open(temporary, "wb") as handle:
                np.savez(handle, features=features, frames=frames, offsets=offsets, ids=np.array(ids),
                         audio_size=np.array([s.size for s in stamps], dtype=np.int64),
                         audio_mtime_ns=np.array([s.mtime_ns for s in stamps], dtype=np.int64),
                         audio_sha256=np.array([s.sha256 for s in stamps], dtype="<U64"),
                         audio_decoder=np.array([s.decoder for s in stamps], dtype=str))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise MarbleEvalError(f"{path}: cannot write shard ({exc.strerror or exc}); free disk space and rerun "
                                  f"the same command to resume") from None
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return path

    def write_failures(self, failures: dict[str, dict[str, str]]) -> None:
        atomic_write_json(self.directory / "failures.json", failures)

    def failures(self) -> dict[str, dict[str, str]]:
        path = self.directory / "failures.json"
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except (OSError, json.JSONDecodeError):
            raise MarbleEvalError(f"{path}: unreadable list of failed items; delete it and rerun `marble-eval "
                                  f"extract` (cached items are kept)") from None

    # -- several writers -------------------------------------------------------------------
    def reindex(self) -> dict[str, str]:
        """Rebuild the index from the shards now on disk (after other processes added shards)."""
        self._index = None
        return self.index()

    def write_part(self, name: str, failures: dict[str, dict[str, str]], stats: dict[str, float]) -> Path:
        """One process's failures and counts of a distributed run, as parts/<name>.json (atomic)."""
        path = self.directory / "parts" / f"{slug(name)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"failures": failures, "stats": stats})
        return path

    def merge_parts(self) -> tuple[dict[str, dict[str, str]], list[dict[str, float]]]:
        """Merge every part: failures.json = union of their failures minus items cached since; parts removed.

        Returns (failures, each part's stats). The index is rebuilt from the shards on disk first.
        """
        done = self.reindex()
        failures: dict[str, dict[str, str]] = {}
        stats = []
        paths = sorted((self.directory / "parts").glob("*.json"))
        for path in paths:
            try:
                part = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                raise MarbleEvalError(f"{path}: unreadable part of a distributed run; delete it and rerun the "
                                      f"extraction (cached items are kept)") from None
            failures.update({item_id: failure for item_id, failure in part.get("failures", {}).items()
                             if item_id not in done})
            stats.append(part.get("stats", {}))
        self.write_failures(dict(sorted(failures.items())))
        for path in paths:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # another run may be adding its part right now
            (self.directory / "parts").rmdir()
        return failures, stats

    # -- reading ---------------------------------------------------------------------------
    def load(self, ids: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Features [W, L, D] and frames [W] for each id, in order; names missing ids in the error.

        The features of all ids share one array (each item's is a view of it): see ``load_windows``.
        """
        features, frames, counts = self._gather(ids)
        bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return ([features[bounds[i]:bounds[i + 1]] for i in range(len(ids))],
                [frames[bounds[i]:bounds[i + 1]] for i in range(len(ids))])

    def load_windows(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(features [all windows of ``ids`` in order, L, D] in the storage dtype, item_of_window [windows] int64).

        Written straight into one preallocated array from memory-mapped shards: only the windows of
        ``ids`` are read, each once, and peak memory is the result plus one item (what the probe stage
        loads, split by split, reads every cached byte once).
        """
        features, _, counts = self._gather(ids)
        return features, np.repeat(np.arange(len(ids), dtype=np.int64), counts)

    def _gather(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        index = self.index()
        missing = [item_id for item_id in ids if item_id not in index]
        if missing:
            raise MarbleEvalError(f"{self.directory}: {len(missing)} item(s) not extracted (e.g. {missing[:3]}); "
                                  f"run `marble-eval extract` for this model and dataset first")
        by_shard: dict[str, list[int]] = {}
        for position, item_id in enumerate(ids):
            by_shard.setdefault(index[item_id], []).append(position)
        spans: list[tuple[int, int]] = [(0, 0)] * len(ids)  # (shard row start, end) of each id
        for name, positions in by_shard.items():  # first the small arrays: how many windows each id has
            with self._open_shard(name) as shard:
                try:
                    rows = {str(item_id): row for row, item_id in enumerate(shard["ids"])}
                    offsets = shard["offsets"]
                except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
                    raise self._corrupt(name, exc) from None
            for position in positions:
                row = rows[ids[position]]
                spans[position] = (int(offsets[row]), int(offsets[row + 1]))
        counts = np.array([end - start for start, end in spans], dtype=np.int64)
        destination = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        out: np.ndarray | None = None
        out_frames = np.empty(int(counts.sum()), dtype=np.int64)
        for name, positions in by_shard.items():  # then each shard once, mapped, straight into place
            features, frames = self._map_shard(name)
            if out is None:
                out = np.empty((int(counts.sum()), self.key.n_hidden_states, self.key.dim), dtype=features.dtype)
            for position in positions:
                (start, end), at = spans[position], int(destination[position])
                if end > len(features):
                    raise self._corrupt(name, ValueError("offsets run past the features"))
                out[at:at + end - start] = features[start:end]
                out_frames[at:at + end - start] = frames[start:end]
            del features  # unmapped before the next shard: resident pages stay near one shard
        if out is None:
            out = np.empty((0, self.key.n_hidden_states, self.key.dim), dtype=STORAGE_DTYPES[self.key.storage])
        return out, out_frames, counts

    def _map_shard(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(features, frames) of a shard; features memory-mapped (read lazily, once) when the shard stores them
        uncompressed, as write_shard does; else read."""
        path = self.shard_dir / name
        with self._open_shard(name) as shard:
            try:
                frames = shard["frames"]
                features = npz_member_memmap(path, "features")
                if features is None:
                    features = shard["features"]
            except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
                raise self._corrupt(name, exc) from None
        if features.ndim != 3 or features.shape[1:] != (self.key.n_hidden_states, self.key.dim):
            raise self._corrupt(name, ValueError(f"features {features.shape} do not match the cache key"))
        return features, frames

def npz_member_memmap(path: Path, member: str) -> np.ndarray | None:
    """A read-only memory map of array ``member`` of an .npz written by np.savez (stored, not compressed);
    None when the member is compressed (then it must be read)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{member}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{member}: bad zip local header")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        offset = handle.tell()
    if dtype.hasobject:
        raise ValueError(f"{member}: object arrays are refused")
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def dataset_label(dataset: "Dataset") -> str:
    """The cache key's dataset field: name and version (the first folder level of the cache)."""
    return f"{dataset.name}-v{dataset.version}"


def locate_cache(root: Path, dataset: "Dataset", model_fingerprint: str, settings: Any,
                 model_settings: dict[str, Any] | None = None) -> FeatureCache:
    """The existing cache folder for (dataset, model fingerprint, settings), found without loading the model.

    ``settings`` is an ExtractSettings: ``window_seconds=None`` (the dataset's or a fixed-window
    model's own) leaves the window open, and ``model_settings`` fixes only the fields it names; max_seconds (None: the
    dataset's), precision and storage must match. No match, or several, is a one-line error.
    """
    folder = Path(root) / slug(dataset_label(dataset))
    wanted = {"dataset": dataset_label(dataset), "dataset_identity": dataset.identity(),
              "model_fingerprint": model_fingerprint,
              "max_seconds": dataset.max_seconds if settings.max_seconds is None else settings.max_seconds,
              "precision": normalise_precision(settings.precision),
              "storage": settings.storage, "format_version": CACHE_FORMAT_VERSION}
    if settings.window_seconds is not None:
        wanted["window_seconds"] = float(settings.window_seconds)
    matches = []
    for key_file in sorted(folder.glob("*/key.json")) if folder.is_dir() else []:
        try:
            stored = json.loads(key_file.read_text())
            key = CacheKey(**stored)
        except (OSError, json.JSONDecodeError, TypeError):
            continue  # another version's or a damaged folder: never a match
        settings_match = all((stored.get("model_settings") or {}).get(name) == value
                             for name, value in (model_settings or {}).items())
        if settings_match and all(stored.get(name) == value for name, value in wanted.items()):
            matches.append(FeatureCache(root, key))
    if not matches:
        raise MarbleEvalError(f"{folder}: no feature cache for this model and these settings "
                              f"(window {settings.window_seconds}, precision {wanted['precision']}, storage "
                              f"{settings.storage}); run `marble-eval extract` with the same options first")
    if len(matches) > 1:
        names = ", ".join(f"{cache.directory.name} (window {cache.key.window_seconds}, model settings "
                          f"{cache.key.model_settings})" for cache in matches)
        raise MarbleEvalError(f"{folder}: {len(matches)} caches match ({names}); pass --window-seconds (or the "
                              f"model option) to pick one")
    return matches[0]
