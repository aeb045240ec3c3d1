"""Completed chunks of a probe grid on disk, so that an interrupted grid resumes where it stopped.

One folder per grid digest (``grid-<digest[:16]>``) under the checkpoint directory; one JSON file
per completed chunk (its configurations' results) and, beside it, an ``.npz`` with the test
probabilities of those configurations that were still their seed's selection when the chunk was
saved (no later configuration can make a passed-over one win again). Both are written atomically,
the probabilities first: a chunk counts as done once its JSON exists.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marble_eval.errors import MarbleEvalError
from marble_eval.files import atomic_write_bytes, atomic_write_json, sha256_json
from marble_eval.probes.bank import ProbeConfig
from marble_eval.probes.data import SPLITS, SplitData

FORMAT = 1


def features_digest_of(data: dict[str, SplitData]) -> str:
    """sha256 over the bytes, shapes and dtypes of every split's features, items and labels."""
    digest = hashlib.sha256()
    for name in SPLITS:
        split = data[name]
        for array in (split.features, split.item_of_window, split.labels):
            array = np.ascontiguousarray(array)
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def grid_digest(features_digest: str | None, data: dict[str, SplitData], recipe: dict[str, Any], grid: dict[str, Any],
                task: str, tags: list[str], max_epochs: int, device_type: str = "cpu") -> str:
    """The digest of everything a grid's result depends on (``features_digest`` given by the caller,
    else the features' bytes); the torch version is included, as other builds may round differently,
    and so is the device type when it is not the CPU (GPU kernels round differently too)."""
    return sha256_json({
        "format": FORMAT, "features": features_digest or features_digest_of(data), "recipe": recipe, "grid": grid,
        "task": task, "tags": tags, "max_epochs": max_epochs, "torch": torch.__version__,
        **({"device": device_type} if device_type != "cpu" else {}),
    })


class GridCheckpoint:
    """The completed chunks of one grid (identified by its digest) under ``root``."""

    def __init__(self, root: Path, digest: str) -> None:
        self.digest = digest
        self.folder = root / f"grid-{digest[:16]}"

    def save(self, configs: list[ProbeConfig], results: list[dict[str, Any]]) -> Path:
        """Write one completed chunk: its results, and the test probabilities still kept."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"chunk-{sha256_json([asdict(c) for c in configs])[:16]}"
        probs = {str(k): r["_test_probs"] for k, r in enumerate(results) if r["_test_probs"] is not None}
        buffer = io.BytesIO()
        np.savez(buffer, **probs)
        atomic_write_bytes(self.folder / f"{name}.npz", buffer.getvalue())
        payload = {"digest": self.digest, "results": [{k: v for k, v in r.items() if k != "_test_probs"} for r in results]}
        path = self.folder / f"{name}.json"
        atomic_write_json(path, payload)
        return path

    def load(self) -> dict[ProbeConfig, dict[str, Any]]:
        """Every saved configuration's result (with ``_test_probs``: an array or None)."""
        done: dict[ProbeConfig, dict[str, Any]] = {}
        if not self.folder.is_dir():
            return done
        for path in sorted(self.folder.glob("chunk-*.json")):
            try:
                payload = json.loads(path.read_text())
                with np.load(path.with_suffix(".npz"), allow_pickle=False) as arrays:
                    probs = {key: arrays[key] for key in arrays.files}
            except (OSError, ValueError) as exc:
                raise MarbleEvalError(f"{path}: unreadable grid checkpoint ({exc}); delete {self.folder} and rerun") from None
            if payload.get("digest") != self.digest:
                raise MarbleEvalError(f"{path}: belongs to another grid; delete {self.folder} and rerun")
            for k, result in enumerate(payload["results"]):
                result["_test_probs"] = probs.get(str(k))
                done[ProbeConfig(result["lr"], result["layer"], result["seed"])] = result
        return done
