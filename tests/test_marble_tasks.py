"""MARBLE v1's clip-level tasks built here: gtzan, emo, nsynth-instrument/pitch, vocalset-singer/technique.

Split files come from the shared reference dir (as CI does); audio is tiny files the tests write in each
real dataset's folder layout.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from marble_eval.cli import data as data_cli
from marble_eval.datasets.registry import MARBLE_TASKS, known_datasets, load_dataset, load_spec
from marble_eval.datasets.sources.vocalset import SPLIT_NOTE, VocalSetOptions, split_of
from marble_eval.datasets.summary import describe
from marble_eval.errors import MarbleEvalError
from marble_eval.tasks import expand_metrics, task_type
from tests.cli_helpers import run_subcommands
from tests.conftest import REFERENCE_DIR

MINE = ("gtzan", "emo", "nsynth-instrument", "nsynth-pitch", "vocalset-singer", "vocalset-technique", "mtat-marble")
TONE = (0.1 * np.sin(np.linspace(0, 400, 1600))).astype(np.float32)


@pytest.fixture(autouse=True)
def _reference_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARBLE_EVAL_REFERENCE_DIR", str(REFERENCE_DIR))


def cli_json(argv: list[str], capsys) -> dict:
    code, out, err = run_subcommands(argv, capsys, data_cli)
    assert code == 0, err
    return json.loads(out)


def write_audio(folder: Path, paths: list[str], fmt: str | None = None) -> None:
    for path in paths:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / path, TONE, 16000, format=fmt)


def test_every_marble_task_has_a_yaml_with_v1_settings_for_its_own_metrics() -> None:
    assert len(MARBLE_TASKS) == 12 and set(MARBLE_TASKS) <= set(known_datasets())
    assert set(MINE) <= set(MARBLE_TASKS)
    for name in MARBLE_TASKS:
        spec = load_spec(name)
        assert spec.marble_v1 is not None and set(spec.marble_v1.published) == {"MERT-v1-95M", "MERT-v1-330M"}, name
        reported = set(expand_metrics(task_type(spec.task).metrics, spec.targets or []))
        for model, metrics in spec.marble_v1.published.items():
            assert metrics and set(metrics) <= reported, (name, model, metrics)
        assert spec.marble_v1.window_seconds == spec.audio.window_seconds, name
        assert spec.marble_v1.max_seconds == spec.audio.max_seconds, name


def test_gtzan_describe_gives_marbles_sizes_and_class_counts_from_the_reference_lists(capsys) -> None:
    summary = cli_json(["data", "describe", "gtzan", "--json"], capsys)
    assert summary["task"] == "multiclass" and len(summary["tags"]) == 10
    assert [summary["splits"][s]["n_items"] for s in ("train", "valid", "test")] == [442, 197, 290]
    for split in ("train", "valid", "test"):
        listed = (REFERENCE_DIR / "gtzan" / f"{split}_filtered.txt").read_text().split()
        expected = Counter(path.split("/")[0] for path in listed if path != "jazz/jazz.00054.wav" or split != "train")
        assert summary["splits"][split]["support"] == {genre: expected[genre] for genre in summary["tags"]}
    assert summary["splits"]["train"]["support"]["jazz"] == Counter(
        p.split("/")[0] for p in (REFERENCE_DIR / "gtzan/train_filtered.txt").read_text().split())["jazz"] - 1
    assert any("jazz/jazz.00054.wav" in note for note in summary["notes"])
    assert not any("differ from the published" in note for note in summary["notes"])


def test_gtzan_loads_the_kaggle_layout_and_is_ready(tmp_path: Path) -> None:
    dataset = load_dataset("gtzan", data_dir=tmp_path, limit=2)
    assert all(item.path == f"genres_original/{item.id}" and item.tags == (item.id.split("/")[0],)
               for item in dataset.items)
    with pytest.raises(MarbleEvalError, match="none of gtzan's 6 audio files is there"):
        dataset.check_ready()
    write_audio(tmp_path, [item.path for item in dataset.items])
    matrix = dataset.label_matrix(dataset.items)
    assert (matrix.sum(axis=1) == 1).all()
    assert dataset.marble_v1.layer_95m == 7 and dataset.marble_v1.lr_95m == 5e-3
    full = load_dataset("gtzan", data_dir=tmp_path)
    full.check_ready()  # every genre has train items
    assert "jazz/jazz.00054.wav" not in {item.id for item in full.split("train")}


def test_emo_describe_gives_marbles_sizes_and_targets_and_zscores_to_jukemirs_y(capsys) -> None:
    summary = cli_json(["data", "describe", "emo", "--json"], capsys)
    assert summary["task"] == "regression" and summary["tags"] == ["arousal", "valence"]
    assert [summary["splits"][s]["n_items"] for s in ("train", "valid", "test")] == [504, 115, 125]
    assert summary["splits"]["test"]["support"] == {"arousal": 125, "valence": 125}
    assert summary["target_stats"]["source"] == "train + valid splits"
    assert summary["window_seconds"] == 5 and summary["max_seconds"] == 30
    dataset = load_dataset("emo")
    mean, std = dataset.target_stats()
    with gzip.open(REFERENCE_DIR / "emomusic/jukemir_emomusic.json.gz", "rt") as f:
        songs = json.load(f)
    assert len(songs) == len(dataset.items) == 744
    for item in dataset.items:
        assert songs[item.id]["split"] == item.split
        assert ((np.asarray(item.targets) - mean) / std).tolist() == pytest.approx(songs[item.id]["y"], abs=1e-12)
    assert sum(item.split in ("train", "valid") for item in dataset.items) == 619


def test_emo_loads_clips_45seconds_and_is_ready(tmp_path: Path) -> None:
    dataset = load_dataset("emo", data_dir=tmp_path, limit=1)
    assert [item.path for item in dataset.items] == [f"clips_45seconds/{int(item.id)}.mp3" for item in dataset.items]
    write_audio(tmp_path, [item.path for item in dataset.items], fmt="MP3")
    dataset.check_ready()
    assert dataset.label_matrix(dataset.items).shape == (3, 2)
    assert describe(dataset)["missing_audio"] == 0


def nsynth_tree(root: Path, notes: dict[str, list[tuple[str, str, int]]]) -> None:
    """NSynth's unpacked layout: nsynth-<split>/examples.json + audio/<note>.wav."""
    for split, rows in notes.items():
        examples = {note: {"note_str": note, "instrument_family_str": family, "pitch": pitch, "velocity": 100}
                    for note, family, pitch in rows}
        folder = root / f"nsynth-{split}"
        (folder / "audio").mkdir(parents=True)
        (folder / "examples.json").write_text(json.dumps(examples))
        write_audio(folder, [f"audio/{note}.wav" for note in examples])


NOTES = {"train": [("bass_synthetic_033-060-100", "bass", 60), ("guitar_acoustic_010-021-127", "guitar", 21),
                   ("vocal_synthetic_003-108-050", "vocal", 108), ("bass_synthetic_033-021-100", "bass", 21)],
         "valid": [("guitar_acoustic_010-060-127", "guitar", 60)],
         "test": [("vocal_synthetic_003-021-050", "vocal", 21), ("bass_synthetic_034-108-025", "bass", 108)]}


def test_nsynth_labels_come_from_each_splits_examples_json(tmp_path: Path) -> None:
    nsynth_tree(tmp_path, NOTES)
    instrument = load_dataset("nsynth-instrument", data_dir=tmp_path)
    assert len(instrument.vocabulary) == 11 and instrument.vocabulary[9] == "synth_lead"
    assert {(i.split, i.id, i.tags[0]) for i in instrument.items} == {
        (split, note, family) for split, rows in NOTES.items() for note, family, _ in rows}
    assert all(i.path == f"nsynth-{i.split}/audio/{i.id}.wav" for i in instrument.items)
    instrument.check_ready()  # families without any note are unused outputs, not a refusal
    pitch = load_dataset("nsynth-pitch", data_dir=tmp_path)
    assert pitch.vocabulary == [str(p) for p in range(128)]
    rows = pitch.label_matrix(pitch.split("train"))
    assert rows.shape == (4, 128) and sorted(rows.argmax(axis=1).tolist()) == [21, 21, 60, 108]  # class = MIDI pitch
    pitch.check_ready()
    assert any(note.startswith("split sizes 4 / 1 / 2 differ from the published 289,205 / 12,678 / 4,096")
               for note in pitch.notes)


def test_nsynth_refuses_an_unlearnable_pitch_and_says_where_the_data_is(tmp_path: Path) -> None:
    with pytest.raises(MarbleEvalError, match=r"nsynth-pitch: the notes and their labels come from each split's "
                                              r"examples.json \(no --data-dir given\); get the NSynth tarballs"):
        load_dataset("nsynth-pitch")
    unlabelled = load_dataset("nsynth-pitch", allow_unlabelled=True)
    with pytest.raises(MarbleEvalError, match="the notes and their labels come from"):
        unlabelled.check_ready(need_audio=False)  # not "the train split is empty"
    nsynth_tree(tmp_path, {**NOTES, "test": [("flute_acoustic_002-077-100", "flute", 77)]})
    dataset = load_dataset("nsynth-pitch", data_dir=tmp_path)
    with pytest.raises(MarbleEvalError, match=r"1 of the 128 classes have no train item.*: 77;"):
        dataset.check_ready()
    (tmp_path / "nsynth-test/examples.json").write_text(json.dumps({"x": {"pitch": 130}}))
    with pytest.raises(MarbleEvalError, match=r"examples.json: note 'x': pitch 130 is not a MIDI pitch 0-127"):
        load_dataset("nsynth-pitch", data_dir=tmp_path)


SINGERS = [f"f{i}" for i in range(1, 10)] + [f"m{i}" for i in range(1, 12)]


def vocalset_tree(root: Path, per_singer: int = 2) -> list[str]:
    """VocalSet's FULL/<singer>/<context>/<technique>/<file>.wav, a few files per singer and technique."""
    paths = []
    for singer in SINGERS:
        for technique in ("belt", "vibrato", "fast_forte", "straight"):
            for n in range(per_singer):
                paths.append(f"FULL/{singer}/scales/{technique}/{singer}_scales_{technique}_{n}.wav")
    paths += ["FULL/f2/scales/vibrato/f2_scales_vibrato_a(1).wav",  # MARBLE's deleted duplicate
              "FULL/m8/excerpts/vibrato/row_vibrato.wav",           # and a file it deletes as unlisted
              "FULL/f1/scales/belt/deeper/f1_extra.wav",             # not at MARBLE's depth
              "FULL/f1/notes.wav"]
    write_audio(root, paths)
    return paths


def test_vocalset_technique_follows_marbles_rules_on_marble_evals_split(tmp_path: Path) -> None:
    vocalset_tree(tmp_path)
    dataset = load_dataset("vocalset-technique", data_dir=tmp_path)
    assert dataset.split_origin == "marble-eval" and SPLIT_NOTE in dataset.notes
    assert dataset.score_per == "window" and dataset.window_seconds == 3 and dataset.drop_partial_windows
    assert {item.tags[0] for item in dataset.items} == {"belt", "vibrato", "straight"}  # fast_forte is not a class
    assert len(dataset.items) == 20 * 3 * 2
    names = {item.path.rsplit("/", 1)[1] for item in dataset.items}
    assert not names & {"f2_scales_vibrato_a(1).wav", "row_vibrato.wav", "f1_extra.wav", "notes.wav"}
    singers = {split: {item.id.split("/")[1] for item in dataset.split(split)} for split in ("train", "valid", "test")}
    assert singers["test"] == {"f2", "f8", "m3", "m5", "m10"} and not singers["test"] & (singers["train"] | singers["valid"])
    assert dataset.split("train") and dataset.split("valid")
    dataset.check_ready()


def test_vocalset_singer_split_is_by_recording_and_stable_when_files_go_missing(tmp_path: Path) -> None:
    paths = vocalset_tree(tmp_path, per_singer=3)
    dataset = load_dataset("vocalset-singer", data_dir=tmp_path)
    assert {item.tags[0] for item in dataset.items} == set(SINGERS) and dataset.vocabulary == SINGERS
    assert len(dataset.items) == 20 * 4 * 3  # fast_forte counts for singer
    opts = VocalSetOptions(label="singer", techniques=["belt"], test_fraction=0.2, valid_fraction=0.4)
    assert all(item.split == split_of(item.id, item.id.split("/")[1], opts) for item in dataset.items)
    shares = Counter(item.split for item in dataset.items)
    assert 0.1 < shares["test"] / len(dataset.items) < 0.3 and shares["valid"] > 0 and shares["train"] > 0
    (tmp_path / paths[0]).unlink()
    fewer = load_dataset("vocalset-singer", data_dir=tmp_path)
    assert {item.id: item.split for item in fewer.items} == {
        item.id: item.split for item in dataset.items if item.id != paths[0]}
    per_recording = dataset.with_score_per("item")
    assert per_recording.score_per == "item" and per_recording.identity() != dataset.identity()
    assert any(note.startswith("scored per item, where vocalset-singer is scored per window") for note in per_recording.notes)
    assert describe(per_recording)["split_origin"] == "marble-eval"
    with pytest.raises(MarbleEvalError, match="score per 'chunk'"):
        dataset.with_score_per("chunk")


def test_vocalset_without_its_files_says_where_to_get_them() -> None:
    with pytest.raises(MarbleEvalError, match=r"vocalset-singer: the items and their labels are the files of your "
                                              r"VocalSet copy \(no --data-dir given\); get VocalSet 1.2 from Zenodo"):
        load_dataset("vocalset-singer")


def test_the_datasets_listing_marks_marble_evals_splits(capsys) -> None:
    from marble_eval.cli.datasets import dataset_rows, run

    rows = {row["name"]: row for row in dataset_rows()}
    assert rows["vocalset-singer"]["split_origin"] == "marble-eval" and rows["gtzan"]["split_origin"] is None
    assert rows["emo"]["labels"] == "targets arousal, valence" and rows["nsynth-pitch"]["labels"] == (
        "classes fixed by the source")
    assert run(argparse.Namespace(json=False)) == 0
    out = capsys.readouterr().out
    assert "vocalset-singer ‡" in out and "gtzan ‡" not in out and out.rstrip().endswith("never published)")


@pytest.mark.parametrize("name", ["nsynth-pitch", "vocalset-technique"])
def test_data_check_on_a_folder_without_the_dataset_says_what_is_missing(name: str, tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser(prog="marble-eval")
    data_cli.register(parser.add_subparsers())
    args = parser.parse_args(["data", "check", name, "--data-dir", str(tmp_path)])
    with pytest.raises(MarbleEvalError, match=rf"^{name}: the (notes|items) and their labels .*\(\S+ (does not exist|is not a folder)\)"):
        args.run(args)
    assert "0 of 0 items OK" not in capsys.readouterr().out
