"""The Python API: the README's example runs as written; suites run every pair and report each."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import marble_eval
from marble_eval.errors import MarbleEvalError

REPO = Path(__file__).resolve().parents[1]


def readme_python_example() -> str:
    """The one ```python block of the README's "Python API" section."""
    section = REPO.joinpath("README.md").read_text(encoding="utf-8").split("## Python API", 1)[1]
    (block,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    return block


def test_import_is_light_and_names_the_api():
    assert {"evaluate", "extract", "probe", "evaluate_suite", "load_model", "load_dataset",
            "ProbeResult"} <= set(marble_eval.__all__)
    with pytest.raises(AttributeError):
        marble_eval.no_such_function  # noqa: B018


def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python_example(), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert re.fullmatch(r"ROC-AUC 0\.\d{3} on 60 test clips\n", printed), printed
    (written,) = (tmp_path / "results").rglob("*.json")
    result = marble_eval.ProbeResult.from_disk(written)
    assert isinstance(result, marble_eval.ProbeResult) and result.summary["roc_auc"].n == 1
    assert result.protocol.precision == "fp32" and result.protocol.preset == "culturemert"


def _manifest_dataset(folder: Path) -> Path:
    """A 12-clip manifest dataset of real tones (two tags), its audio under folder/audio."""
    audio = folder / "audio"
    audio.mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for index in range(12):
        split = ("train", "train", "valid", "valid", "test", "test")[index % 6]
        high = index % 2 == 0
        time = np.arange(16000 * 2) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (880 if high else 220) * time) + 0.01 * rng.standard_normal(len(time))
        sf.write(audio / f"clip{index}.wav", wave.astype(np.float32), 16000)
        rows.append(f"clip{index}.wav,{split},{'high' if high else 'low'}")
    (folder / "tones.csv").write_text("path,split,labels\n" + "\n".join(rows) + "\n")
    (folder / "tones.yaml").write_text("name: tones\nversion: '1'\ntask: multilabel\nsource: manifest\n"
                                       "options: {manifest: tones.csv}\nvocabulary: {rule: top_n, n: 2}\n")
    return folder / "tones.yaml"


@pytest.fixture()
def two_datasets(tmp_path, tmp_path_factory, small_fixture_yaml):
    tones = _manifest_dataset(tmp_path / "tones")
    config = tmp_path / "data.yaml"
    config.write_text(f"{small_fixture_yaml}: {{data_dir: {tmp_path_factory.getbasetemp() / 'tiny-fixture-audio'}}}\n"
                      f"{tones}: {{data_dir: {tones.parent / 'audio'}}}\n")
    return [str(small_fixture_yaml), str(tones)], config


def test_a_suite_runs_every_pair_and_a_rerun_does_nothing(two_datasets, tiny_mert_dirs, tmp_path):
    datasets, config = two_datasets
    models = [str(tiny_mert_dirs["safetensors"]), str(tiny_mert_dirs["pre_ln"])]
    options = {"seeds": 1, "grid": "quick", "max_epochs": 3, "results_dir": tmp_path / "results",
               "cache_dir": tmp_path / "cache"}
    first = marble_eval.evaluate_suite(models, datasets, data_config=config, **options)
    assert not [o.detail for o in first if o.status == "failed"]
    assert [(o.model, Path(o.dataset).stem, o.status) for o in first] == [
        (models[0], "tiny-fixture", "ran"), (models[1], "tiny-fixture", "ran"),
        (models[0], "tones", "ran"), (models[1], "tones", "ran")]
    assert len(list((tmp_path / "results").rglob("*.json"))) == 4
    again = marble_eval.evaluate_suite(models, datasets, data_config=config, **options)
    assert [o.status for o in again] == ["done"] * 4
    assert [o.result.created for o in again] == [o.result.created for o in first]


def test_a_pair_with_missing_audio_is_reported_and_the_others_finish(two_datasets, tiny_mert_dirs, tmp_path):
    datasets, config = two_datasets
    tones_audio = Path(datasets[1]).parent / "audio"
    for wav in tones_audio.glob("*.wav"):
        wav.unlink()
    outcomes = marble_eval.evaluate_suite([str(tiny_mert_dirs["safetensors"])], datasets, data_config=config,
                                          seeds=1, grid="quick", max_epochs=3, results_dir=tmp_path / "results",
                                          cache_dir=tmp_path / "cache")
    assert [o.status for o in outcomes] == ["ran", "failed"]
    assert "audio" in outcomes[1].detail and "\n" not in outcomes[1].detail


def test_data_dir_with_several_datasets_is_refused(tiny_mert_dirs, tmp_path):
    with pytest.raises(MarbleEvalError, match="--data-config"):
        marble_eval.evaluate_suite(["fixture"], "fixture,mtat", data_dir=tmp_path)


def test_probe_refuses_features_whose_audio_changed(tiny_mert_dirs, small_fixture_yaml, tmp_path):
    audio = tmp_path / "audio"  # the fixture source generates its audio here
    common = {"data_dir": audio, "cache_dir": tmp_path / "cache"}
    model = str(tiny_mert_dirs["safetensors"])
    marble_eval.extract(model, str(small_fixture_yaml), **common)
    victim = sorted(path for path in audio.rglob("*") if path.suffix == ".wav")[0]
    wave, rate = sf.read(victim)
    sf.write(victim, np.flip(wave, axis=0), rate)  # same length, other audio
    with pytest.raises(MarbleEvalError, match=r"the audio of 1 cached item\(s\) changed") as error:
        marble_eval.probe(model, str(small_fixture_yaml), seeds=1, grid="quick", max_epochs=2,
                          results_dir=tmp_path / "results", **common)
    assert "\n" not in str(error.value)
    summary = marble_eval.extract(model, str(small_fixture_yaml), **common)
    assert summary.extracted == 1 and summary.changed_audio == 1
    result = marble_eval.probe(model, str(small_fixture_yaml), seeds=1, grid="quick", max_epochs=2,
                               results_dir=tmp_path / "results", **common)
    assert result.extraction.audio_digest is not None
