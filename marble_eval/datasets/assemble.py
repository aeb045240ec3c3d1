"""Shared last step of every source: audio paths from the layout, the vocabulary rule, size checks."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, TypeVar

from marble_eval.configs import validate
from marble_eval.datasets.base import SPLITS, Dataset, Item, top_n_vocabulary
from marble_eval.datasets.readers import read_tag_list
from marble_eval.datasets.reference import resolve_file
from marble_eval.datasets.spec import BenchmarkSpec
from marble_eval.errors import MarbleEvalError

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


def finish(spec: BenchmarkSpec, context: LoadContext, items: list[Item], notes: list[str] | None = None,
           missing_labels: str | None = None) -> Dataset:
    """The Dataset: vocabulary by the YAML's rule, published sizes and vocabulary compared (into notes)."""
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
    if spec.task == "multiclass" and missing_labels is None:
        wrong = next((item for item in items if len(item.tags) != 1), None)
        if wrong is not None:
            raise MarbleEvalError(f"benchmark {spec.name!r}: task multiclass needs exactly one label per item; "
                                  f"item {wrong.id!r} has {len(wrong.tags)}")
    published = _published(spec, context)
    if missing_labels is None:
        vocabulary, source = _vocabulary(spec, context, items, published)
        if source == "counted" and published is not None and published != vocabulary:
            notes.append(vocabulary_difference(vocabulary, published, spec.files[spec.vocabulary.compare_with].path))
        if source != "counted":
            notes.extend(_unlearnable(vocabulary, items, source))
    else:
        vocabulary, source = _fallback_vocabulary(spec, context, published)
    return Dataset(name=spec.name, task=spec.task, vocabulary=vocabulary, items=items, version=spec.version,
                   data_dir=context.data_dir, max_seconds=spec.audio.max_seconds,
                   window_seconds=spec.audio.window_seconds, notes=notes, missing_labels=missing_labels,
                   vocabulary_source=source)


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
    return top_n_vocabulary(counted, n), "counted"


def _unlearnable(vocabulary: list[str], items: list[Item], source: str) -> list[str]:
    """A note naming the tags of a published or fixed vocabulary that no train item has."""
    present = {tag for item in items if item.split == "train" for tag in item.tags}
    absent = [tag for tag in vocabulary if tag not in present]
    if not absent:
        return []
    return [f"{len(absent)} of the {len(vocabulary)} {source} tags have no positive train item, so the probe "
            f"cannot learn them: {', '.join(absent)}"]


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
