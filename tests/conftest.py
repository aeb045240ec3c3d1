"""Shared fixtures: tiny checkpoints in the hub's MERT layout and a small synthetic dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from marble_eval.models.tiny import build_tiny_mert

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("MARBLE_EVAL_REFERENCE_DIR", REPO.parent / "shared" / "reference" / "datasets"))

# The integration tier (subprocess CLI runs, the wheel, e2e evals, DDP, the golden run, bench smoke, kill and
# crash-resume tests, tests over ~3 s): whole files, or tests by "file::function" (every parametrization).
# `pytest -m "not integration"` (make test-fast) is the quick loop; `make test` and CI run both.
# tests/test_structure.py checks that the names exist.
INTEGRATION_FILES = frozenset({
    "test_bench.py", "test_ddp_extract.py", "test_eval_e2e.py", "test_regression.py",
})
INTEGRATION_TESTS = frozenset({
    "test_api.py::test_the_readme_python_example_runs_as_written",
    "test_api.py::test_a_suite_runs_every_pair_and_a_rerun_does_nothing",
    "test_api.py::test_a_pair_with_missing_audio_is_reported_and_the_others_finish",
    "test_api.py::test_probe_refuses_features_whose_audio_changed",
    "test_determinism.py::test_a_resumed_extraction_gives_the_same_features_and_metrics",
    "test_determinism.py::test_cli_extract_killed_and_rerun_then_probe_gives_the_uninterrupted_metrics",
    "test_extract.py::test_cli_embed_and_extract",
    "test_extract.py::test_extract_writes_one_vector_per_window_and_hidden_state",
    "test_extract.py::test_fixture_generation_does_not_depend_on_the_hash_seed",
    "test_extract.py::test_rerun_skips_finished_items",
    "test_extract.py::test_resume_after_a_crash_gives_the_same_cache",
    "test_extract_scale.py::test_a_crash_midway_resumes_to_the_same_cache",
    "test_extract_scale.py::test_audio_failing_mid_stream_leaves_no_partial_item",
    "test_extract_scale.py::test_precision_setting_is_what_runs_and_what_the_key_records",
    "test_extract_scale.py::test_worker_count_does_not_change_the_cache",
    "test_faults.py::test_cli_reports_disk_full_in_one_line",
    "test_faults.py::test_corrupt_or_pickled_shard_is_a_one_line_error",
    "test_faults.py::test_disk_full_on_the_json_files_is_one_line_and_resumable",
    "test_faults.py::test_disk_full_while_writing_a_shard",
    "test_faults.py::test_kill_9_at_random_points_then_rerun_gives_the_uninterrupted_cache",
    "test_faults.py::test_two_extractions_at_once_give_one_runs_cache",
    "test_fuzz.py::test_arbitrary_text_as_benchmark_or_recipe_yaml",
    "test_generic_models.py::test_each_family_loads_from_model_type_and_embeds",
    "test_generic_models.py::test_normalisation_is_the_feature_extractors",
    "test_models_mert.py::test_hub_id_resolves_from_the_hf_cache_offline",
    "test_models_encoders.py::test_a_fixture_eval_runs_with_each_new_family",
    "test_models_encoders.py::test_qwen2_audio_hub_id_needs_only_the_towers_shard_offline",
    "test_models_encoders.py::test_a_muq_hub_id_loads_and_evaluates_offline_from_the_hf_cache",
    "test_probes.py::test_batched_grid_ends_where_each_probe_ends_alone",
    "test_security.py::test_auto_map_checkpoint_extracts_without_running_its_code",
})


@pytest.hookimpl(tryfirst=True)  # before -m deselects by markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the integration tier listed above."""
    for item in items:
        name = getattr(item, "originalname", item.name)
        if item.path.name in INTEGRATION_FILES or f"{item.path.name}::{name}" in INTEGRATION_TESTS:
            item.add_marker(pytest.mark.integration)


@pytest.fixture()
def one_torch_thread():
    """One torch thread for the test (tiny probes are dominated by thread hand-offs on 2 shared cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's ~/.cache/marble-eval from tests."""
    monkeypatch.setenv("MARBLE_EVAL_HOME", str(tmp_path_factory.getbasetemp() / "marble-home"))


@pytest.fixture(scope="session")
def tiny_mert_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same random weights saved as legacy .bin and as safetensors, plus a pre-LN (330M-style) model."""
    root = tmp_path_factory.mktemp("models")
    return {
        "bin": build_tiny_mert(root / "bin", weights="bin", seed=0),
        "safetensors": build_tiny_mert(root / "safetensors", weights="safetensors", seed=0),
        "pre_ln": build_tiny_mert(root / "pre_ln", weights="safetensors", seed=1, pre_layer_norm=True),
    }


@pytest.fixture(scope="session")
def small_fixture_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-clip version of the fixture dataset (fast to generate and extract)."""
    path = tmp_path_factory.mktemp("benchmarks") / "tiny-fixture.yaml"
    path.write_text(
        "name: tiny-fixture\nversion: '1'\ntask: multilabel\nsource: fixture\n"
        "vocabulary: {rule: fixed, tags: [tone-220, tone-880, tone-3520, noise-low, noise-high, pulse-2hz,"
        " pulse-8hz, chirp-up]}\n"
        "options: {n_train: 12, n_valid: 6, n_test: 6, seconds: 2.5, seed: 3}\n"
    )
    return path
