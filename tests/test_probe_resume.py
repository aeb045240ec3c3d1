"""Issue #15: the probe grid saves each completed chunk, and a rerun with the same inputs trains only
the rest and returns exactly the uninterrupted result."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import marble_eval.probes.grid as grid_module
from marble_eval.errors import MarbleEvalError
from marble_eval.probes import GridOptions, GridResult, GridSpec, run_grid
from marble_eval.probes.recipe import EarlyStopping, PlateauSchedule, ProbeRecipe
from marble_eval.probes.synthetic import synthetic_splits

TAGS = ["a", "b", "c", "d", "e"]
GRID = GridSpec([2e-3, 3e-2], [1, "weighted"], [0, 1])
RECIPE = ProbeRecipe(name="t", version="1", head="mlp", hidden_dim=16, dropout=0.2, batch_size=16, selection="roc_auc", empty_tags="zero",
                     lr_schedule=PlateauSchedule(factor=0.5, patience=1), early_stopping=EarlyStopping(patience=2))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return synthetic_splits(sizes=(80, 40, 40), windows_per_item=2, n_states=3, dim=8)


def run(data, checkpoint: Path | None, **changes) -> GridResult:
    options = {"max_epochs": 4, "chunk_size": 3, **changes}
    return run_grid(data, RECIPE, GRID, "multilabel", TAGS, GridOptions(progress=False, checkpoint_dir=checkpoint,
                                                                        **options))


def comparable(result: GridResult) -> dict:
    """Everything but run times and the resume count."""
    data = result.to_dict()
    data.pop("seconds")
    data["meta"] = {k: v for k, v in data["meta"].items() if k not in ("train_seconds", "eval_seconds", "resumed_configs")}
    return data


class CountChunks:
    """Wraps _train_chunk: counts the configurations trained; raises KeyboardInterrupt on call ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls, self.trained, self.stop_at = 0, 0, stop_at
        self.train = grid_module._train_chunk

    def __call__(self, configs, *args, **kwargs):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        self.trained += len(configs)
        return self.train(configs, *args, **kwargs)


@pytest.fixture(scope="module")
def uninterrupted(data) -> GridResult:
    return run(data, None)


def test_interrupted_grid_resumes_to_the_uninterrupted_result(data, uninterrupted, tmp_path, monkeypatch) -> None:
    interrupted = CountChunks(stop_at=2)
    monkeypatch.setattr(grid_module, "_train_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(data, tmp_path)
    assert len(list(tmp_path.glob("grid-*/chunk-*.json"))) == 1  # the first chunk's 3 configurations

    rerun = CountChunks()
    monkeypatch.setattr(grid_module, "_train_chunk", rerun)
    resumed = run(data, tmp_path)
    assert rerun.trained == len(GRID.configs()) - 3 and resumed.meta["resumed_configs"] == 3
    assert comparable(resumed) == comparable(uninterrupted)
    for ours, theirs in zip(resumed.test_probabilities, uninterrupted.test_probabilities):
        np.testing.assert_array_equal(ours, theirs)

    again = CountChunks()
    monkeypatch.setattr(grid_module, "_train_chunk", again)
    assert comparable(run(data, tmp_path, chunk_size=5)) == {**comparable(uninterrupted), "meta": {
        **comparable(uninterrupted)["meta"], "chunk_size": 5}}
    assert again.trained == 0  # everything was saved; chunking does not matter


def test_other_inputs_never_reuse_saved_chunks(data, tmp_path, monkeypatch) -> None:
    run(data, tmp_path)
    counter = CountChunks()
    monkeypatch.setattr(grid_module, "_train_chunk", counter)
    run(data, tmp_path, max_epochs=3)
    assert counter.trained == len(GRID.configs())
    changed = {**data, "train": replace(data["train"], labels=1 - data["train"].labels)}
    run(changed, tmp_path)
    assert counter.trained == 2 * len(GRID.configs())
    run(data, tmp_path, features_digest="another-cache")
    assert counter.trained == 3 * len(GRID.configs())
    assert len(list(tmp_path.glob("grid-*"))) == 4


def test_a_corrupt_checkpoint_is_a_one_line_error(data, tmp_path) -> None:
    run(data, tmp_path, max_epochs=1)
    chunk = next(tmp_path.glob("grid-*/chunk-*.json"))
    chunk.write_text("{not json")
    with pytest.raises(MarbleEvalError, match="delete") as caught:
        run(data, tmp_path, max_epochs=1)
    assert "\n" not in str(caught.value)
