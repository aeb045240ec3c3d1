"""The typed form of one benchmarks/<name>.yaml file."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

STRICT = ConfigDict(extra="forbid")
SplitName = Literal["train", "valid", "test"]


@dataclass(config=STRICT)
class BuiltFile:
    """A reference file with no public copy, rebuilt from public inputs; the result is hash-checked."""

    recipe: Literal["mtat_train_list"]
    url: str    # the unhashed input, pinned to a commit; parsed as data, never unpickled
    index: str  # key of the `files` entry that maps clip paths to rows


@dataclass(config=STRICT)
class RemoteFile:
    """A reference file pinned by sha256: fetched from ``url`` (or built) at run time, never committed."""

    path: str   # where it lies inside a reference dir laid out like shared/reference/datasets
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    url: str | None = None
    built_from: BuiltFile | None = None

    @model_validator(mode="after")
    def _one_origin(self) -> "RemoteFile":
        if (self.url is None) == (self.built_from is None):
            raise ValueError("give exactly one of url or built_from")
        return self


@dataclass(config=STRICT)
class VocabularyRule:
    """How the ordered tag vocabulary is built (PROTOCOL 5: top-N over train)."""

    rule: Literal["top_n", "all", "fixed", "reference"] = "top_n"
    n: int | None = Field(default=None, ge=1)  # top_n without n keeps every tag
    tags: list[str] | None = None  # for rule "fixed"
    # which items are counted: "train"; "training" = train + valid (the published file before the
    # valid split is carved out, as ccml does for Lyra); "all" = every item (MARBLE's MTAT)
    count_over: Literal["train", "training", "all"] = "train"
    file: str | None = None          # rule "reference": `files` key holding the ordered list
    compare_with: str | None = None  # `files` key of a published list; differences go to Dataset.notes

    def published_key(self) -> str | None:
        """The ``files`` key of the published tag list (what --vocabulary published uses), or None."""
        return self.file if self.rule == "reference" else self.compare_with

    @model_validator(mode="after")
    def _complete(self) -> "VocabularyRule":
        if self.rule == "fixed" and not self.tags:
            raise ValueError("rule fixed needs tags")
        if self.rule == "reference" and not self.file:
            raise ValueError("rule reference needs file (a key of files)")
        return self


@dataclass(config=STRICT)
class AudioSettings:
    """Audio layout under --data-dir and the extraction defaults recorded in the cache key."""

    layout: str = "{path}"          # format string over the fields the source gives each item ({id} always)
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
    split_rule: str = ""             # human-readable: where the split comes from
    label_source: str = ""           # human-readable: where the labels come from
    sizes: dict[SplitName, int] | None = None  # published split sizes; a differing load is noted
    files: dict[str, RemoteFile] = Field(default_factory=dict)
    vocabulary: VocabularyRule = Field(default_factory=VocabularyRule)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    options: dict[str, Any] = Field(default_factory=dict)  # source-specific settings

    @model_validator(mode="after")
    def _keys_exist(self) -> "BenchmarkSpec":
        for key in (self.vocabulary.file, self.vocabulary.compare_with):
            if key is not None and key not in self.files:
                raise ValueError(f"vocabulary refers to files key {key!r}, which files does not define")
        for key, remote in self.files.items():
            if remote.built_from is not None and remote.built_from.index not in self.files:
                raise ValueError(f"files.{key}.built_from.index {remote.built_from.index!r} is not a files key")
        return self
