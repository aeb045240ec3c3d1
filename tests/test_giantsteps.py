"""gs-key: MARBLE v1's GiantSteps key split built from the two GiantSteps repositories, checked against
jukemir's clips json track for track; the loader on tiny previews laid out as MARBLE's data/GS."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from marble_eval.datasets.registry import load_dataset
from marble_eval.datasets.sources.giantsteps import artist_bucket_split, artist_names, artist_splits
from marble_eval.errors import MarbleEvalError
from marble_eval.metrics.keys import KEY_CLASSES
from tests.test_datasets_cli import cli, reference_root


def jukemir_tracks() -> dict[str, dict]:
    """{track id: {"split", "y", "clips", "duration"}} read straight from jukemir's clips json."""
    with gzip.open(reference_root() / "giantsteps/jukemir_giantsteps_clips.json.gz", "rt") as handle:
        clips = json.load(handle)
    tracks: dict[str, dict] = {}
    for clip in clips.values():
        entry = tracks.setdefault(str(int(clip["clip"]["audio_uid"])), {"split": clip["split"], "y": clip["y"],
                                                                         "clips": 0,
                                                                         "duration": clip["clip"]["audio_duration"]})
        entry["clips"] += 1
    return tracks


def test_the_built_split_equals_jukemirs_track_for_track() -> None:
    dataset = load_dataset("gs-key", reference_dir=reference_root())
    theirs = jukemir_tracks()
    ours = {item.id: (item.split, item.tags[0]) for item in dataset.items}
    assert len(ours) == len(dataset.items) == 1763
    assert ours == {track: (entry["split"], entry["y"]) for track, entry in theirs.items()}
    assert Counter(split for split, _ in ours.values()) == {"train": 923, "valid": 236, "test": 604}
    assert dataset.notes == [] and dataset.vocabulary == list(KEY_CLASSES) and dataset.task == "key"
    # each full 30-s clip of a track is one example: jukemir's clip counts are floor(duration / 30)
    clips = Counter()
    for track, entry in theirs.items():
        assert entry["clips"] == math.floor(entry["duration"] / 30)
        clips[entry["split"]] += entry["clips"]
    assert clips == {"train": 3687, "valid": 942, "test": 2406}
    assert dataset.window_seconds == 30 and dataset.drop_partial_windows
    assert dataset.marble_v1 is not None and dataset.marble_v1.layer_95m == 8
    assert dataset.marble_v1.published["MERT-v1-95M"] == {"key_score": 63.5}
    assert dataset.split("train")[0].path == "audio/5061.LOFI.mp3"  # MARBLE's data/GS layout


def test_artist_rule_buckets_case_insensitively_and_spreads_valid_over_two_hops() -> None:
    names = [f"artist {n}" for n in range(400)]
    valid = next(name for name in names if artist_bucket_split(name) == "valid")
    train = [name for name in names if artist_bucket_split(name) == "train"][:3]
    assert artist_bucket_split(valid.upper()) == "valid"
    assert artist_names(" A ,B,  C ") == ["A", "B", "C"]
    a, b, c = train
    # listed so that each pass moves the "valid" mark one collaborator further: two passes reach b, not c
    split = artist_splits([f"{b}, {c}", f"{a}, {b}", f"{valid}, {a}"])
    assert split == {valid: "valid", a: "valid", b: "valid", c: "train"}
    assert artist_splits([f"{a}, {b}"]) == {a: "train", b: "train"}


def test_describe_gives_marbles_sizes_and_key_counts(capsys) -> None:
    code, out, _ = cli(["data", "describe", "gs-key", "--json", "--reference-dir", str(reference_root())], capsys)
    summary = json.loads(out)
    assert code == 0 and summary["task"] == "key" and summary["tags"] == list(KEY_CLASSES)
    assert {split: summary["splits"][split]["n_items"] for split in ("train", "valid", "test")} == \
        {"train": 923, "valid": 236, "test": 604}
    expected = {split: Counter() for split in ("train", "valid", "test")}
    for entry in jukemir_tracks().values():
        expected[entry["split"]][entry["y"]] += 1
    for split, counts in expected.items():
        support = summary["splits"][split]["support"]
        assert {key: count for key, count in support.items() if count} == dict(counts)


@pytest.fixture
def gs_reference(tmp_path: Path) -> Path:
    """A writable copy of the GiantSteps reference files, key files included."""
    root = tmp_path / "reference"
    shutil.copytree(reference_root() / "giantsteps", root / "giantsteps")
    for path in (root / "giantsteps").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def test_a_key_file_that_disagrees_with_jukemir_is_refused(gs_reference: Path) -> None:
    key_dir = gs_reference / "giantsteps/giantsteps-key-dataset/annotations/key"
    (key_dir / "10089.LOFI.key").write_text("D minor")  # jukemir (and the repository) say D major
    with pytest.raises(MarbleEvalError, match=r"10089\.LOFI\.key: key 'D minor' differs from jukemir's 'D major'"):
        load_dataset("gs-key", reference_dir=gs_reference)
    (key_dir / "10089.LOFI.key").unlink()
    with pytest.raises(MarbleEvalError, match="missing: 10089"):
        load_dataset("gs-key", reference_dir=gs_reference)
    shutil.rmtree(key_dir)  # without the key files, jukemir's copies are used unchecked
    assert len(load_dataset("gs-key", reference_dir=gs_reference).split("test")) == 604


def test_loader_and_check_on_tiny_previews(tmp_path: Path, capsys) -> None:
    dataset = load_dataset("gs-key", reference_dir=reference_root(), limit=2)
    data_dir = tmp_path / "GS"
    (data_dir / "audio").mkdir(parents=True)
    present = [item for item in dataset.items if item.split != "valid"]
    tone = (0.1 * np.sin(np.linspace(0, 440 * 2 * np.pi, 8000))).astype(np.float32)
    for item in present:
        sf.write(data_dir / item.path, tone, 8000, format="MP3")
    code, out, _ = cli(["data", "check", "gs-key", "--data-dir", str(data_dir), "--limit", "2",
                        "--reference-dir", str(reference_root())], capsys)
    missing = [item for item in dataset.items if item.split == "valid"]
    assert code == 1
    for item in missing:
        assert f"missing: {data_dir / item.path} (file not found)" in out
    assert "gs-key: 4 of 6 items OK, 2 missing, 0 corrupt" in out
    assert "get the audio:" in out and "marble-eval data fetch gs-key --output DIR" in out
    loaded = load_dataset("gs-key", data_dir=data_dir, reference_dir=reference_root(), limit=2)
    assert loaded.audio_path(present[0]).is_file()
    loaded.check_ready()  # some audio is there; labels are keys
