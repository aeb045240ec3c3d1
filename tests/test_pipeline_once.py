"""The pipeline resolves each pair once, and refuses bad arguments before any audio is decoded."""

from __future__ import annotations

from pathlib import Path

import pytest

import marble_eval
import marble_eval.features.extract as extract_module
import marble_eval.run as run_module
from marble_eval.errors import MarbleEvalError
from marble_eval.features.cache import FeatureCache
from tests.conftest import REFERENCE_DIR

pytestmark = pytest.mark.integration


def _count(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, counts: dict[str, int]) -> None:
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        counts[name] = counts.get(name, 0) + 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)


def test_protocol_audio_check_and_digest_happen_once_per_pair(tiny_mert_dirs, small_fixture_yaml, tmp_path,
                                                              monkeypatch):
    counts: dict[str, int] = {}
    _count(monkeypatch, run_module, "resolve_protocol", counts)
    _count(monkeypatch, extract_module, "todo_items", counts)
    _count(monkeypatch, FeatureCache, "audio_digest", counts)
    _count(monkeypatch, FeatureCache, "failures", counts)
    result = marble_eval.evaluate(str(tiny_mert_dirs["safetensors"]), str(small_fixture_yaml), seeds=1,
                                  grid="quick", max_epochs=2, data_dir=tmp_path / "audio",
                                  cache_dir=tmp_path / "cache", results_dir=tmp_path / "results")
    assert result.extraction.audio_digest is not None
    assert counts == {"resolve_protocol": 1, "todo_items": 1, "audio_digest": 1, "failures": 1}, counts


@pytest.mark.parametrize("options, message", [
    ({"seeds": 0}, "--seeds must be at least 1"),
    ({"layers": [99]}, "grid layer 99 is not a hidden state"),
    ({"lrs": [-1.0]}, "--lrs -1.0: every learning rate must be a positive number"),
    ({"recipe": "nope"}, "nope"),
    ({"threads": 0}, "--threads 0: must be 1 or more"),
    ({"max_epochs": 0}, "--max-epochs 0: must be 1 or more"),
])
def test_bad_probe_arguments_fail_before_any_audio_is_decoded(tiny_mert_dirs, small_fixture_yaml, tmp_path,
                                                              monkeypatch, options, message):
    def no_decoding(*args, **kwargs):
        raise AssertionError("audio was decoded before the argument was refused")

    monkeypatch.setattr(extract_module, "extract_dataset", no_decoding)
    with pytest.raises(MarbleEvalError, match=message) as error:
        marble_eval.evaluate(str(tiny_mert_dirs["safetensors"]), str(small_fixture_yaml), data_dir=tmp_path / "a",
                             cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", **options)
    assert "\n" not in str(error.value)
    assert not any(Path(tmp_path / "cache").rglob("*.npz"))  # no feature shard written


def test_seeds_zero_on_the_command_line_exits_2_before_extraction(tmp_path, capsys):
    from marble_eval.cli import main

    code = main(["eval", "--model", "fixture", "--dataset", "fixture", "--seeds", "0", "--cache-dir",
                 str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results")])
    assert code == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npz"))


def test_dir_of_the_package_names_the_api():
    assert set(dir(marble_eval)) == set(marble_eval.__all__)


def test_the_marble_suite_runs_what_the_data_config_has_and_reports_the_rest(tmp_path):
    import numpy as np
    import soundfile as sf

    from marble_eval.datasets.registry import MARBLE_TASKS
    from marble_eval.suites import evaluate_suite, suite_lines

    audio = tmp_path / "gtzan"
    dataset = marble_eval.load_dataset("gtzan", data_dir=audio, limit=2, reference_dir=REFERENCE_DIR)
    rng = np.random.default_rng(0)
    for item in dataset.items:  # the smoke run's items: two per split, synthetic audio in GTZAN's layout
        (audio / item.path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(audio / item.path, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    config = tmp_path / "data.yaml"
    config.write_text(f"gtzan: {{data_dir: {audio}}}\n")
    outcomes = evaluate_suite(["fixture"], "marble", data_config=config, dataset_options={"limit": 2, "reference_dir": REFERENCE_DIR}, seeds=1,
                              grid="quick", max_epochs=1, cache_dir=tmp_path / "cache",
                              results_dir=tmp_path / "results", probe_device="cpu")
    status = {outcome.dataset: outcome.status for outcome in outcomes}
    assert list(status) == list(MARBLE_TASKS)
    assert status["gtzan"] == "ran" and outcomes[0].result.summary["accuracy"].n == 1
    assert {status[name] for name in MARBLE_TASKS[1:]} == {"missing"}
    assert suite_lines(outcomes)[-1] == "suite: 12 pairs: 1 ran, 0 already done, 0 failed, 11 without data"


def test_probe_on_cuda_without_cuda_is_one_line_and_exit_2(tmp_path, capsys):
    import torch

    from marble_eval.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["probe", "--model", "fixture", "--dataset", "fixture", "--device", "cuda", "--seeds", "1",
                 "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--device cuda: CUDA is not available on this machine" in err
    assert not (tmp_path / "results").exists()


def test_grid_v1_and_the_marble_v1_preset_use_each_tasks_v1_settings(tmp_path):
    from marble_eval.run import plan_pair

    gtzan = marble_eval.load_dataset("gtzan", data_dir=tmp_path, reference_dir=REFERENCE_DIR)
    run = plan_pair("fixture", gtzan, need_audio=False, options={"grid": "v1", "protocol": "marble-v1"})
    small, large = run.grid(13), run.grid(25)  # MERT-v1-95M-sized, MERT-v1-330M-sized
    assert (small.lrs, small.layers, small.seeds) == ([5e-3], [7], [1234])
    assert (large.lrs, large.layers) == ([1e-3], [10])
    recipe = run.recipe  # v1's GTZAN epochs, LR patience and early-stopping patience
    assert (recipe.max_epochs, recipe.lr_schedule.patience, recipe.early_stopping.patience) == (100, 6, 20)
    default = plan_pair("fixture", gtzan, need_audio=False, options={})
    assert default.recipe.lr_schedule.patience == 3 and len(default.grid(13).lrs) == 6
    with pytest.raises(MarbleEvalError, match="--grid v1: tones is not a MARBLE v1 task"):
        tones = marble_eval.load_dataset("fixture")
        plan_pair("fixture", tones.__class__(**{**tones.__dict__, "name": "tones"}), need_audio=False,
                  options={"grid": "v1"}).grid(13)
    with pytest.raises(MarbleEvalError, match="use --dataset mtat-marble"):
        plan_pair("fixture", "mtat", need_audio=False, options={"protocol": "marble-v1",
                                                                "dataset_options": {"reference_dir": REFERENCE_DIR}})
