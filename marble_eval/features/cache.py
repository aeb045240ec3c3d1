"""On-disk feature cache: per item [n_windows, n_hidden_states, dim] time-means.

Layout (one folder per dataset x cache key):

    <cache-dir>/<dataset>/<model-slug>-<key digest[:16]>/
        key.json         everything the features depend on (refused if it differs)
        shards/*.npz     features [windows, L, D], frames [windows], offsets [items+1], ids [items]
        index.json       item id -> shard (derived from the shards, rebuilt when they change)
        failures.json    items skipped on the last run, with the reason
        parts/*.json     per-process failures and counts of a distributed run, until merged

Shards are written to a temporary name and renamed, so a killed run never leaves a half
file; a rerun skips the items found in shards. Temporary names carry the host and process id,
so a later run on the same host removes the leftovers of dead processes (never a live one's). Two runs writing the same cache only ever
add whole shards; when an id appears in two shards, the first shard by name wins.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from marble_eval.errors import MarbleEvalError
from marble_eval.files import (atomic_write_json, remove_stale_temporaries, slug, temporary_path,
                               write_error)

CACHE_FORMAT_VERSION = 1
STORAGE_DTYPES = {"fp16": np.float16, "fp32": np.float32}


@dataclass(frozen=True)
class CacheKey:
    """Everything extracted features depend on; its digest names the cache folder."""

    dataset: str
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """sha256 of the canonical JSON of every field except the human-readable model id."""
        fields = {k: v for k, v in self.to_dict().items() if k != "model_id"}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """One cache folder for a (dataset, key): resumable, sharded, never mixed across keys."""

    def __init__(self, root: Path, key: CacheKey) -> None:
        self.key = key
        self.directory = Path(root) / slug(key.dataset) / f"{slug(key.model_id.split('/')[-1])}-{key.digest()[:16]}"
        self.shard_dir = self.directory / "shards"
        self._index: tuple[list[str], dict[str, str]] | None = None  # (shards seen, id -> shard)

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
        """item id -> shard file name, from index.json refreshed against the shards on disk."""
        on_disk = [path.name for path in self.shard_files()]
        if self._index is not None and self._index[0] == on_disk:
            return self._index[1]
        index_file = self.directory / "index.json"
        stored: dict[str, list[str]] = {}
        if index_file.exists():
            try:
                stored = json.loads(index_file.read_text()).get("shards", {})
            except (OSError, json.JSONDecodeError):
                stored = {}
        shards = {name: stored[name] if name in stored else self._read_ids(name) for name in on_disk}
        if shards != stored and self.directory.exists():
            with contextlib.suppress(MarbleEvalError):  # derived from the shards: rebuilt next time if it fails
                atomic_write_json(index_file, {"format_version": CACHE_FORMAT_VERSION, "shards": shards})
        mapping: dict[str, str] = {}
        for name in on_disk:  # sorted: the first shard holding an id wins
            for item_id in shards[name]:
                mapping.setdefault(item_id, name)
        self._index = (on_disk, mapping)
        return mapping

    def _read_ids(self, shard_name: str) -> list[str]:
        with self._open_shard(shard_name) as shard:
            try:
                return [str(item_id) for item_id in shard["ids"]]
            except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
                raise self._corrupt(shard_name, exc) from None

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
        return set(self.index())

    def missing(self, ids: Iterable[str]) -> list[str]:
        index = self.index()
        return [item_id for item_id in ids if item_id not in index]

    # -- writing ---------------------------------------------------------------------------
    def write_shard(self, items: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path | None:
        """Atomically add a shard of items: id -> (features [W, L, D] float32, frames [W])."""
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
        path = self.shard_dir / f"shard-{uuid.uuid4().hex}.npz"
        temporary = temporary_path(path)
        try:
            with open(temporary, "wb") as handle:
                np.savez(handle, features=features, frames=frames, offsets=offsets, ids=np.array(ids))
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
        """Rebuild index.json from the shards now on disk (after other processes added shards)."""
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
        """Features [W, L, D] and frames [W] for each id, in order; names missing ids in the error."""
        index = self.index()
        missing = [item_id for item_id in ids if item_id not in index]
        if missing:
            raise MarbleEvalError(f"{self.directory}: {len(missing)} item(s) not extracted (e.g. {missing[:3]}); "
                                  f"run `marble-eval extract` for this model and dataset first")
        by_shard: dict[str, list[int]] = {}
        for position, item_id in enumerate(ids):
            by_shard.setdefault(index[item_id], []).append(position)
        features: list[np.ndarray] = [np.empty(0)] * len(ids)
        frames: list[np.ndarray] = [np.empty(0)] * len(ids)
        for name, positions in by_shard.items():
            with self._open_shard(name) as shard:
                try:
                    shard_ids = {str(item_id): row for row, item_id in enumerate(shard["ids"])}
                    offsets, all_features, all_frames = shard["offsets"], shard["features"], shard["frames"]
                except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
                    raise self._corrupt(name, exc) from None
                for position in positions:
                    row = shard_ids[ids[position]]
                    start, end = offsets[row], offsets[row + 1]
                    features[position] = all_features[start:end]
                    frames[position] = all_frames[start:end]
        return features, frames
