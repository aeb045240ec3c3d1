"""The pipeline resolves each pair once, and refuses bad arguments before any audio is decoded."""

from __future__ import annotations

from pathlib import Path

import pytest

import marble_eval
import marble_eval.features.extract as extract_module
import marble_eval.run as run_module
from marble_eval.errors import MarbleEvalError
from marble_eval.features.cache import FeatureCache

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
