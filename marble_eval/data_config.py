"""The --data-config file of a suite: where each dataset's audio and label files are.

    makam:  {data_dir: /data/dunya/makam, metadata: /data/dunya/makam.json}
    lyra:   {data_dir: /data/lyra}
    mytask.yaml: {data_dir: ./audio}

Relative paths are taken relative to the config file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from marble_eval.configs import read_yaml, validate


@dataclass(config=ConfigDict(extra="forbid"))
class DataEntry:
    """One dataset's folders and files."""

    data_dir: Path | None = None
    metadata: Path | None = None
    reference_dir: Path | None = None

    def options(self) -> dict[str, Any]:
        """The load_dataset keyword arguments besides data_dir (only those that are set)."""
        return {key: value for key, value in (("metadata", self.metadata), ("reference_dir", self.reference_dir))
                if value is not None}


def load_data_config(path: Path | str) -> dict[str, DataEntry]:
    """Read and validate a data config; dataset names (or YAML file names) map to their DataEntry."""
    path = Path(path)
    entries = validate(dict[str, DataEntry], read_yaml(path), str(path))
    base = path.resolve().parent
    return {name: DataEntry(**{key: (base / value if value is not None and not value.is_absolute() else value)
                               for key, value in vars(entry).items()})
            for name, entry in entries.items()}
