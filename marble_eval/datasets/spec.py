"""The typed form of one benchmarks/<name>.yaml file."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

STRICT = ConfigDict(extra="forbid")


@dataclass(config=STRICT)
class RemoteFile:
    """A reference file pinned by URL and sha256 (fetched at run time, never committed)."""

    url: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


@dataclass(config=STRICT)
class VocabularyRule:
    """How the ordered tag vocabulary is built (PROTOCOL 5: top-N over train)."""

    rule: Literal["top_n", "all", "fixed"] = "top_n"
    n: int | None = Field(default=None, ge=1)
    tags: list[str] | None = None  # for rule "fixed"


@dataclass(config=STRICT)
class AudioSettings:
    """Audio layout under --data-dir and the extraction defaults recorded in the cache key."""

    layout: str = "{path}"          # format string over item fields: {id}, {path}
    max_seconds: float | None = Field(default=None, gt=0)
    window_seconds: float = Field(default=0.0, ge=0)


@dataclass(config=STRICT)
class BenchmarkSpec:
    """One dataset: where its reference files come from and how items and labels are built."""

    name: str
    version: str
    task: Literal["multilabel", "multiclass"]
    source: str                      # parser name in marble_eval.datasets.registry.SOURCES
    description: str = ""
    files: dict[str, RemoteFile] = Field(default_factory=dict)
    vocabulary: VocabularyRule = Field(default_factory=VocabularyRule)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    options: dict[str, Any] = Field(default_factory=dict)  # source-specific settings
