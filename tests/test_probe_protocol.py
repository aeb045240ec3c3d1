"""The recipe's open protocol choices (issue #16): item batches, randn layer weights, selection
criterion and scope, empty tags; each the same in the batched grid and the one-probe reference."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multilabel_auroc, multilabel_average_precision, multilabel_f1_score

from marble_eval.errors import MarbleEvalError
from marble_eval.metrics import compute_metrics, macro_roc_auc
from marble_eval.probes import GridOptions, GridSpec, SplitData, load_recipe, run_grid
from marble_eval.probes.bank import ProbeBank, ProbeConfig
from marble_eval.probes.core import epoch_batches, init_state_logits, stream
from marble_eval.probes.data import check_data
from marble_eval.probes.lightning_utils import make_trainer, quiet_fit
from marble_eval.probes.recipe import EarlyStopping, PlateauSchedule, ProbeRecipe
from marble_eval.probes.selection import select_index
from marble_eval.probes.synthetic import synthetic_splits
from reference_trainer import train_probe

TAGS = ["a", "b", "c", "d", "e"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def recipe(**changes) -> ProbeRecipe:
    """A small MLP with short patiences and MARBLE v1's protocol defaults."""
    base = ProbeRecipe(name="t", version="1", head="mlp", hidden_dim=16, dropout=0.2, batch_size=16, selection="roc_auc", empty_tags="zero",
                       lr_schedule=PlateauSchedule(factor=0.5, patience=1), early_stopping=EarlyStopping(patience=2))
    return replace(base, **changes)


def uneven_windows(data: dict[str, SplitData], seed: int = 0) -> dict[str, SplitData]:
    """Drop windows at random (keeping at least one per item): items get 1..3 windows."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, split in data.items():
        items = split.item_of_window
        first = np.r_[True, items[1:] != items[:-1]]
        keep = first | (rng.random(items.shape[0]) < 0.5)
        out[name] = SplitData(split.features[keep], items[keep], split.labels)
    return out


@pytest.fixture(scope="module")
def uneven() -> dict[str, SplitData]:
    data = uneven_windows(synthetic_splits(sizes=(100, 40, 40), windows_per_item=3, n_states=4, dim=8))
    counts = np.bincount(data["train"].item_of_window)
    assert counts.min() == 1 and counts.max() == 3  # really uneven
    return data


# -- batch_unit --------------------------------------------------------------------------------------


def test_item_batches_hold_whole_items_and_cover_every_window_once(uneven) -> None:
    train = check_data(uneven, "multilabel")["train"]
    batches = epoch_batches(stream(0, "shuffle"), train, "item", 64)
    assert len(batches) == math.ceil(train.n_items / 64) == 2
    windows = torch.cat(batches)
    assert sorted(windows.tolist()) == list(range(train.n_windows))
    items_per_batch = [set(train.item_of_window[b].tolist()) for b in batches]
    assert [len(items) for items in items_per_batch] == [64, train.n_items - 64]
    assert not items_per_batch[0] & items_per_batch[1]  # an item's windows never span batches
    assert len(epoch_batches(stream(0, "shuffle"), train, "window", 64)) == math.ceil(train.n_windows / 64)


class CountSteps(L.Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_train_batch_end(self, *args) -> None:
        self.steps += 1


@pytest.mark.parametrize("unit", ["item", "window"])
def test_steps_per_epoch_follow_the_batch_unit(uneven, unit: str) -> None:
    splits = check_data(uneven, "multilabel")
    bank = ProbeBank(recipe(batch_unit=unit, batch_size=64), splits, "multilabel", [ProbeConfig(1e-3, 1, 0)])
    counter = CountSteps()
    with quiet_fit():
        make_trainer(1, [counter], validate=False).fit(bank)
    units = splits["train"].n_items if unit == "item" else splits["train"].n_windows
    assert counter.steps == math.ceil(units / 64)


@pytest.mark.parametrize("changes", [
    {},  # v1: item batches, randn layer weights, empty tags scored 0
    {"batch_unit": "window", "weighted_init": "uniform", "empty_tags": "exclude"},
])
def test_batched_grid_equals_the_reference_on_uneven_windows(uneven, changes) -> None:
    chosen = recipe(**changes)
    result = run_grid(uneven, chosen, GridSpec([2e-3, 3e-2], [1, "weighted"], [0, 1]), "multilabel", TAGS, GridOptions(progress=False, max_epochs=6, chunk_size=3))
    assert result.protocol == chosen.protocol()
    for config in result.configs:
        alone = train_probe(uneven, chosen, "multilabel", config["lr"], config["layer"], config["seed"], TAGS, max_epochs=6)
        assert (config["epochs"], config["best_epoch"]) == (alone["epochs"], alone["best_epoch"])
        for split in ("valid", "test"):
            for key in ("roc_auc", "map", "micro_f1", "macro_f1"):
                assert config[split][key] == alone[split][key], (config["lr"], config["layer"], split, key)


# -- weighted_init -----------------------------------------------------------------------------------


def test_randn_layer_weights_are_reproducible_per_seed_and_differ_across_seeds(uneven) -> None:
    assert torch.equal(init_state_logits(3, 12, "randn"), init_state_logits(3, 12, "randn"))
    assert not torch.equal(init_state_logits(3, 12, "randn"), init_state_logits(4, 12, "randn"))
    assert torch.equal(init_state_logits(3, 12, "uniform"), torch.zeros(12))
    splits = check_data(uneven, "multilabel")
    configs = [ProbeConfig(lr, "weighted", seed) for seed in (0, 1) for lr in (1e-3, 1e-2)]
    logits = ProbeBank(recipe(), splits, "multilabel", configs).data["state_logits"]
    assert torch.equal(logits[0], logits[1]) and torch.equal(logits[2], logits[3])  # same seed, same start
    assert not torch.equal(logits[0], logits[2])
    assert torch.equal(logits[0], init_state_logits(0, 3, "randn"))


# -- empty_tags --------------------------------------------------------------------------------------


def test_zero_empty_tags_match_torchmetrics_macro_scores() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random((60, 6)) < 0.4).astype(np.float32)
    y[:, 2] = 0  # no positive
    y[:, 4] = 1  # no negative
    s = rng.random((60, 6))
    preds, target = torch.from_numpy(s), torch.from_numpy(y).long()
    ours = compute_metrics(y, s, empty_tags="zero", tags=list("uvwxyz"))
    with warnings.catch_warnings():  # torchmetrics warns about the empty tags
        warnings.simplefilter("ignore")
        auroc = float(multilabel_auroc(preds, target, num_labels=6, average="macro", thresholds=None))
    assert ours["roc_auc"] == pytest.approx(auroc, abs=1e-6)
    assert float(macro_roc_auc(y, s, empty_tags="zero")) == ours["roc_auc"]
    with warnings.catch_warnings():  # torchmetrics warns about the empty tags
        warnings.simplefilter("ignore")
        ap = float(multilabel_average_precision(preds, target, num_labels=6, average="macro", thresholds=None))
    assert ours["map"] == pytest.approx(ap, abs=1e-6)
    f1 = float(multilabel_f1_score(preds, target, num_labels=6, average="macro"))
    assert ours["macro_f1"] == pytest.approx(f1, abs=1e-6)
    assert ours["zeroed_tags"] == ["w", "y"] and ours["excluded_tags"] == []
    assert ours["per_tag"]["w"] == {"roc_auc": 0.0, "ap": 0.0}
    excluded = compute_metrics(y, s, empty_tags="exclude", tags=list("uvwxyz"))
    assert excluded["excluded_tags"] == ["w", "y"] and excluded["roc_auc"] > ours["roc_auc"]


def test_grid_scores_an_empty_test_tag_as_zero_or_excludes_it(uneven) -> None:
    test = uneven["test"]
    emptied = {**uneven, "test": replace(test, labels=test.labels * np.array([1, 1, 1, 1, 0], dtype=np.float32))}
    linear = recipe(head="linear", hidden_dim=None, dropout=0.0)
    zero = run_grid(emptied, linear, GridSpec.quick([0]), "multilabel", TAGS, GridOptions(progress=False, max_epochs=2))
    exclude = run_grid(emptied, replace(linear, empty_tags="exclude"), GridSpec.quick([0]), "multilabel", TAGS, GridOptions(progress=False, max_epochs=2))
    assert (zero.zeroed_tags, zero.excluded_tags) == (["e"], [])
    assert (exclude.zeroed_tags, exclude.excluded_tags) == ([], ["e"])
    probs = torch.from_numpy(zero.test_probabilities[0]).double()
    target = torch.from_numpy(emptied["test"].labels).long()
    with warnings.catch_warnings():  # torchmetrics warns about the empty tags
        warnings.simplefilter("ignore")
        auroc = float(multilabel_auroc(probs, target, num_labels=5, average="macro", thresholds=None))
    assert zero.selected[0]["test"]["roc_auc"] == pytest.approx(auroc, abs=1e-6)
    assert zero.selected[0]["test"]["roc_auc"] == pytest.approx(exclude.selected[0]["test"]["roc_auc"] * 4 / 5, abs=1e-3)


# -- selection and selection_scope ---------------------------------------------------------------------


def test_selection_criteria_pick_differently() -> None:
    configs = [{"seed": 0, "valid": {"roc_auc": 0.90, "map": 0.30}}, {"seed": 0, "valid": {"roc_auc": 0.88, "map": 0.40}}]
    assert select_index(configs, 0, "roc_auc") == 0
    assert select_index(configs, 0, "roc_auc_ap_mean") == 1
    tie = [{"seed": 0, "valid": {"roc_auc": 0.75, "map": 0.25}}, {"seed": 0, "valid": {"roc_auc": 0.625, "map": 0.375}}]
    assert select_index(tie, 0, "roc_auc_ap_mean") == 1  # equal means: the higher AP


def test_selection_scope_once_reruns_seed_zeros_choice(uneven) -> None:
    grid = GridSpec([2e-3, 3e-2], [1, "weighted"], [0, 1, 2])
    per_seed = run_grid(uneven, recipe(), grid, "multilabel", TAGS, GridOptions(progress=False, max_epochs=4))
    once = run_grid(uneven, recipe(selection_scope="once"), grid, "multilabel", TAGS, GridOptions(progress=False, max_epochs=4))
    chosen = per_seed.selected[0]
    assert once.selected[0] == chosen
    assert len(once.configs) == 4 + 2  # seed 0's grid, then its choice for seeds 1 and 2
    for selected in once.selected[1:]:
        assert (selected["lr"], selected["layer"]) == (chosen["lr"], chosen["layer"])
        same = next(c for c in per_seed.configs
                    if (c["lr"], c["layer"], c["seed"]) == (chosen["lr"], chosen["layer"], selected["seed"]))
        assert once.configs[selected["index"]] == same
    assert once.to_dict()["protocol"]["selection_scope"] == "once"
    assert "per_seed" in per_seed.meta["selection"] and "once" in once.meta["selection"]


def test_selection_mean_is_recorded_and_used(uneven) -> None:
    grid = GridSpec([2e-3, 3e-2], [1, "weighted"], [0])
    result = run_grid(uneven, recipe(selection="roc_auc_ap_mean"), grid, "multilabel", TAGS, GridOptions(progress=False, max_epochs=4))
    best = max(range(len(result.configs)), key=lambda i: (
        (result.configs[i]["valid"]["roc_auc"] + result.configs[i]["valid"]["map"]) / 2, result.configs[i]["valid"]["map"], -i))
    assert result.selected[0]["index"] == best
    assert result.to_dict()["protocol"]["selection"] == "roc_auc_ap_mean"


def test_recipe_rejects_unknown_protocol_values(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nversion: '1'\nhead: linear\nbatch_unit: clip\n")
    with pytest.raises(MarbleEvalError, match="batch_unit") as caught:
        load_recipe(path)
    assert "\n" not in str(caught.value)
