"""The dataset contract for task types: spec fields, labels per task, target statistics, readiness refusals."""

from __future__ import annotations

import typing
from typing import Any

import numpy as np
import pytest

from marble_eval.configs import validate
from marble_eval.datasets.assemble import finish
from marble_eval.datasets.base import Dataset, Item
from marble_eval.datasets.registry import MARBLE_TASKS, LoadContext
from marble_eval.datasets.spec import BenchmarkSpec, MarbleV1Settings, TaskName
from marble_eval.errors import MarbleEvalError
from marble_eval.files import sha256_json
from marble_eval.metrics.keys import KEY_CLASSES
from marble_eval.tasks import TASKS

V1 = {"layer_95m": 7, "lr_95m": 5e-3, "layer_330m": 10, "lr_330m": 1e-3, "max_epochs": 100, "lr_patience": 6,
      "es_patience": 20}


def spec(task: str = "multilabel", **extra: Any) -> BenchmarkSpec:
    return validate(BenchmarkSpec, {"name": "t", "version": "1", "task": task, "source": "manifest", **extra}, "test")


def items(labels: list[tuple[str, ...]], splits: str = "tvs") -> list[Item]:
    names = {"t": "train", "v": "valid", "s": "test"}
    return [Item(id=f"i{n}", split=names[splits[n % len(splits)]], path=f"i{n}.wav", tags=tags)
            for n, tags in enumerate(labels)]


def regression(values: list[tuple[float, ...]], splits: str = "tvs", **extra: Any) -> Dataset:
    names = {"t": "train", "v": "valid", "s": "test"}
    rows = [Item(id=f"i{n}", split=names[splits[n % len(splits)]], path=f"i{n}.wav", targets=tuple(v))
            for n, v in enumerate(values)]
    return finish(spec("regression", targets=["arousal", "valence"], **extra), LoadContext(), rows)


def test_the_spec_accepts_exactly_the_task_types_of_marble_eval_tasks() -> None:
    assert typing.get_args(TaskName) == TASKS
    for task in TASKS:
        assert spec(task, **({"targets": ["a"]} if task == "regression" else {})).task == task
    with pytest.raises(MarbleEvalError, match="task"):
        spec("ranking")


def test_regression_needs_targets_and_only_regression_takes_them() -> None:
    with pytest.raises(MarbleEvalError, match="task regression needs targets"):
        spec("regression")
    with pytest.raises(MarbleEvalError, match="distinct"):
        spec("regression", targets=["a", "a"])
    with pytest.raises(MarbleEvalError, match="targets is for task regression only"):
        spec("multiclass", targets=["a"])
    with pytest.raises(MarbleEvalError, match="target_stats is for task regression only"):
        spec("multiclass", target_stats="training")
    for task, extra in (("key", {}), ("regression", {"targets": ["a"]})):
        with pytest.raises(MarbleEvalError, match=f"task {task} takes no vocabulary"):
            spec(task, vocabulary={"rule": "top_n", "n": 3}, **extra)


def test_marble_v1_block_is_typed_and_checks_models_and_metrics() -> None:
    block = spec("multiclass", marble_v1={**V1, "published": {"MERT-v1-95M": {"accuracy": 74.8}}}).marble_v1
    assert isinstance(block, MarbleV1Settings) and block.layer_95m == 7 and block.window_seconds == 0
    assert block.published["MERT-v1-95M"]["accuracy"] == 74.8
    assert spec("multilabel", marble_v1={**V1, "layer_95m": "weighted"}).marble_v1.layer_95m == "weighted"
    assert spec("regression", targets=["valence"], marble_v1={**V1, "published": {
        "MERT-v1-330M": {"r2_valence": 59.0}}}).marble_v1 is not None
    for bad, message in ((("MERT-v2", "accuracy"), "unknown model"), (("MERT-v1-95M", "acc"), "unknown metric")):
        with pytest.raises(MarbleEvalError, match=message):
            spec("multiclass", marble_v1={**V1, "published": {bad[0]: {bad[1]: 50.0}}})
    with pytest.raises(MarbleEvalError, match="not a percentage"):
        spec("multiclass", marble_v1={**V1, "published": {"MERT-v1-95M": {"accuracy": 0.748 * 1000}}})
    with pytest.raises(MarbleEvalError, match="lr_95m"):
        spec("multiclass", marble_v1={**V1, "lr_95m": 0})
    assert finish(spec("multiclass", marble_v1=V1), LoadContext(), items([("a",)] * 3)).marble_v1.lr_330m == 1e-3


def test_multiclass_label_rows_are_one_hot_over_every_class() -> None:
    dataset = finish(spec("multiclass", vocabulary={"rule": "all", "count_over": "all"}), LoadContext(),
                     items([("rock",), ("jazz",), ("pop",), ("rock",), ("jazz",), ("pop",)]))
    assert dataset.vocabulary == ["jazz", "pop", "rock"]
    matrix = dataset.label_matrix(dataset.items)
    assert matrix.dtype == np.float32 and (matrix.sum(axis=1) == 1).all()
    assert [dataset.vocabulary[i] for i in matrix.argmax(axis=1)] == ["rock", "jazz", "pop", "rock", "jazz", "pop"]
    with pytest.raises(MarbleEvalError, match="item 'i1' has class 'jazz', which is not one of the 1 classes"):
        finish(spec("multiclass", vocabulary={"rule": "fixed", "tags": ["rock"]}), LoadContext(),
               items([("rock",), ("jazz",), ("rock",)]))


def test_a_multiclass_class_without_a_train_item_is_refused_before_extraction() -> None:
    dataset = finish(spec("multiclass"), LoadContext(), items([("rock",), ("jazz",), ("pop",)]))
    assert dataset.vocabulary == ["rock", "jazz", "pop"]  # counted over train, then the others alphabetically
    with pytest.raises(MarbleEvalError, match="2 of the 3 classes have no train item.*: jazz, pop;"):
        dataset.check_ready(need_audio=False)


def test_key_labels_are_canonical_classes_over_the_fixed_24_keys() -> None:
    dataset = finish(spec("key"), LoadContext(), items([("F# minor",), ("C:maj",), ("a:min",), ("Db minor",)]))
    assert dataset.vocabulary == list(KEY_CLASSES) and dataset.vocabulary_source == "fixed"
    assert [item.tags for item in dataset.items] == [("Gb minor",), ("C major",), ("A minor",), ("Db minor",)]
    matrix = dataset.label_matrix(dataset.items)
    assert matrix.shape == (4, 24) and [KEY_CLASSES[i] for i in matrix.argmax(axis=1)] == [
        "Gb minor", "C major", "A minor", "Db minor"]
    assert any(note.startswith("22 of the 24 keys have no train item") for note in dataset.notes)
    dataset.check_ready(need_audio=False)  # absent keys are noted, not refused
    with pytest.raises(MarbleEvalError, match="item 'i1'.*'H major' is not a key; write it as 'C major'"):
        finish(spec("key"), LoadContext(), items([("C major",), ("H major",), ("C major",)]))


def test_regression_rows_are_the_raw_targets_and_stats_follow_the_rule() -> None:
    values = [(1.0, 2.0), (3.0, 6.0), (100.0, 100.0), (5.0, 4.0), (7.0, 8.0), (-50.0, 0.0)]
    dataset = regression(values)
    assert dataset.vocabulary == ["arousal", "valence"]
    assert dataset.label_matrix(dataset.split("test")).tolist() == [[100, 100], [-50, 0]]
    mean, std = dataset.target_stats()
    assert mean.tolist() == [3.0, 3.0] and std.tolist() == [2.0, 1.0]  # items 0 and 3, population std
    assert dataset.target_stats_source == "train split"
    training = regression(values, target_stats="training")
    assert training.target_stats()[0].tolist() == [4.0, 5.0]  # items 0, 1, 3, 4
    assert training.target_stats_source == "train + valid splits" and training.identity() != dataset.identity()
    fixed = finish(spec("regression", targets=["arousal", "valence"]), LoadContext(), dataset.items,
                   target_stats=((0.5, 0.5), (2.0, 3.0)))
    assert fixed.target_stats()[1].tolist() == [2.0, 3.0] and fixed.target_stats_source == "fixed by the source"
    assert fixed.identity() != dataset.identity()
    assert finish(spec("multiclass"), LoadContext(), items([("a",)] * 3)).target_stats() is None


def test_missing_non_numeric_or_constant_targets_are_refused() -> None:
    with pytest.raises(MarbleEvalError, match="item 'i1' has targets \\[1.0\\]; expected one finite number for each "
                                              "of arousal, valence"):
        regression([(1.0, 2.0), (1.0,), (3.0, 4.0)])
    with pytest.raises(MarbleEvalError, match="item 'i0' has targets \\[nan, 2.0\\]"):
        regression([(float("nan"), 2.0), (1.0, 1.0), (3.0, 4.0)])
    constant = regression([(1.0, 2.0), (0.0, 0.0), (9.0, 9.0), (1.0, 3.0), (5.0, 5.0), (0.0, 0.0)])
    with pytest.raises(MarbleEvalError, match="target\\(s\\) arousal have the same value on every item of the train"):
        constant.check_ready(need_audio=False)


def test_partial_windows_setting_reaches_the_dataset_and_its_identity() -> None:
    keep = finish(spec(), LoadContext(), items([("a",)] * 3))
    drop = finish(spec(audio={"window_seconds": 30, "partial_windows": "drop"}), LoadContext(), items([("a",)] * 3))
    assert not keep.drop_partial_windows and drop.drop_partial_windows
    assert finish(spec(audio={"window_seconds": 30}), LoadContext(), items([("a",)] * 3)).identity() != drop.identity()
    with pytest.raises(MarbleEvalError, match="partial_windows"):
        spec(audio={"partial_windows": "pad"})


def test_a_multilabel_identity_is_what_it_was_before_the_task_types() -> None:
    dataset = finish(spec(), LoadContext(), items([("a", "b"), ("b",), ("a",)]))
    before = sha256_json({"name": "t", "version": "1", "task": "multilabel", "vocabulary": ["a", "b"],
                          "vocabulary_source": "counted", "max_seconds": None, "window_seconds": 0.0, "limit": None,
                          "items": [[i.id, i.split, i.path, list(i.tags)] for i in dataset.items]})
    assert dataset.identity() == before


def test_the_marble_suite_lists_twelve_tasks_in_marbles_table_order() -> None:
    assert len(MARBLE_TASKS) == len(set(MARBLE_TASKS)) == 12
    assert MARBLE_TASKS[:3] == ("gtzan", "gs-key", "emo") and MARBLE_TASKS[-1] == "mtat-marble"


def test_a_source_fixed_class_list_needs_the_source_rule() -> None:
    rows = items([("a",), ("b",), ("a",), ("b",)])
    with pytest.raises(MarbleEvalError, match="vocabulary rule 'top_n' does not fit source 'manifest'; use rule source"):
        finish(spec("multiclass"), LoadContext(), rows, classes=["a", "b", "c"])
    with pytest.raises(MarbleEvalError, match="use rule top_n, all or fixed"):
        finish(spec("multiclass", vocabulary={"rule": "source"}), LoadContext(), rows)
    dataset = finish(spec("multiclass", vocabulary={"rule": "source"}), LoadContext(), rows, classes=["a", "b", "c"])
    assert dataset.vocabulary == ["a", "b", "c"] and dataset.vocabulary_source == "fixed"
    dataset.check_ready(need_audio=False)  # "c" has no item at all: an unused output, not a refusal


def test_split_origin_and_score_unit_reach_the_dataset_and_its_identity() -> None:
    plain = finish(spec("multiclass"), LoadContext(), items([("a",)] * 3))
    ours = finish(spec("multiclass", split_origin="marble-eval", audio={"score_per": "window"}), LoadContext(),
                  items([("a",)] * 3))
    assert (plain.split_origin, plain.score_per) == (None, "item") and (ours.split_origin, ours.score_per) == (
        "marble-eval", "window")
    assert len({plain.identity(), ours.identity(), ours.with_score_per("item").identity()}) == 3
    assert ours.with_score_per("window") is ours
    with pytest.raises(MarbleEvalError, match="split_origin"):
        spec("multiclass", split_origin="ours")
