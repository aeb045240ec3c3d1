"""Task types in the probe math (issue #20) and the grid's device (issue #24): the loss, activation,
labels and monitor follow ``marble_eval.tasks``; regression and key probes trained batched equal the
one-probe reference; the key task's clip ensembles follow MARBLE v1; CUDA runs where it exists."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from marble_eval.devices import default_device, probe_device
from marble_eval.errors import MarbleEvalError
from marble_eval.probes import GridOptions, GridSpec, SplitData, run_grid
from marble_eval.probes.core import item_outputs, probe_loss
from marble_eval.probes.data import check_data
from marble_eval.probes.recipe import EarlyStopping, PlateauSchedule, ProbeRecipe
from marble_eval.probes.synthetic import synthetic_splits
from marble_eval.tasks import AGGREGATIONS, task_type
from reference_trainer import train_probe

# On CPU the batched trainer runs the one-probe trainer's arithmetic on every probe (vectorised Adam
# repeats torch.optim.Adam's single-tensor operations, bit for bit: test_vectorised_adam_is_torch_adam;
# transcendental kernels run on ALIGN-padded rows) except one thing: its matmuls are batched
# (bmm/baddbmm) where nn.Linear calls mm/addmm, and for some shapes BLAS sums in another order, so
# weights may differ in their last float32 bits. Rank and count metrics (ROC-AUC, AP, accuracy, key
# score) and epochs came out identical; R², which sees every bit of the outputs, agrees to R2_TOL.
TOL = 1e-9
R2_TOL = 1e-6
# CUDA against the CPU reference: same random numbers, same operations, but other kernels (matmul
# blocking, atomics): float32 differences of ~1e-6 per step, which can move a near-tie by one item.
CUDA_METRIC_TOL = 0.02

pytestmark = pytest.mark.usefixtures("one_torch_thread")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def small_recipe(**changes) -> ProbeRecipe:
    recipe = ProbeRecipe(name="test", version="1", head="mlp", hidden_dim=16, dropout=0.2, batch_size=32,
                         selection="roc_auc", empty_tags="zero",
                         lr_schedule=PlateauSchedule(factor=0.5, patience=1), early_stopping=EarlyStopping(patience=3))
    return replace(recipe, **changes)


# -- the task type decides -----------------------------------------------------------------------------


def test_loss_follows_the_task_type() -> None:
    logits, rows = torch.randn(3, 6, 4), torch.eye(4)[torch.randint(0, 4, (3, 6))]
    targets = torch.randn(3, 6, 4)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[1], rows[1])
    ce = torch.nn.functional.cross_entropy(logits[1], rows[1].argmax(-1))
    mse = torch.nn.functional.mse_loss(logits[1], targets[1])
    assert probe_loss(logits, rows, "multilabel")[1].item() == pytest.approx(bce.item(), rel=1e-6)
    assert probe_loss(logits, rows, "multiclass")[1].item() == pytest.approx(ce.item(), rel=1e-6)
    assert probe_loss(logits, rows, "key")[1].item() == pytest.approx(ce.item(), rel=1e-6)
    assert probe_loss(logits, targets, "regression")[1].item() == pytest.approx(mse.item(), rel=1e-6)


def test_regression_outputs_are_mean_window_outputs_without_activation() -> None:
    logits = torch.tensor([[1.0, -2.0], [3.0, 0.0], [5.0, 1.0]])
    out = item_outputs(logits, torch.tensor([0, 0, 1]), torch.tensor([2.0, 1.0]), "regression")
    assert out.tolist() == [[2.0, -1.0], [5.0, 1.0]] and out.dtype == torch.float64


def test_key_clip_ensembles_follow_marble_v1() -> None:
    """v1 GS predict_result_ensemble: vote = mode of the clips' arg-maxes (ties: the lowest class),
    max = arg-max of each class's largest clip logit, gmean = of the mean logit, mean = of the mean softmax."""
    clips = torch.tensor([[4.0, 0.0, 3.9], [0.0, 2.0, 1.9], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    items, counts = torch.tensor([0, 0, 0, 1]), torch.tensor([3.0, 1.0])
    out = {how: item_outputs(clips, items, counts, "key", how) for how in AGGREGATIONS}
    assert out["vote"][0].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3])  # a three-way tie ...
    assert out["vote"][0].argmax().item() == 0  # ... goes to the lowest class, as scipy's mode
    assert out["max_logit"][0].argmax().item() == 0  # 4.0 is the largest logit
    assert out["mean_logit"][0].argmax().item() == 2  # mean logits (1.33, 0.67, 2.93)
    softmax = torch.softmax(clips[:3].double(), -1).mean(0)
    assert out["mean_softmax"][0].tolist() == pytest.approx(softmax.tolist())
    for how in AGGREGATIONS:  # every ensemble gives a distribution; a one-clip item is its clip
        assert out[how].sum(-1).tolist() == pytest.approx([1.0, 1.0])
        assert out[how][1].argmax().item() == 0


@pytest.mark.parametrize(("task", "breakage", "expected"), [
    ("regression", lambda y: np.where(np.arange(y.size).reshape(y.shape) == 3, np.nan, y).astype(np.float32),
     "regression targets must be finite"),
    ("key", lambda y: y * 2, "only 0 and 1"),
    ("multiclass", lambda y: np.ones_like(y), "one-hot rows"),
])
def test_labels_are_checked_per_label_kind(task: str, breakage, expected: str) -> None:
    data = synthetic_splits(sizes=(40, 20, 20), n_tags=3 if task != "key" else 24, task=task)
    broken = {**data, "train": replace(data["train"], labels=breakage(data["train"].labels))}
    with pytest.raises(MarbleEvalError, match=expected) as caught:
        check_data(broken, task)
    assert "\n" not in str(caught.value)


def test_the_positive_and_negative_check_is_for_tagging_only() -> None:
    data = synthetic_splits(sizes=(40, 20, 20), n_tags=3, task="multiclass")
    one_class = np.zeros_like(data["valid"].labels)
    one_class[:, 0] = 1  # every valid item in class 0: fine for accuracy
    check_data({**data, "valid": replace(data["valid"], labels=one_class)}, "multiclass")
    tags = synthetic_splits(sizes=(40, 20, 20), n_tags=3)
    with pytest.raises(MarbleEvalError, match="no tag has both"):
        check_data({**tags, "valid": replace(tags["valid"], labels=np.ones_like(tags["valid"].labels))}, "multilabel")


def test_zero_epochs_are_refused() -> None:
    data = synthetic_splits(sizes=(40, 20, 20))
    with pytest.raises(MarbleEvalError, match="at least one epoch"):
        run_grid(data, small_recipe(), GridSpec([1e-3], [1], [0]), "multilabel", list("abcde"), GridOptions(progress=False, max_epochs=0))


# -- batched equals alone, per task type ---------------------------------------------------------------


def _equal_runs(task: str, data: dict[str, SplitData], recipe: ProbeRecipe, grid: GridSpec, names: list[str],
                epochs: int) -> None:
    result = run_grid(data, recipe, grid, task, names, GridOptions(progress=False, max_epochs=epochs, device="cpu"))
    kind = task_type(task)
    keys = [key for key in result.configs[0]["test"] if not key.startswith(("per_", "excluded", "zeroed"))]
    assert set(kind.metrics) - {"r2_*"} <= set(keys)
    for config in result.configs:
        alone = train_probe(data, recipe, task, config["lr"], config["layer"], config["seed"], names,
                            max_epochs=epochs, aggregations=kind.aggregations)
        assert (config["epochs"], config["best_epoch"]) == (alone["epochs"], alone["best_epoch"])
        chosen = alone if config.get("aggregation", "mean_logit") == "mean_logit" else alone["by_aggregation"][config["aggregation"]]
        for split in ("valid", "test"):
            for key in keys:
                tolerance = R2_TOL if key.startswith("r2") else TOL
                assert config[split][key] == pytest.approx(chosen[split][key], abs=tolerance), (split, key)
    assert result.summary[kind.main_metric]["n"] == len(grid.seeds)


def test_batched_equals_alone_for_regression() -> None:
    data = synthetic_splits(sizes=(160, 50, 50), windows_per_item=2, n_states=3, dim=8, n_tags=2, task="regression", seed=2)
    _equal_runs("regression", data, small_recipe(), GridSpec([1e-3, 3e-2], ["weighted", 2], [0, 1]), ["arousal", "valence"], 8)


def test_batched_equals_alone_for_key_and_the_ensemble_is_chosen_on_validation() -> None:
    data = synthetic_splits(sizes=(240, 80, 80), windows_per_item=3, n_states=3, dim=8, n_tags=24, task="key", seed=4)
    keys = [f"k{i}" for i in range(24)]
    grid = GridSpec([1e-3, 3e-2], ["weighted", 1], [0])
    _equal_runs("key", data, small_recipe(), grid, keys, 6)
    result = run_grid(data, small_recipe(), grid, "key", keys, GridOptions(progress=False, max_epochs=6))
    for config in result.configs:
        alone = train_probe(data, small_recipe(), "key", config["lr"], config["layer"], 0, keys, max_epochs=6,
                            aggregations=AGGREGATIONS)
        valid = {"mean_logit": alone["valid"], **{how: m["valid"] for how, m in alone["by_aggregation"].items()}}
        best = min(AGGREGATIONS, key=lambda how: (-valid[how]["key_score"], -valid[how]["accuracy"], AGGREGATIONS.index(how)))
        assert config["aggregation"] == best
    chosen = result.selected[0]
    assert chosen["aggregation"] == result.configs[chosen["index"]]["aggregation"]
    assert result.meta["monitor"] == "valid key_score" and "key_score" in result.meta["selection"]


def test_multilabel_records_no_aggregation() -> None:
    data = synthetic_splits(sizes=(60, 30, 30))
    result = run_grid(data, small_recipe(), GridSpec([1e-2], [1], [0]), "multilabel", list("abcde"), GridOptions(progress=False, max_epochs=2, device="cpu"))
    assert "aggregation" not in result.configs[0] and "aggregation" not in result.selected[0]
    assert result.meta["device"] == "cpu"


def test_vectorised_adam_is_torch_adam() -> None:
    """The bank's Adam over stacked rows, one lr per probe, equals one torch.optim.Adam (single-tensor)
    per probe bit for bit, through learning-rate changes (ReduceLROnPlateau) and weight decay."""
    data = synthetic_splits(sizes=(40, 20, 20), n_states=3, dim=8)
    from marble_eval.probes.bank import ProbeBank, ProbeConfig

    splits = check_data(data, "multilabel")
    configs = [ProbeConfig(1e-3, 1, 0), ProbeConfig(3e-2, "weighted", 0), ProbeConfig(5e-4, 2, 1)]
    bank = ProbeBank(small_recipe(weight_decay=0.01), splits, "multilabel", configs)
    rows = {name: [t[row].clone() for row in range(3)] for name, t in bank.data.items()}
    params = [[torch.nn.Parameter(rows[name][row]) for name in bank.data] for row in range(3)]
    optimizers = [torch.optim.Adam(p, lr=bank.lr[row], weight_decay=0.01, foreach=False, fused=False)
                  for row, p in enumerate(params)]
    gen = torch.Generator().manual_seed(0)
    for step in range(6):
        if step == 3:  # a plateau halves one probe's learning rate
            bank.lr[1] /= 2
            optimizers[1].param_groups[0]["lr"] /= 2
        grads = {name: torch.randn(t.shape, generator=gen) for name, t in bank.data.items()}
        for name, leaf in bank._leaves.items():
            leaf.grad = grads[name].clone()
        bank._step_optimisers()
        for row, optimizer in enumerate(optimizers):
            for param, name in zip(params[row], bank.data):
                param.grad = grads[name][row].clone()
            optimizer.step()
    for row in range(3):
        for param, name in zip(params[row], bank.data):
            assert torch.equal(param.detach(), bank.data[name][row]), (row, name)


# -- the device ----------------------------------------------------------------------------------------


def test_default_device_is_cuda_when_there_is_one() -> None:
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert probe_device(None) == default_device() and probe_device("cpu") == torch.device("cpu")
    with pytest.raises(MarbleEvalError, match="not a device"):
        probe_device("gpu7")
    with pytest.raises(MarbleEvalError, match="the probe grid runs on cpu, cuda"):
        probe_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_cuda_without_cuda_is_one_line_before_training() -> None:
    data = synthetic_splits(sizes=(40, 20, 20))
    with pytest.raises(MarbleEvalError, match="CUDA is not available") as caught:
        run_grid(data, small_recipe(), GridSpec([1e-3], [1], [0]), "multilabel", list("abcde"), GridOptions(progress=False, device="cuda"))
    assert "\n" not in str(caught.value) and "--device cpu" in str(caught.value)


@needs_cuda
@pytest.mark.parametrize("task", ["multilabel", "multiclass", "regression", "key"])
def test_cuda_grid_agrees_with_the_cpu_grid(task: str) -> None:
    n_tags = 24 if task == "key" else 4
    data = synthetic_splits(sizes=(200, 60, 60), windows_per_item=2, n_states=4, dim=16, n_tags=n_tags, task=task, seed=5)
    names = [f"t{i}" for i in range(n_tags)]
    grid = GridSpec([1e-3, 1e-2], [2, "weighted"], [0, 1])
    # patience past max_epochs: every probe runs the same epochs, so only rounding can differ
    recipe = small_recipe(early_stopping=EarlyStopping(patience=50), lr_schedule=PlateauSchedule(patience=50))
    cpu = run_grid(data, recipe, grid, task, names, GridOptions(progress=False, max_epochs=5, device="cpu"))
    gpu = run_grid(data, recipe, grid, task, names, GridOptions(progress=False, max_epochs=5, device="cuda"))
    assert gpu.meta["device"].startswith("cuda")
    main = task_type(task).main_metric
    for a, b in zip(cpu.configs, gpu.configs):
        assert (a["lr"], a["layer"], a["seed"], a["epochs"]) == (b["lr"], b["layer"], b["seed"], b["epochs"])
        assert b["test"][main] == pytest.approx(a["test"][main], abs=CUDA_METRIC_TOL)
    assert gpu.test_probabilities[0].shape == cpu.test_probabilities[0].shape


def test_a_selected_probe_that_never_trained_is_named_in_one_line() -> None:
    data = synthetic_splits(sizes=(60, 30, 30), windows_per_item=2)
    recipe = small_recipe(early_stopping=EarlyStopping(patience=2))
    # lr 1e-12 moves no float32 weight: the validation score never improves after epoch 1
    stuck = run_grid(data, recipe, GridSpec([1e-12], [1], [0]), "multilabel", list("abcde"), GridOptions(progress=False, max_epochs=10))
    assert (stuck.configs[0]["best_epoch"], stuck.configs[0]["epochs"]) == (1, 3)
    assert len(stuck.meta["warnings"]) == 1 and "\n" not in stuck.meta["warnings"][0]
    assert "has not trained" in stuck.meta["warnings"][0] and "2 optimiser steps per epoch" in stuck.meta["warnings"][0]
    trained = run_grid(data, recipe, GridSpec([3e-2], [1], [0]), "multilabel", list("abcde"), GridOptions(progress=False, max_epochs=10))
    assert trained.configs[0]["best_epoch"] > 1 and trained.meta["warnings"] == []


def test_seeds_with_different_batch_sizes_train_one_head_each_and_equal_alone() -> None:
    """Item batches of items with 2 or 3 windows: each seed's batch has its own size, so the bank runs
    one head per seed (otherwise one stacked head over all seeds); both equal the one-probe trainer."""
    from reference_trainer import train_probe as alone_probe

    base = synthetic_splits(sizes=(120, 40, 40), windows_per_item=3, n_states=3, dim=8, seed=1)
    data = {}
    for name, split in base.items():
        keep = ~((split.item_of_window % 2 == 0) & (np.arange(len(split.item_of_window)) % 3 == 2))
        data[name] = SplitData(split.features[keep], split.item_of_window[keep], split.labels)
    recipe = small_recipe(batch_size=16, early_stopping=EarlyStopping(patience=2))
    result = run_grid(data, recipe, GridSpec([1e-3, 3e-2], [1, "weighted"], [0, 1]), "multilabel", list("abcde"), GridOptions(progress=False, max_epochs=6))
    for config in result.configs:
        alone = alone_probe(data, recipe, "multilabel", config["lr"], config["layer"], config["seed"], list("abcde"),
                            max_epochs=6)
        assert (config["epochs"], config["best_epoch"]) == (alone["epochs"], alone["best_epoch"])
        for split in ("valid", "test"):
            for key in ("roc_auc", "map", "micro_f1", "macro_f1"):
                assert config[split][key] == pytest.approx(alone[split][key], abs=TOL)
