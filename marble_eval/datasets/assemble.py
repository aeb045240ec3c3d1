"""Shared last step of every source: audio paths from the layout, the vocabulary rule, size checks."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from marble_eval.configs import validate
from marble_eval.datasets.base import SPLITS, Dataset, Item, top_n_vocabulary
from marble_eval.datasets.readers import read_tag_list
from marble_eval.datasets.reference import resolve_file
from marble_eval.datasets.spec import BenchmarkSpec
from marble_eval.errors import MarbleEvalError
from marble_eval.metrics.keys import KEY_CLASSES, parse_key

if TYPE_CHECKING:
    from marble_eval.datasets.registry import LoadContext

T = TypeVar("T")


def options(cls: type[T], spec: BenchmarkSpec) -> T:
    """The YAML's ``options`` validated into the source's options dataclass (unknown keys refused)."""
    return validate(cls, spec.options, f"benchmark {spec.name!r}: options")


def reference(spec: BenchmarkSpec, key: str, context: LoadContext):
    """Local, hash-checked path of one of the YAML's ``files`` entries."""
    return resolve_file(spec, key, context.reference_dir, context.cache_dir)


def audio_path(spec: BenchmarkSpec, fields: dict[str, Any]) -> str:
    """The item's audio path under --data-dir from the YAML's ``audio.layout``."""
    try:
        return spec.audio.layout.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise MarbleEvalError(f"benchmark {spec.name!r}: audio.layout {spec.audio.layout!r} uses {exc}; "
                              f"available fields: {', '.join('{' + name + '}' for name in fields)}") from None


def canonical_key(label: str) -> str:
    """The canonical class name (``KEY_CLASSES``) of a key label such as "F# minor" or "C:maj"."""
    return KEY_CLASSES[parse_key(label)]


def finish(spec: BenchmarkSpec, context: LoadContext, items: list[Item], notes: list[str] | None = None,
           missing_labels: str | None = None,
           target_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
           classes: list[str] | None = None) -> Dataset:
    """The Dataset: vocabulary by the task and the YAML's rule, published sizes and vocabulary compared
    (into notes). ``target_stats``: (mean, std) per target a source fixes for z-scoring (regression).
    ``classes``: the ordered class list a source fixes (NSynth's 11 families, 128 MIDI pitches)."""
    notes = list(notes or [])
    counts = Counter(item.split for item in items)
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise MarbleEvalError(f"benchmark {spec.name!r}: unknown split(s) {sorted(unknown)}; use train, valid, test")
    if spec.sizes is not None:
        got = {split: counts.get(split, 0) for split in SPLITS}
        want = {split: spec.sizes.get(split, 0) for split in SPLITS}
        if got != want:
            notes.append(f"split sizes {_sizes(got)} differ from the published {_sizes(want)}")
    if spec.task in ("multiclass", "key") and missing_labels is None:
        wrong = next((item for item in items if len(item.tags) != 1), None)
        if wrong is not None:
            raise MarbleEvalError(f"benchmark {spec.name!r}: task {spec.task} needs exactly one label per item; "
                                  f"item {wrong.id!r} has {len(wrong.tags)}")
    if spec.task == "key" and missing_labels is None:
        items = [_with_key(spec, item) for item in items]
    if spec.task == "regression" and missing_labels is None:
        _check_targets(spec, items)
    published = _published(spec, context)
    if (classes is not None) != (spec.vocabulary.rule == "source"):
        raise MarbleEvalError(f"benchmark {spec.name!r}: vocabulary rule {spec.vocabulary.rule!r} does not fit source "
                              f"{spec.source!r}; use rule {'source' if classes is not None else 'top_n, all or fixed'}")
    if classes is not None:
        vocabulary, source = list(classes), "fixed"
    elif spec.task in ("key", "regression"):
        vocabulary, source = (list(KEY_CLASSES) if spec.task == "key" else list(spec.targets or [])), "fixed"
        if spec.task == "key" and missing_labels is None:
            notes.extend(_unlearnable(vocabulary, items, "", "keys have no train item (noted only: 24 keys rarely all "
                                      "occur)"))
    elif missing_labels is None:
        vocabulary, source = _vocabulary(spec, context, items, published)
        if source == "counted" and published is not None and published != vocabulary:
            notes.append(vocabulary_difference(vocabulary, published, spec.files[spec.vocabulary.compare_with].path))
        if source != "counted":
            notes.extend(_unlearnable(vocabulary, items, source))
    else:
        vocabulary, source = _fallback_vocabulary(spec, context, published)
    if spec.task == "multiclass" and missing_labels is None:
        _check_classes(spec, items, vocabulary)
    return Dataset(name=spec.name, task=spec.task, vocabulary=vocabulary, items=items, version=spec.version,
                   data_dir=context.data_dir, max_seconds=spec.audio.max_seconds,
                   window_seconds=spec.audio.window_seconds, notes=notes, missing_labels=missing_labels,
                   vocabulary_source=source, drop_partial_windows=spec.audio.partial_windows == "drop",
                   target_stats_rule="explicit" if target_stats is not None else spec.target_stats,
                   explicit_target_stats=target_stats, marble_v1=spec.marble_v1, split_origin=spec.split_origin,
                   score_per=spec.audio.score_per)


def _with_key(spec: BenchmarkSpec, item: Item) -> Item:
    try:
        return replace(item, tags=(canonical_key(item.tags[0]),))
    except MarbleEvalError as exc:
        raise MarbleEvalError(f"benchmark {spec.name!r}: item {item.id!r}: {exc}") from None


def _check_targets(spec: BenchmarkSpec, items: list[Item]) -> None:
    """Every item of a regression dataset has one finite number per target."""
    names = spec.targets or []
    for item in items:
        if len(item.targets) != len(names) or not all(math.isfinite(value) for value in item.targets):
            raise MarbleEvalError(f"benchmark {spec.name!r}: item {item.id!r} has targets {list(item.targets)}; "
                                  f"expected one finite number for each of {', '.join(names)}")


def _check_classes(spec: BenchmarkSpec, items: list[Item], vocabulary: list[str]) -> None:
    """Every item's class is in the vocabulary (a class outside it would make an all-zero one-hot row)."""
    known = set(vocabulary)
    outside = next((item for item in items if item.tags[0] not in known), None)
    if outside is not None:
        raise MarbleEvalError(f"benchmark {spec.name!r}: item {outside.id!r} has class {outside.tags[0]!r}, which is "
                              f"not one of the {len(vocabulary)} classes of the vocabulary; add it or fix the label")


def vocabulary_difference(yours: list[str], published: list[str], where: str) -> str:
    """One line saying which tags differ between the computed and the published vocabulary."""
    only_yours = [tag for tag in yours if tag not in published]
    only_published = [tag for tag in published if tag not in yours]
    if not only_yours and not only_published:
        return f"vocabulary has the same tags as the published {where} but in another order"
    return (f"vocabulary differs from the published {where}: only in yours: {', '.join(only_yours) or '-'}; "
            f"only in the published: {', '.join(only_published) or '-'} (the labels' metadata date matters)")


def _vocabulary(spec: BenchmarkSpec, context: LoadContext, items: list[Item],
                published: list[str] | None) -> tuple[list[str], str]:
    """(tags, vocabulary_source) by the YAML's rule, or the published list when --vocabulary published
    (without one, the rule's; load_dataset then refuses the request)."""
    rule = spec.vocabulary
    if rule.rule == "reference":
        return read_tag_list(reference(spec, rule.file, context)), "published"
    if context.vocabulary == "published" and published is not None:
        return list(published), "published"
    if rule.rule == "fixed":
        return list(rule.tags or []), "fixed"
    splits = {"train": {"train"}, "training": {"train", "valid"}, "all": set(SPLITS)}[rule.count_over]
    counted = [item.tags for item in items if item.split in splits]
    n = rule.n if rule.rule == "top_n" and rule.n else len({tag for tags in counted for tag in tags})
    vocabulary = top_n_vocabulary(counted, n)
    if spec.task == "multiclass" and not (rule.rule == "top_n" and rule.n):
        # every class is a class: those seen only outside the counted splits follow, alphabetically
        # (check_ready then refuses a class without a train item)
        vocabulary += sorted({item.tags[0] for item in items} - set(vocabulary))
    return vocabulary, "counted"


def _unlearnable(vocabulary: list[str], items: list[Item], source: str,
                 what: str = "tags have no positive train item") -> list[str]:
    """A note naming the tags of a published or fixed vocabulary that no train item has."""
    present = {tag for item in items if item.split == "train" for tag in item.tags}
    absent = [tag for tag in vocabulary if tag not in present]
    if not absent:
        return []
    return [f"{len(absent)} of the {len(vocabulary)} {source + ' ' if source else ''}{what}, so the probe cannot "
            f"learn them: "
            f"{', '.join(absent)}"]


def _published(spec: BenchmarkSpec, context: LoadContext) -> list[str] | None:
    key = spec.vocabulary.compare_with
    return read_tag_list(reference(spec, key, context)) if key else None


def _fallback_vocabulary(spec: BenchmarkSpec, context: LoadContext,
                         published: list[str] | None) -> tuple[list[str], str]:
    """The vocabulary shown when labels are unavailable: the YAML's fixed or published list."""
    if spec.vocabulary.rule in ("fixed", "reference") or context.vocabulary == "published":
        return _vocabulary(spec, context, [], published)
    return (list(published), "published") if published is not None else ([], "counted")


def _sizes(sizes: dict[str, int]) -> str:
    return " / ".join(f"{sizes[split]:,}" for split in SPLITS)
