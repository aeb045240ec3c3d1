"""The probe stage: recipes, input contract, heads, batched grid vs the one-probe Lightning reference
(tests/reference_trainer.py), selection, determinism, and learning on synthetic data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from marble_eval.errors import MarbleEvalError
from marble_eval.metrics import compute_metrics
from marble_eval.probes import GridOptions, GridResult, GridSpec, SplitData, load_recipe, run_grid
from marble_eval.probes.bank import ProbeBank, ProbeConfig, head_logits
from marble_eval.probes.core import HeadShape, item_outputs
from marble_eval.probes.data import check_data
from marble_eval.probes.evaluation import monitor_scores, split_metrics
from marble_eval.probes.recipe import EarlyStopping, PlateauSchedule, ProbeRecipe
from marble_eval.probes.selection import select_index, summarise
from marble_eval.probes.synthetic import synthetic_splits
from reference_trainer import Probe, evaluate_probe, train_probe

# Batched and one-at-a-time training run the same arithmetic (vectorised Adam = torch's single-tensor
# Adam; BCE and sigmoid on ALIGN-padded rows); only their matmuls differ (bmm vs mm), which can move a
# weight's last float32 bit for some shapes (docs/probes.md). Epochs and the rank/count metrics
# compared here came out identical; the tolerance only allows for printing/round-trip noise.
TOL = 1e-9
TAGS = ["a", "b", "c", "d", "e"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_recipe(**changes) -> ProbeRecipe:
    """MARBLE's MLP recipe with a small head and short patiences, so probes stop inside a short test."""
    recipe = ProbeRecipe(
        name="test", version="1", head="mlp", hidden_dim=24, dropout=0.2, batch_size=32, selection="roc_auc",
        empty_tags="zero",
        lr_schedule=PlateauSchedule(factor=0.5, patience=1), early_stopping=EarlyStopping(patience=3),
    )
    return replace(recipe, **changes)


@pytest.fixture(scope="module")
def data() -> dict[str, SplitData]:
    return synthetic_splits(sizes=(240, 80, 80), windows_per_item=2, n_states=4, dim=16, dtype=np.float16)


@pytest.fixture(scope="module")
def grid() -> GridSpec:
    return GridSpec(lrs=[1e-3, 3e-2], layers=[2, "weighted"], seeds=[0, 1])


@pytest.fixture(scope="module")
def grid_result(data, grid) -> GridResult:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_grid(data, small_recipe(), grid, "multilabel", TAGS, GridOptions(progress=False, max_epochs=15, chunk_size=3))
    finally:
        torch.set_num_threads(before)


# -- recipes ------------------------------------------------------------------------------------------


def test_recipes_hold_the_marble_recipe() -> None:
    mlp, linear = load_recipe("mlp"), load_recipe("linear")
    assert (mlp.head, mlp.hidden_dim, mlp.dropout) == ("mlp", 512, 0.2)
    assert (linear.head, linear.hidden_dim, linear.dropout) == ("linear", None, 0.0)
    for recipe in (mlp, linear):
        assert recipe.version
        assert (recipe.optimizer, recipe.weight_decay, recipe.batch_size, recipe.max_epochs) == ("adam", 0.0, 64, 100)
        assert (recipe.lr_schedule.factor, recipe.lr_schedule.patience) == (0.5, 3)
        assert recipe.early_stopping.patience == 10
        assert recipe.monitor == "task" and recipe.restore_best
        assert recipe.protocol() == {"batch_unit": "item", "weighted_init": "randn", "selection": "roc_auc",
                                     "selection_scope": "per_seed", "empty_tags": "zero"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: x\nversion: '1'\nhead: mlp\nhidden_dim: 8\nlearning_rate: 3\n", "learning_rate"),
        ("name: x\nversion: '1'\nhead: mlp\n", "hidden_dim"),
        ("name: x\nversion: '1'\nhead: linear\nhidden_dim: 8\n", "linear"),
        ("name: x\nversion: '1'\nhead: mlp\nhidden_dim: 8\nlr_schedule: {factor: 2}\n", "lr_schedule.factor"),
        ("name: x\nversion: '1'\nhead: transformer\n", "head"),
        ("name: x\nhead: [unclosed\n", "YAML"),
    ],
)
def test_recipe_errors_are_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MarbleEvalError) as caught:
        load_recipe(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and expected in message


def test_unknown_recipe_names_the_known_ones() -> None:
    with pytest.raises(MarbleEvalError, match=r"'mpl'.*linear, mlp"):
        load_recipe("mpl")


# -- input contract --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (lambda d: replace(d["train"], features=d["train"].features.astype(np.float64)), "float16/float32"),
        (lambda d: replace(d["train"], item_of_window=d["train"].item_of_window + 1), "must lie in"),
        (lambda d: replace(d["train"], item_of_window=d["train"].item_of_window // 4), "has no window"),
        (lambda d: replace(d["train"], labels=d["train"].labels * 2), "only 0 and 1"),
        (lambda d: replace(d["train"], features=d["train"].features[:, :, :3]), "disagree"),
    ],
)
def test_bad_probe_data_is_a_one_line_error(data, breakage, expected: str) -> None:
    broken = {**data, "train": breakage(data)}
    with pytest.raises(MarbleEvalError, match=expected) as caught:
        check_data(broken, "multilabel")
    assert "\n" not in str(caught.value)


def test_missing_split_and_bad_multiclass_labels(data) -> None:
    with pytest.raises(MarbleEvalError, match="test"):
        check_data({"train": data["train"], "valid": data["valid"]}, "multilabel")
    with pytest.raises(MarbleEvalError, match="one-hot"):
        check_data(data, "multiclass")


# -- heads and windows -------------------------------------------------------------------------


def test_mlp_and_linear_heads_have_the_marble_shapes() -> None:
    mlp = Probe(HeadShape(dim=16, hidden=512, n_labels=5, dropout=0.2), n_states=4, layer=2, seed=0)
    kinds = [type(m).__name__ for m in mlp.head]
    assert kinds == ["Linear", "ReLU", "SeededDropout", "Linear"]
    assert (mlp.head[0].in_features, mlp.head[0].out_features, mlp.head[3].out_features) == (16, 512, 5)
    assert mlp.head[2].p == 0.2
    assert mlp(torch.randn(7, 4, 16)).shape == (7, 5)
    linear = Probe(HeadShape(dim=16, hidden=None, n_labels=5, dropout=0.0), n_states=4, layer="weighted", seed=0)
    assert [type(m).__name__ for m in linear.head] == ["Linear"]
    assert linear.state_logits.shape == (3,)  # hidden states 1..3: state 0 is excluded
    assert linear(torch.randn(7, 4, 16)).shape == (7, 5)


def test_bank_stacks_one_head_per_probe(data) -> None:
    splits = check_data(data, "multilabel")
    configs = [ProbeConfig(1e-3, "weighted", 0), ProbeConfig(1e-3, 1, 0), ProbeConfig(1e-2, 3, 1)]
    bank = ProbeBank(small_recipe(), splits, "multilabel", configs)
    assert bank.data["w1"].shape == (3, 16, 24) and bank.data["w2"].shape == (3, 24, 5)
    assert head_logits(bank.data, torch.randn(3, 9, 16)).shape == (3, 9, 5)
    assert [c.layer for c in bank.configs] == [1, "weighted", 3]  # by seed, single states first
    # one vectorised Adam: moments shaped like the stacked rows, one learning rate per probe (by position)
    assert {name: m.shape for name, m in bank.exp_avg.items()} == {name: t.shape for name, t in bank.data.items()}
    assert bank.lr.tolist() == [1e-3, 1e-3, 1e-2]


def test_window_logits_are_averaged_per_item_before_the_sigmoid() -> None:
    logits = torch.tensor([[3.0], [-1.0], [0.5]])
    probs = item_outputs(logits, torch.tensor([0, 0, 1]), torch.tensor([2.0, 1.0]), "multilabel")
    assert probs[0, 0].item() == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item())
    assert probs[0, 0].item() != pytest.approx((torch.sigmoid(torch.tensor(3.0)) + torch.sigmoid(torch.tensor(-1.0))).item() / 2)
    softmax = item_outputs(torch.tensor([[2.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 0]), torch.tensor([2.0]), "multiclass")
    assert softmax[0].tolist() == pytest.approx(torch.softmax(torch.tensor([1.0, 0.0]), 0).tolist())


def test_probe_metrics_use_item_averaged_logits(data) -> None:
    split = check_data(data, "multilabel")["test"]
    probe = Probe(HeadShape(16, 24, 5, 0.2), n_states=4, layer=3, seed=0).eval()
    with torch.no_grad():
        window_logits = probe(split.features.float()).numpy()
    items = split.item_of_window.numpy()
    mean_logits = np.stack([window_logits[items == i].mean(0) for i in range(split.n_items)])
    expected = compute_metrics(split.labels.numpy(), 1 / (1 + np.exp(-mean_logits.astype(np.float64))))
    assert evaluate_probe(probe, split, "multilabel", None)["roc_auc"] == pytest.approx(expected["roc_auc"], abs=1e-6)


# -- batched grid vs one probe at a time -----------------------------------------------------------


def _same_run(batched: dict, alone: dict) -> None:
    assert (batched["epochs"], batched["best_epoch"]) == (alone["epochs"], alone["best_epoch"])
    for split in ("valid", "test"):
        for key in ("roc_auc", "map", "micro_f1", "macro_f1"):
            assert batched[split][key] == pytest.approx(alone[split][key], abs=TOL), (split, key)


def test_batched_grid_ends_where_each_probe_ends_alone(data, grid_result) -> None:
    epochs = [c["epochs"] for c in grid_result.configs]
    assert min(epochs) < 15 and max(epochs) >= min(epochs) + 3  # probes stopped at different epochs
    for config in grid_result.configs:
        alone = train_probe(data, small_recipe(), "multilabel", config["lr"], config["layer"], config["seed"], TAGS, max_epochs=15)
        _same_run(config, alone)


def test_batched_equals_alone_for_multiclass_linear_probe_tested_on_last_weights() -> None:
    multiclass = synthetic_splits(sizes=(200, 60, 60), windows_per_item=3, n_states=3, dim=8, n_tags=4, task="multiclass", seed=3)
    recipe = small_recipe(head="linear", hidden_dim=None, dropout=0.0, restore_best=False)
    result = run_grid(multiclass, recipe, GridSpec([1e-3, 3e-2], ["weighted", 1], [5]), "multiclass", list("wxyz"), GridOptions(progress=False, max_epochs=8))
    for config in result.configs:
        alone = train_probe(multiclass, recipe, "multiclass", config["lr"], config["layer"], 5, list("wxyz"), max_epochs=8)
        assert (config["epochs"], config["best_epoch"]) == (alone["epochs"], alone["best_epoch"])
        for split in ("valid", "test"):
            for key in ("accuracy", "macro_f1"):
                assert config[split][key] == pytest.approx(alone[split][key], abs=TOL)


def test_chunk_size_does_not_change_results(data, grid, grid_result) -> None:
    again = run_grid(data, small_recipe(), grid, "multilabel", TAGS, GridOptions(progress=False, max_epochs=15, chunk_size=100))
    assert again.configs == grid_result.configs
    assert again.selected == grid_result.selected
    assert again.summary == grid_result.summary


def test_one_probe_is_deterministic(data) -> None:
    runs = [train_probe(data, small_recipe(), "multilabel", 3e-2, "weighted", 4, max_epochs=4) for _ in range(2)]
    assert runs[0] == runs[1]


# -- selection and summary ---------------------------------------------------------------------


def test_selection_rule_and_tie_breaks() -> None:
    def config(seed: int, auc: float, ap: float) -> dict:
        return {"seed": seed, "valid": {"roc_auc": auc, "map": ap}}

    configs = [config(0, 0.8, 0.5), config(0, 0.9, 0.4), config(1, 0.95, 0.1), config(0, 0.9, 0.6), config(0, 0.9, 0.6)]
    assert select_index(configs, 0) == 3  # best ROC-AUC, then best mAP, then first in grid order
    assert select_index(configs, 1) == 2
    configs.append({"seed": 2, "valid": None})
    with pytest.raises(MarbleEvalError, match="seed 2 diverged"):
        select_index(configs, 2)


def test_grid_selects_best_validation_config_per_seed(grid_result) -> None:
    assert [s["seed"] for s in grid_result.selected] == [0, 1]
    for chosen in grid_result.selected:
        mine = [c for c in grid_result.configs if c["seed"] == chosen["seed"]]
        assert chosen["valid"]["roc_auc"] == max(c["valid"]["roc_auc"] for c in mine)
        config = grid_result.configs[chosen["index"]]
        assert (config["lr"], config["layer"]) == (chosen["lr"], chosen["layer"])
        assert set(chosen["test"]["per_tag"]) == set(TAGS) and "excluded_tags" in chosen["test"]
        assert chosen["test"]["roc_auc"] == config["test"]["roc_auc"]
        assert chosen["test"]["excluded_tags"] == grid_result.excluded_tags
    values = [s["test"]["roc_auc"] for s in grid_result.selected]
    assert grid_result.summary["roc_auc"]["mean"] == pytest.approx(np.mean(values))
    assert grid_result.summary["roc_auc"]["std"] == pytest.approx(np.std(values, ddof=1))
    assert summarise(grid_result.selected[:1])["map"]["std"] == 0.0


def test_grid_result_survives_json(grid_result) -> None:
    text = json.dumps(grid_result.to_dict())
    back = GridResult.from_dict(json.loads(text))
    assert back.summary == grid_result.summary and back.configs == grid_result.configs
    assert back.recipe["hidden_dim"] == 24 and back.grid["layers"] == [2, "weighted"]


# -- grid spec, divergence, progress -----------------------------------------------------------


def test_grid_spec_constructors_and_checks() -> None:
    marble = GridSpec.marble(13)
    assert marble.lrs == [5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2]
    assert marble.layers == [*range(13), "weighted"] and marble.seeds == [0, 1, 2, 3, 4]
    assert len(marble.configs()) == 6 * 14 * 5
    assert GridSpec.quick([7]).configs() == [ProbeConfig(lr, "weighted", 7) for lr in (1e-3, 5e-3, 1e-2)]
    with pytest.raises(MarbleEvalError, match="hidden state 0..12"):
        GridSpec([1e-3], [13], [0]).check(13)
    with pytest.raises(MarbleEvalError, match="repeats"):
        GridSpec([1e-3, 1e-3], [1], [0]).check(13)


def test_a_diverged_probe_gets_no_score() -> None:
    labels = torch.tensor([[1.0], [0.0], [1.0]])
    probs = torch.tensor([[[0.9], [0.2], [0.7]], [[float("nan")], [0.1], [0.3]]], dtype=torch.float64)
    scores = monitor_scores(labels, probs, "exclude")
    assert scores[0] == 1.0 and np.isnan(scores[1])
    assert split_metrics(labels, probs[1], "multilabel", None, "exclude") is None


def test_probes_learn_synthetic_data_and_progress_bar_runs(capsys) -> None:
    easy = synthetic_splits(sizes=(600, 150, 150), windows_per_item=2, n_states=4, dim=16, seed=1)
    result = run_grid(easy, load_recipe("mlp"), GridSpec([1e-2], [0, 3, "weighted"], [0]), "multilabel", TAGS, GridOptions(max_epochs=30))
    assert result.summary["roc_auc"]["mean"] > 0.9  # chance is 0.5
    assert result.selected[0]["layer"] != 0  # the noisiest hidden state is not chosen
    assert "probes" in capsys.readouterr().err


def test_tag_empty_in_test_split_is_excluded_and_named(data) -> None:
    test = data["test"]
    emptied = {**data, "test": replace(test, labels=test.labels * np.array([1, 1, 1, 1, 0], dtype=np.float32))}
    recipe = small_recipe(head="linear", hidden_dim=None, dropout=0.0, empty_tags="exclude")
    result = run_grid(emptied, recipe, GridSpec.quick([0]), "multilabel", TAGS, GridOptions(progress=False, max_epochs=2))
    assert result.excluded_tags == ["e"]
    assert result.selected[0]["test"]["per_tag"]["e"] == {"roc_auc": None, "ap": None}
    assert result.configs[0]["valid"]["excluded_tags"] == []
