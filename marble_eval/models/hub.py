"""Resolve a model spec (hub id or local directory) to files on disk, and fingerprint them.

Hub ids go through huggingface_hub's snapshot_download, which honours HF_HOME and
HF_HUB_OFFLINE (a populated cache works with no network). Only configs and weights are
ever fetched: never Python files, so remote code cannot even reach the disk.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marble_eval.errors import MarbleEvalError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
FETCH_PATTERNS = ["config.json", "preprocessor_config.json", "*.safetensors", "*.bin", "*.safetensors.index.json",
                  "*.bin.index.json", "marble_eval_merge.json", "pretrained_*.pt", "*_stats.json"]
_CHUNK = 1 << 22


@dataclass(frozen=True)
class ResolvedModel:
    """A model's files on disk."""

    spec: str              # what the user typed
    directory: Path
    revision: str | None   # hub commit, when resolved from the hub cache
    weight_prefix: str | None = None  # only the shards holding these keys count (an audio tower in a bigger model)

    def config(self) -> dict[str, Any]:
        """The parsed config.json."""
        path = self.directory / "config.json"
        if not path.exists():
            raise MarbleEvalError(f"{path}: missing; a model directory needs config.json and its weights")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise MarbleEvalError(f"{path}: invalid JSON at line {exc.lineno}; fix or re-download it") from None

    def weight_files(self) -> list[Path]:
        """Weights to load and fingerprint: safetensors preferred, .bin only when there is none.

        With ``weight_prefix`` and a sharded checkpoint, only the shards that hold such keys.
        """
        if self.weight_prefix:
            shards = shards_holding(self.directory, self.weight_prefix)
            if shards is not None:
                return shards
        for pattern in ("*.safetensors", "*.bin", "*.pt"):
            found = sorted(self.directory.glob(pattern))
            if found:
                return found
        raise MarbleEvalError(
            f"{self.directory}: no weights (model.safetensors, pytorch_model.bin or a MusicFM .pt); download the "
            f"full checkpoint")

    def uses_safetensors(self) -> bool:
        return self.weight_files()[0].suffix == ".safetensors"


def _index(directory: Path) -> dict[str, str] | None:
    """The weight_map of model.safetensors.index.json (key -> shard file name), or None without one."""
    path = directory / "model.safetensors.index.json"
    if not path.exists():
        return None
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8")).get("weight_map")
    except (json.JSONDecodeError, AttributeError):
        weight_map = None
    if not isinstance(weight_map, dict):
        raise MarbleEvalError(f"{path}: not a safetensors index (no weight_map); fix or re-download it")
    return weight_map


def shards_holding(directory: Path, prefix: str) -> list[Path] | None:
    """The shards of a sharded checkpoint that hold keys starting with ``prefix`` (None when not sharded)."""
    weight_map = _index(directory)
    if weight_map is None:
        return None
    shards = [directory / name for name in sorted({name for key, name in weight_map.items() if key.startswith(prefix)})]
    if not shards:
        raise MarbleEvalError(f"{directory / 'model.safetensors.index.json'}: no weight starts with {prefix!r}")
    for shard in shards:
        if not shard.exists():
            raise MarbleEvalError(f"{shard}: missing; it holds {prefix}* weights; download it")
    return shards


# Families whose hub checkpoints are bigger models of which only one part is read: the keys' prefix.
# Their hub download fetches only the shards that hold it (Qwen2-Audio: the tower, not the 7B LM).
PART_PREFIXES = {"qwen2-audio": "audio_tower."}


def resolve_model(spec: str) -> ResolvedModel:
    """A local directory as is, else a hub id ("org/name[@revision]") through the HF cache."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return ResolvedModel(spec, path.resolve(), None)
    if spec.count("/") != 1 or spec.startswith((".", "/")):
        raise MarbleEvalError(f"model {spec!r} is neither a directory nor a hub id like org/name; "
                              f"run `marble-eval models` for the known ones")
    repo_id, _, revision = spec.partition("@")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from marble_eval.models.catalog import catalog_entry

    entry = catalog_entry(repo_id)
    prefix = PART_PREFIXES.get(entry.family) if entry else None
    try:
        if prefix is None:
            directory = Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=FETCH_PATTERNS))
        else:
            small = [pattern for pattern in FETCH_PATTERNS if pattern.endswith(".json")]
            directory = Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=small))
            needed = sorted({name for key, name in (_index(directory) or {}).items() if key.startswith(prefix)})
            directory = Path(snapshot_download(repo_id, revision=revision or None,
                                               allow_patterns=small + (needed or ["*.safetensors"])))
    except LocalEntryNotFoundError:
        raise MarbleEvalError(
            f"model {repo_id!r} is not in the Hugging Face cache and the hub cannot be reached; download it "
            f"once where there is network (HF_HOME points at the cache) or pass a local directory") from None
    except HfHubHTTPError as exc:
        raise MarbleEvalError(f"model {repo_id!r}: hub error ({str(exc).splitlines()[0]}); check the id") from None
    return ResolvedModel(spec, directory, directory.name if directory.parent.name == "snapshots" else None)


def fingerprint(model: ResolvedModel) -> str:
    """sha256 over config.json (or a MusicFM statistics json) and every weights file's bytes (names included)."""
    digest = hashlib.sha256()
    config = model.directory / "config.json"
    described_by = [config] if config.exists() else sorted(model.directory.glob("*stats.json"))
    for path in [*described_by, *model.weight_files()]:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
