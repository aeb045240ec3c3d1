"""Named protocol presets (protocols/<name>.yaml): every open choice of an evaluation, fixed and recorded.

A preset fixes the probe recipe and its protocol fields, the grid, the seeds, the extraction
precision, the vocabulary rule, windows and truncation. Arguments given explicitly override single
fields; the result then records the preset and which fields were overridden.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from marble_eval.configs import load_config, named_yaml, yaml_names
from marble_eval.errors import MarbleEvalError
from marble_eval.paths import protocols_dir
from marble_eval.probe_choices import PROBE_FIELDS, ProbeChoices, choice_values

DEFAULT_PROTOCOL = "culturemert"
FROM_DATASET = "dataset"


@dataclass(config=ConfigDict(extra="forbid"))
class ProtocolPreset:
    """One protocols/<name>.yaml."""

    name: str
    version: str
    recipe: str = "mlp"
    grid: Literal["marble", "quick", "v1"] = "marble"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    vocabulary: Literal["counted", "published"] = "counted"
    window_seconds: float | Literal["dataset"] = FROM_DATASET
    max_seconds: float | Literal["dataset"] | None = FROM_DATASET
    probe: ProbeChoices = Field(default_factory=ProbeChoices)
    description: str = ""


def known_protocols() -> list[str]:
    """Names of the preset YAMLs."""
    return yaml_names(protocols_dir())


def load_protocol(name_or_path: str | Path) -> ProtocolPreset:
    """A preset by name (protocols/<name>.yaml) or by path to a YAML file."""
    return load_config(ProtocolPreset, named_yaml(name_or_path, protocols_dir(), "protocol", "known protocols"))


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A preset with the caller's overrides applied: what an evaluation runs."""

    preset: str
    recipe: str
    grid: str
    seeds: tuple[int, ...]
    precision: str
    vocabulary: str
    window_seconds: float | None      # None: the dataset's
    max_seconds: float | None | str   # FROM_DATASET: the dataset's; None: no truncation
    probe: dict[str, str]
    overrides: tuple[str, ...] = ()

    def record(self, window_seconds: float, max_seconds: float | None) -> dict[str, Any]:
        """The keys every result stores under ``protocol`` (with the windows actually used)."""
        return {"preset": self.preset, "overrides": list(self.overrides), **self.probe,
                "precision": self.precision, "vocabulary": self.vocabulary,
                "window_seconds": window_seconds, "max_seconds": max_seconds}


def resolve_protocol(name: str | Path | Protocol | None = None, **overrides: Any) -> Protocol:
    """The preset ``name`` (default: DEFAULT_PROTOCOL; or an already resolved Protocol) with every
    non-None override applied.

    ``overrides`` take the Protocol field names (recipe, grid, seeds, precision, vocabulary,
    window_seconds, max_seconds) and the probe fields of PROBE_FIELDS; unknown names are an error.
    """
    base = name if isinstance(name, Protocol) else preset_protocol(load_protocol(name or DEFAULT_PROTOCOL))
    probe = dict(base.probe)
    values: dict[str, Any] = {key: getattr(base, key) for key in
                              ("recipe", "grid", "seeds", "precision", "vocabulary", "window_seconds", "max_seconds")}
    changed = list(base.overrides)
    for key, value in overrides.items():
        if value is None:
            continue
        if key in PROBE_FIELDS:
            allowed = choice_values(key)
            if value not in allowed:
                raise MarbleEvalError(f"--{key.replace('_', '-')} {value!r}: must be one of {', '.join(allowed)}")
            target = probe
        elif key in values:
            value = tuple(value) if key == "seeds" else value
            target = values
        else:
            raise MarbleEvalError(f"unknown protocol field {key!r}; known: {', '.join([*values, *PROBE_FIELDS])}")
        if target[key] != value and key not in changed:
            changed.append(key)
        target[key] = value
    return Protocol(preset=base.preset, probe=probe, overrides=tuple(changed), **values)


def preset_protocol(preset: ProtocolPreset) -> Protocol:
    """A preset as a Protocol without overrides."""
    return Protocol(preset=preset.name, recipe=preset.recipe, grid=preset.grid, seeds=tuple(preset.seeds),
                    precision=preset.precision, vocabulary=preset.vocabulary,
                    window_seconds=None if preset.window_seconds == FROM_DATASET else float(preset.window_seconds),
                    max_seconds=preset.max_seconds, probe=dataclasses.asdict(preset.probe))
