"""The typed form of one benchmarks/<name>.yaml file."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from marble_eval.metrics.table import is_metric

STRICT = ConfigDict(extra="forbid")
SplitName = Literal["train", "valid", "test"]
TaskName = Literal["multilabel", "multiclass", "regression", "key"]  # = marble_eval.tasks.TASKS (a test checks)
# Which items a regression dataset's z-scoring statistics are computed over: the train split, or
# "training" = train + valid (EMOMusic's 619 development songs).
TargetStatsRule = Literal["train", "training"]
PUBLISHED_MODELS = ("MERT-v1-95M", "MERT-v1-330M")


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

    # "source": the source module fixes the ordered classes (NSynth's 128 MIDI pitches)
    rule: Literal["top_n", "all", "fixed", "reference", "source"] = "top_n"
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
    window_seconds: float | None = Field(default=None, ge=0)  # None: the model's native context, else whole clip
    # "drop": a last window shorter than window_seconds is not used (GiantSteps keeps only full 30-s clips)
    partial_windows: Literal["keep", "drop"] = "keep"
    # what one prediction is scored on: the item (its windows' logits averaged), or each window on its own
    # (MARBLE's VocalSet scores every 3-s chunk); Dataset.with_score_per switches it, recorded in identity()
    score_per: Literal["item", "window"] = "item"


@dataclass(config=STRICT)
class MarbleV1Settings:
    """What MARBLE v1 ran for this task (a43992899/MARBLE-Benchmark @ d9300e3; PROTOCOL 8) and the
    MARBLE v1 paper's published numbers, so that the ``marble-v1`` preset and the published rows use them.

    ``layer_*``: the hidden layer v1 probed for MERT-v1-95M / 330M (``"weighted"``: a learned weighted
    sum of all layers). ``window_seconds`` 0 = the whole (cropped) clip in one pass; ``max_seconds`` the
    crop from the start (None: none). ``normalise_whole_clip``: v1 normalises the cropped waveform
    before windowing. ``published``: model -> metric key (metrics table) -> value in percent.
    """

    layer_95m: int | Literal["weighted"]
    lr_95m: Annotated[float, Field(gt=0)]
    layer_330m: int | Literal["weighted"]
    lr_330m: Annotated[float, Field(gt=0)]
    max_epochs: Annotated[int, Field(ge=1)]
    lr_patience: Annotated[int, Field(ge=0)]
    es_patience: Annotated[int, Field(ge=0)]
    window_seconds: float = Field(default=0.0, ge=0)
    max_seconds: float | None = Field(default=None, gt=0)
    normalise_whole_clip: bool = True
    published: dict[str, dict[str, float]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_models_and_metrics(self) -> "MarbleV1Settings":
        for model, metrics in self.published.items():
            if model not in PUBLISHED_MODELS:
                raise ValueError(f"published: unknown model {model!r}; use {', '.join(PUBLISHED_MODELS)}")
            for key, value in metrics.items():
                if not is_metric(key):
                    raise ValueError(f"published.{model}: unknown metric {key!r} (keys of marble_eval.metrics.table)")
                if not 0 <= value <= 100:
                    raise ValueError(f"published.{model}.{key}: {value} is not a percentage")
        for layer in (self.layer_95m, self.layer_330m):
            if isinstance(layer, int) and layer < 0:
                raise ValueError(f"layer {layer} is negative")
        return self


@dataclass(config=STRICT)
class BenchmarkSpec:
    """One dataset: where its reference files come from and how items and labels are built."""

    name: str
    version: str
    task: TaskName
    source: str                      # parser name in marble_eval.datasets.registry.SOURCES
    description: str = ""
    split_rule: str = ""             # human-readable: where the split comes from
    label_source: str = ""           # human-readable: where the labels come from
    sizes: dict[SplitName, int] | None = None  # published split sizes; a differing load is noted
    files: dict[str, RemoteFile] = Field(default_factory=dict)
    vocabulary: VocabularyRule = Field(default_factory=VocabularyRule)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    options: dict[str, Any] = Field(default_factory=dict)  # source-specific settings
    targets: list[str] | None = None          # regression: the target names (manifest columns), in order
    # None: the split is the one the source publishes (or the user's manifest); "marble-eval": built here by
    # the upstream's stated rules because its lists were never published (VocalSet), so marked as ours
    split_origin: Literal["marble-eval"] | None = None
    target_stats: TargetStatsRule = "train"   # regression: the items the z-scoring statistics come from
    marble_v1: MarbleV1Settings | None = None

    @model_validator(mode="after")
    def _targets_fit_the_task(self) -> "BenchmarkSpec":
        if self.task in ("key", "regression") and self.vocabulary != VocabularyRule():
            fixed = "the 24 keys of marble_eval.metrics.keys" if self.task == "key" else "its targets"
            raise ValueError(f"task {self.task} takes no vocabulary: its classes are always {fixed}; remove vocabulary")
        if self.task == "regression":
            if not self.targets:
                raise ValueError("task regression needs targets: the names of its numeric targets, e.g. "
                                 "targets: [arousal, valence]")
            if len(set(self.targets)) != len(self.targets) or not all(name.strip() == name and name
                                                                      for name in self.targets):
                raise ValueError(f"targets {self.targets}: give distinct non-empty names without surrounding spaces")
        else:
            if self.targets is not None:
                raise ValueError(f"targets is for task regression only (this task is {self.task})")
            if self.target_stats != "train":
                raise ValueError(f"target_stats is for task regression only (this task is {self.task})")
        return self

    @model_validator(mode="after")
    def _keys_exist(self) -> "BenchmarkSpec":
        for key in (self.vocabulary.file, self.vocabulary.compare_with):
            if key is not None and key not in self.files:
                raise ValueError(f"vocabulary refers to files key {key!r}, which files does not define")
        for key, remote in self.files.items():
            if remote.built_from is not None and remote.built_from.index not in self.files:
                raise ValueError(f"files.{key}.built_from.index {remote.built_from.index!r} is not a files key")
        return self
