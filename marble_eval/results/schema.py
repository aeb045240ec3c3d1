"""The results JSON: one pydantic model, ``ProbeResult``, is its only definition.

``ProbeResult.to_disk`` writes it (atomic, key-sorted JSON); ``ProbeResult.from_disk`` reads it,
migrating schema-1 files (written before this module existed) on the way in. Our own models forbid
unknown keys, so a writer that drifts from the schema fails loudly; the per-item failure records
(``extraction.excluded_items``) and the recipe are recorded verbatim from their owners.

``python -m marble_eval.results.schema`` prints the field reference that docs/results.md carries
(a test keeps the two equal).
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from marble_eval.errors import MarbleEvalError
from marble_eval.files import atomic_write_json, sha256_json
from marble_eval.metrics.table import is_metric

SCHEMA_VERSION = 3
WEIGHTED = "weighted"


class _Record(BaseModel):
    """Base of every part of a result: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class ModelRecord(_Record):
    """The model that was probed."""

    id: str = Field(description="what the user typed: hub id (org/name[@rev]), directory or `fixture`")
    name: str | None = Field(None, description="display name (`--name`); the fingerprint stays the identity")
    family: str = Field(description="adapter family, e.g. `mert`, `maest`")
    fingerprint: str = Field(description="sha256 of config.json and every weights file: the model's identity")
    revision: str | None = Field(None, description="hub commit when resolved from the Hugging Face cache")
    hidden_states: int = Field(description="number of hidden states, including the input-projection state 0")
    dim: int = Field(description="feature width")
    parameters: int = Field(description="number of parameters")
    licence: str | None = Field(None, description="licence of the weights as the model card states it (known "
                                "hub ids; null: not recorded)")

    @property
    def display(self) -> str:
        """The name shown in tables: ``name`` when given, else ``id``."""
        return self.name or self.id


class DatasetRecord(_Record):
    """The dataset as it resolved when the probes ran."""

    name: str = Field(description="dataset name")
    version: str = Field(description="version of its YAML")
    task: str = Field(description="task type: `multilabel`, `multiclass`, `regression` or `key` (marble_eval.tasks)")
    identity: str | None = Field(None, description="`Dataset.identity()`: sha256 of items, splits, labels, "
                                 "vocabulary and audio settings (null in migrated schema-1 files)")
    tags: list[str] = Field(description="ordered vocabulary: tags, classes, or regression target names")
    target_stats: dict[str, list[float]] | None = Field(None, description="regression: `{mean, std}` per target "
                                                        "that the probes' targets were z-scored with")
    target_stats_source: str | None = Field(None, description="regression: which items the statistics come from")
    split_origin: str | None = Field(None, description="who made the split when it is not the dataset's published "
                                     "one (e.g. `marble-eval` for VocalSet); null: the published split")
    splits: dict[str, int] = Field(description="items probed per split (usable audio)")
    split_items: dict[str, int] | None = Field(None, description="items the dataset lists per split, before "
                                               "undecodable audio was left out (null in migrated files)")
    test_items_digest: str | None = Field(None, description="sha256 of the sorted ids of the probed test items")
    vocabulary_source: str | None = Field(None, description="where the tags come from: `counted` (the dataset's "
                                          "rule on its labels), `published` (a published list) or `fixed`")
    limit: int | None = Field(None, description="`--limit N`: a smoke run on the first N items of each split")
    notes: list[str] = Field(default_factory=list, description="e.g. vocabulary drift against the reference")

    @property
    def skipped_test_items(self) -> int:
        """Test items the dataset lists that were not probed (0 when unknown)."""
        if not self.split_items:
            return 0
        return max(0, self.split_items.get("test", 0) - self.splits.get("test", 0))


class GridSpecRecord(_Record):
    """The configurations trained per seed."""

    lrs: list[float] = Field(description="learning rates")
    layers: list[int | str] = Field(description="hidden-state indices and/or `weighted`")
    seeds: list[int] = Field(description="seeds")


class ProtocolRecord(_Record):
    """Everything about how features were extracted and probes trained."""

    preset: str | None = Field(None, description="protocol preset (protocols/<name>.yaml); runs of different "
                               "presets are different protocols; null: none recorded")
    overrides: list[str] = Field(default_factory=list, description="preset fields that explicit arguments replaced")
    recipe: dict[str, Any] = Field(description="the whole probe recipe (its YAML, validated, defaults filled)")
    grid: GridSpecRecord = Field(description="`lrs`, `layers`, `seeds`")
    grid_name: str | None = Field(None, description="the named grid that made `grid`: `marble` (full), `quick`, "
                                  "`v1` (v1's chosen configuration), `custom` (explicit --lrs / --layer); null in "
                                  "files written before it was recorded")
    batch_unit: str | None = Field(None, description="training batches of `item`s (all their windows) or `window`s")
    weighted_init: str | None = Field(None, description="initial layer weights of the weighted sum: `randn`, "
                                      "`uniform`")
    selection: str | None = Field(None, description="validation score that selects a configuration")
    selection_scope: str | None = Field(None, description="`per_seed` or `once` (chosen on seed 0)")
    empty_tags: str | None = Field(None, description="tags without positives in a split: `exclude` or `zero`")
    vocabulary: str | None = Field(None, description="vocabulary rule: `counted` or `published`")
    window_seconds: float | None = Field(description="window length in seconds, 0 = whole clip")
    max_seconds: float | None = Field(description="audio truncated to this many seconds (null: not truncated)")
    precision: str = Field(description="forward-pass precision of the extraction: fp32, bf16, fp16")
    storage: str = Field(description="on-disk dtype of the cached features")
    cache_key: str = Field(description="digest of the feature cache's key")
    max_epochs_override: int | None = Field(None, description="`--max-epochs`, when it replaced the recipe's")

    @property
    def recipe_name(self) -> str:
        """The recipe's name (``mlp``, ``linear``, ...)."""
        return str(self.recipe.get("name", "?"))

    def comparable(self, hidden_states: int) -> dict[str, Any]:
        """The protocol with model-specific parts normalised: what must match for two models' numbers
        on one dataset to be compared (the cache key names the model; "every layer" is per model)."""
        data = self.model_dump(mode="json", exclude={"cache_key"})
        layers = data["grid"]["layers"]
        if set(layers) == {*range(hidden_states), WEIGHTED}:
            data["grid"]["layers"] = "all"
        return data


class ExtractionRecord(_Record):
    """Where the features came from."""

    cache_dir: str = Field(description="the feature cache folder")
    data_dir: str | None = Field(None, description="the audio folder, when known")
    audio_digest: str | None = Field(None, description="digest over the probed items' audio contents, when "
                                     "the cache records it")
    excluded_items: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="`{id: {path, reason}}`: audio that could not be decoded, left out")


class SummaryStat(_Record):
    """One metric over seeds."""

    mean: float = Field(description="mean over seeds (fraction)")
    std: float = Field(description="sample standard deviation over seeds (ddof 1; 0 for one seed)")
    n: int = Field(description="number of seeds")


class TagScore(_Record):
    """One tag's test scores."""

    roc_auc: float | None = Field(None, description="ROC-AUC of the tag")
    ap: float | None = Field(None, description="average precision of the tag")


class Metrics(_Record):
    """Metrics of one probe on one split (fractions): the task's keys of the metric table
    (marble_eval/metrics/table.py: roc_auc, map, micro_f1, macro_f1, accuracy, r2, r2_<target>, key_score)."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    excluded_tags: list[str] = Field(default_factory=list, description="tags left out of the macro averages "
                                     "(no positive, or no negative, item in the split)")
    zeroed_tags: list[str] = Field(default_factory=list, description="tags without positives scored 0 and "
                                   "averaged in (`empty_tags: zero`, as MARBLE v1 and torchmetrics do)")
    per_tag: dict[str, TagScore] | None = Field(None, description="`{tag: {roc_auc, ap}}` (selected probes' test)")

    @model_validator(mode="after")
    def _known_metrics(self) -> "Metrics":
        for key, value in (self.model_extra or {}).items():
            if not is_metric(key):
                raise ValueError(f"unknown metric {key!r} (not in the metric table)")
            if value is not None and not isinstance(value, (int, float)):
                raise ValueError(f"metric {key!r} must be a number or null")
        return self

    def value(self, key: str) -> float | None:
        """The value of metric ``key`` (None when absent)."""
        found = (self.model_extra or {}).get(key)
        return None if found is None else float(found)

    @property
    def scores(self) -> dict[str, float]:
        """Every metric of the split, {key: value} (absent and null ones left out)."""
        return {key: float(v) for key, v in (self.model_extra or {}).items() if v is not None}


class SelectedConfig(_Record):
    """The configuration chosen for one seed on validation."""

    seed: int = Field(description="seed")
    index: int | None = Field(None, description="position in `grid`")
    lr: float = Field(description="learning rate")
    layer: int | str = Field(description="hidden state or `weighted`")
    aggregation: str | None = Field(None, description="how an item's windows became one prediction, when chosen "
                                    "on validation (key task: `vote`, `max_logit`, `mean_logit`, `mean_softmax`)")
    valid: Metrics | None = Field(description="validation metrics")
    test: Metrics | None = Field(description="test metrics with `per_tag` scores")


class GridConfig(_Record):
    """One trained configuration."""

    lr: float = Field(description="learning rate")
    layer: int | str = Field(description="hidden state or `weighted`")
    seed: int = Field(description="seed")
    epochs: int | None = Field(None, description="epochs run")
    best_epoch: int | None = Field(None, description="epoch whose weights were kept")
    aggregation: str | None = Field(None, description="window aggregation chosen on validation (key task)")
    valid: Metrics | None = Field(description="validation metrics (null: the probe diverged)")
    test: Metrics | None = Field(description="test metrics (null: the probe diverged)")


class EnvironmentRecord(_Record):
    """The software that produced the numbers."""

    packages: dict[str, str | None] = Field(description="versions of marble-eval and its main dependencies")
    python: str = Field(description="Python version")
    platform: str = Field(description="`platform.platform()`")
    git_commit: str | None = Field(None, description="marble-eval checkout's commit (`-dirty`: uncommitted "
                                   "changes); null when not run from a marble-eval git checkout")


class Timings(_Record):
    """Wall-clock seconds of the probe stage."""

    load_seconds: float = Field(description="loading cached features")
    probe_seconds: float = Field(description="training and evaluating the grid")


class ResultIdentity(_Record):
    """What makes two results the same measurement: rerunning it is a no-op, anything else a new file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    model_fingerprint: str
    dataset_identity: str | None
    audio_digest: str | None
    protocol: dict[str, Any]  # the whole ProtocolRecord

    @classmethod
    def of(cls, model_fingerprint: str, dataset: str, dataset_identity: str | None, protocol: ProtocolRecord,
           audio_digest: str | None = None) -> ResultIdentity:
        """The identity of a result with these parts (computable before the probes run)."""
        return cls(dataset=dataset, model_fingerprint=model_fingerprint, dataset_identity=dataset_identity,
                   audio_digest=audio_digest, protocol=protocol.model_dump(mode="json"))

    def digest(self) -> str:
        """sha256 of the identity's canonical JSON."""
        return sha256_json(self.model_dump(mode="json"))


class ProbeResult(_Record):
    """One results JSON: one model x dataset x protocol, with the provenance of every number."""

    schema_version: Literal[3] = Field(SCHEMA_VERSION, description="`3`; schema-1 and schema-2 files are migrated "
                                       "on read, newer ones refused naming the file")
    created: str = Field(description="UTC time (ISO 8601) the probes finished")
    model: ModelRecord = Field(description="the probed model")
    dataset: DatasetRecord = Field(description="the dataset as resolved")
    protocol: ProtocolRecord = Field(description="extraction and probe protocol")
    extraction: ExtractionRecord = Field(description="feature provenance")
    summary: dict[str, SummaryStat] = Field(description="`{metric: {mean, std, n}}` over seeds of the selected "
                                            "probes' test metrics, the task's keys of the metric table: "
                                            "multilabel roc_auc, map, micro_f1, macro_f1; multiclass accuracy, "
                                            "macro_f1; regression r2, r2_<target>; key key_score, accuracy")
    selected: list[SelectedConfig] = Field(description="per seed, the configuration with the best validation "
                                           "score")
    grid: list[GridConfig] = Field(description="every (lr, layer, seed) configuration")
    excluded_tags: list[str] = Field(default_factory=list, description="tags left out of the test split's macro "
                                     "averages")
    zeroed_tags: list[str] = Field(default_factory=list, description="tags of the test split scored 0 and "
                                   "averaged in (`empty_tags: zero`)")
    warnings: list[str] = Field(default_factory=list, description="what the probe stage warned about, e.g. a "
                                "seed whose selected probe never trained, with what to run instead")
    environment: EnvironmentRecord = Field(description="software versions")
    timings: Timings = Field(description="seconds per probe-stage step")

    _path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _summary_metrics_known(self) -> "ProbeResult":
        unknown = [key for key in self.summary if not is_metric(key)]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r} in summary (not in the metric table)")
        return self

    @property
    def path(self) -> Path | None:
        """The file this result was read from or last written to."""
        return self._path

    def stat(self, metric: str) -> SummaryStat | None:
        """The summary of ``metric`` (None when the task has no such metric)."""
        return self.summary.get(metric)

    @property
    def task(self) -> str:
        """The dataset's task type."""
        return self.dataset.task

    def identity(self) -> ResultIdentity:
        """What this result measured (see ResultIdentity)."""
        return ResultIdentity.of(self.model.fingerprint, self.dataset.name, self.dataset.identity, self.protocol,
                                 self.extraction.audio_digest)

    def comparison_key(self) -> str:
        """Digest of the normalised protocol: equal for two results whose numbers may be compared."""
        return sha256_json(self.protocol.comparable(self.model.hidden_states))

    def to_disk(self, path: Path) -> Path:
        """Write this result to ``path`` atomically (key-sorted JSON); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.model_dump(mode="json"))
        self._path = path
        return path

    @classmethod
    def from_disk(cls, path: Path) -> ProbeResult:
        """Read (and migrate) a results JSON; every problem is one line naming the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MarbleEvalError(f"{path}: not a readable results JSON ({exc}); delete or regenerate it") from None
        return cls.from_data(data, str(path), path=path)

    @classmethod
    def from_data(cls, data: Any, source: str, path: Path | None = None) -> ProbeResult:
        """Validate parsed JSON (migrating schema 1) read from ``path``; errors are one line naming ``source``."""
        if not isinstance(data, dict) or "schema_version" not in data:
            raise MarbleEvalError(f"{source}: not a results JSON (no schema_version); move it out of the results "
                                  f"folder")
        version = data["schema_version"]
        if version == 1:
            data = migrate_v1(data)
            version = 2
        if version == 2:
            data = migrate_v2(data)
        elif version != SCHEMA_VERSION:
            raise MarbleEvalError(f"{source}: schema_version {version!r} is not one this marble-eval reads "
                                  f"(1, 2 or {SCHEMA_VERSION}); upgrade marble-eval or rerun `marble-eval probe`")
        try:
            result = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise MarbleEvalError(f"{source}: {where}: {first['msg']}{more}; regenerate it with "
                                  f"`marble-eval probe`") from None
        result._path = path
        return result


def migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 result as schema 2: new fields get their "unknown" values; nothing is invented."""
    out = json.loads(json.dumps(data))  # a deep copy
    out["schema_version"] = 2
    out.setdefault("excluded_tags", [])
    out["protocol"].setdefault("max_epochs_override", None)
    out.setdefault("timings", {"load_seconds": 0.0, "probe_seconds": 0.0})
    return out


def migrate_v2(data: dict[str, Any]) -> dict[str, Any]:
    """A schema-2 result as schema 3: the fixed metric fields become the task's metric keys (null ones,
    such as a tagging result's `accuracy`, are dropped); a multiclass result keeps what it recorded."""
    out = json.loads(json.dumps(data))  # a deep copy
    out["schema_version"] = SCHEMA_VERSION

    def clean(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
        if metrics is None:
            return None
        return {key: value for key, value in metrics.items() if value is not None or not is_metric(key)}

    for record in [*out.get("selected", []), *out.get("grid", [])]:
        record["valid"], record["test"] = clean(record.get("valid")), clean(record.get("test"))
    return out


# -- the field reference of docs/results.md ------------------------------------------------

def _nested(annotation: Any) -> type[BaseModel] | None:
    """The record type inside ``annotation`` (X, X | None, list[X], dict[str, X]), if any."""
    if isinstance(annotation, type) and issubclass(annotation, _Record):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) in (typing.Union, list, dict):
        for arg in typing.get_args(annotation):
            found = _nested(arg)
            if found is not None:
                return found
    return None


def _type_name(annotation: Any) -> str:
    """A field's type in words (no "|": it would split a Markdown table cell)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if isinstance(annotation, types.UnionType) or origin is typing.Union:
        return " or ".join(_type_name(arg) for arg in args)
    if origin is Literal:
        return " or ".join(json.dumps(arg) for arg in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return getattr(annotation, "__name__", str(annotation))


def _child_path(prefix: str, name: str, annotation: Any) -> str:
    """Where a nested record sits: ``a.b``, ``a.b[]`` (list items) or ``a.b.<key>`` (map values)."""
    path = name if not prefix else f"{prefix}.{name}"
    for origin, suffix in ((list, "[]"), (dict, ".<key>")):
        if typing.get_origin(annotation) is origin or any(typing.get_origin(arg) is origin
                                                          for arg in typing.get_args(annotation)):
            return path + suffix
    return path


def schema_markdown() -> str:
    """The results JSON's fields as Markdown tables, one per record type, generated from ProbeResult."""
    places: dict[type[BaseModel], list[str]] = {ProbeResult: ["(top level)"]}
    queue: list[tuple[str, type[BaseModel]]] = [("", ProbeResult)]
    while queue:
        prefix, record = queue.pop(0)
        for name, field in record.model_fields.items():
            inner = _nested(field.annotation)
            if inner is not None:
                path = _child_path(prefix, name, field.annotation)
                places.setdefault(inner, [])
                if not places[inner]:
                    queue.append((path, inner))
                places[inner].append(path)
    sections = []
    for record, paths in places.items():
        rows = [f"### {', '.join(f'`{p}`' for p in paths)}: {(record.__doc__ or '').strip().splitlines()[0]}", "",
                "| key | type | what |", "|---|---|---|"]
        rows += [f"| `{name}` | {_type_name(field.annotation)} | {field.description or ''} |"
                 for name, field in record.model_fields.items()]
        sections.append("\n".join(rows) + "\n")
    return "\n".join(sections)


if __name__ == "__main__":
    sys.stdout.write(schema_markdown())
