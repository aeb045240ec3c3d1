"""mtg-top50 / genre / instrument / moodtheme: MARBLE v1's reading of the MTG-Jamendo split-0 TSVs."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from marble_eval.datasets.registry import load_dataset
from marble_eval.datasets.sources.mtg_jamendo import first_appearance, low_quality_path, read_tracks
from marble_eval.errors import MarbleEvalError
from tests.test_datasets_cli import cli, reference_root

SUBSETS = {"mtg-top50": ("top50tags", 50, (32136, 10888, 11356)),
           "mtg-genre": ("genre", 87, (32572, 11043, 11479)),
           "mtg-instrument": ("instrument", 40, (14395, 5466, 5115)),
           "mtg-moodtheme": ("moodtheme", 56, (9949, 3802, 4231))}
SPLIT_FILES = {"train": "train", "valid": "validation", "test": "test"}
HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"


@pytest.mark.parametrize("name", sorted(SUBSETS))
def test_describe_gives_marbles_sizes_classes_and_class_order(name: str, capsys) -> None:
    subset, n_tags, sizes = SUBSETS[name]
    code, out, _ = cli(["data", "describe", name, "--json", "--reference-dir", str(reference_root())], capsys)
    summary = json.loads(out)
    assert code == 0 and summary["task"] == "multilabel" and summary["notes"] == []
    assert tuple(summary["splits"][split]["n_items"] for split in ("train", "valid", "test")) == sizes
    # v1's class2id, read here as v1 reads it: lines[1:], split('\t')[5:], stripped, first appearance
    order: list[str] = []
    train = Counter()
    for split, file in SPLIT_FILES.items():
        lines = (reference_root() / f"mtg-jamendo/autotagging_{subset}-{file}.tsv").read_text().splitlines()[1:]
        for line in lines:
            tags = [tag.strip() for tag in line.split("\t")[5:]]
            order += [tag for tag in tags if tag not in order]
            if split == "train":
                train.update(set(tags))
    assert summary["tags"] == order and len(order) == n_tags
    assert summary["splits"]["train"]["support"] == dict(train)
    if name == "mtg-top50":
        assert set(order) == set((reference_root() / "mtg-jamendo/top50.txt").read_text().split())


def test_low_quality_paths_and_first_appearance() -> None:
    assert low_quality_path("41/241.mp3") == "41/241.low.mp3"
    assert first_appearance([("b", "a"), ("c", "a"), ("b",)]) == ["b", "a", "c"]


def mini_reference(tmp_path: Path, rows: dict[str, list[str]]) -> tuple[Path, Path]:
    """(reference dir, YAML) of mtg-top50 with a few rows per split (the YAML's sha256s rewritten)."""
    root = tmp_path / "reference"
    (root / "mtg-jamendo").mkdir(parents=True)
    yaml = (Path(__file__).resolve().parents[1] / "benchmarks/mtg-top50.yaml").read_text()
    for split, file in SPLIT_FILES.items():
        name = f"autotagging_top50tags-{file}.tsv"
        real = hashlib.sha256((reference_root() / "mtg-jamendo" / name).read_bytes()).hexdigest()
        data = (HEADER + "".join(row + "\n" for row in rows[split])).encode()
        (root / "mtg-jamendo" / name).write_bytes(data)
        yaml = yaml.replace(real, hashlib.sha256(data).hexdigest())
    (tmp_path / "mini.yaml").write_text(yaml)
    return root, tmp_path / "mini.yaml"


ROWS = {"train": ["track_0000241\tartist_000005\talbum_000033\t41/241.mp3\t340.1\tgenre---rock\tinstrument---guitar",
                  "track_0000242\tartist_000005\talbum_000033\t42/242.mp3\t248.5\tmood/theme---sad\tgenre---rock"],
        "valid": ["track_0001007\tartist_000010\talbum_000100\t07/1007.mp3\t200.0\tgenre---pop\t"],
        "test": ["track_0003400\tartist_000020\talbum_000200\t00/3400.mp3\t61.5\tinstrument---guitar\tgenre---jazz"]}


def test_loader_and_check_on_tiny_audio_low_folders(tmp_path: Path, capsys) -> None:
    reference, yaml = mini_reference(tmp_path, ROWS)
    data_dir = tmp_path / "audio-low"
    tone = (0.1 * np.sin(np.linspace(0, 440 * 2 * np.pi, 8000))).astype(np.float32)
    for path in ("41/241.low.mp3", "07/1007.low.mp3", "00/3400.low.mp3"):
        (data_dir / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(data_dir / path, tone, 8000, format="MP3")
    dataset = load_dataset(str(yaml), data_dir=data_dir, reference_dir=reference)
    assert [(item.id, item.split, item.path, item.tags) for item in dataset.items] == [
        ("track_0000241", "train", "41/241.low.mp3", ("genre---rock", "instrument---guitar")),
        ("track_0000242", "train", "42/242.low.mp3", ("mood/theme---sad", "genre---rock")),
        ("track_0001007", "valid", "07/1007.low.mp3", ("genre---pop",)),  # the empty trailing field is no tag
        ("track_0003400", "test", "00/3400.low.mp3", ("instrument---guitar", "genre---jazz"))]
    assert dataset.vocabulary == ["genre---rock", "instrument---guitar", "mood/theme---sad", "genre---pop",
                                  "genre---jazz"]
    assert dataset.window_seconds == 30 and not dataset.drop_partial_windows
    assert dataset.label_matrix(dataset.split("train")).tolist() == [[1, 1, 0, 0, 0], [1, 0, 1, 0, 0]]
    code, out, _ = cli(["data", "check", str(yaml), "--data-dir", str(data_dir), "--reference-dir", str(reference)],
                       capsys)
    assert code == 1 and f"missing: {data_dir / '42/242.low.mp3'} (file not found)" in out
    assert "3 of 4 items OK, 1 missing, 0 corrupt" in out
    assert "get the audio: MTG-Jamendo raw_30s audio-low" in out


@pytest.mark.parametrize(("row", "message"), [
    ("track_1\tartist_1\talbum_1\t01/1.mp3\t10.0", "line 2: expected 5 columns then at least one tag"),
    ("track_1\tartist_1\talbum_1\t01/1.mp3\tlong\tgenre---pop", "line 2: DURATION 'long' is not a number"),
])
def test_bad_rows_are_named_by_line(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(HEADER + row + "\n")
    with pytest.raises(MarbleEvalError, match=message):
        read_tracks(path)


def test_a_track_in_two_splits_is_refused(tmp_path: Path) -> None:
    rows = {**ROWS, "test": [ROWS["train"][0]]}
    reference, yaml = mini_reference(tmp_path, rows)
    with pytest.raises(MarbleEvalError, match="track track_0000241 is already in the train split"):
        load_dataset(str(yaml), reference_dir=reference)
