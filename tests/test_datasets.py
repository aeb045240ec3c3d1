"""The six benchmark datasets loaded from the real reference files (../shared/reference/datasets)."""

from __future__ import annotations

import csv
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from marble_eval.datasets.base import SPLITS
from marble_eval.datasets.readers import read_rows
from marble_eval.datasets.registry import load_dataset, load_spec
from marble_eval.datasets.sources.lyra import valid_indices
from marble_eval.errors import MarbleEvalError

# Published vocabularies (pxaris/LC-Protonets labels/lyra.json and labels/fma.json, "train" lists):
# independent of this code, they are what the top-N rule must reproduce.
LYRA_TOP30 = [
    "instruments--Voice", "genres--Traditional", "instruments--Violin", "instruments--Percussion",
    "instruments--Laouto", "instruments--Guitar", "instruments--Klarino", "genres--Nisiotiko", "place--None",
    "instruments--Bass", "instruments--Accordion", "instruments--Santouri", "genres--Aegean", "place--Aegean-sea",
    "genres--Epirotic", "place--Epirus", "instruments--Bouzouki", "genres--Mikrasiatiko", "place--Asia-minor",
    "genres--Rebetiko", "genres--Laiko", "instruments--Piano", "instruments--Lyra", "instruments--Oud",
    "genres--Macedonian", "place--Macedonia", "genres--Peloponnesian", "place--Peloponnese",
    "instruments--Mandolin", "instruments--Kanonaki",
]
FMA_TOP20 = [
    "Rock", "Electronic", "Punk", "Experimental", "Hip-Hop", "Folk", "Garage", "Instrumental", "Indie-Rock", "Pop",
    "Chip Music", "Ambient Electronic", "International", "IDM", "Techno", "Downtempo", "Soundtrack", "Chiptune",
    "House", "Hardcore",
]
# PROTOCOL.md section 5
PROTOCOL_SIZES = {
    "makam": (3709, 529, 1059), "hindustani": (844, 120, 240), "carnatic": (1829, 261, 522),
    "lyra": (1116, 124, 330), "fma": (17486, 2498, 4996), "mtat": (15244, 1529, 4332),
    "mtat-marble": (18706, 1825, 5329),
}


def reference_root() -> Path:
    env = os.environ.get("MARBLE_EVAL_REFERENCE_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared/reference/datasets"
    if not (path / "SHA256SUMS").is_file():
        pytest.skip(f"reference files not found at {path}; set MARBLE_EVAL_REFERENCE_DIR to shared/reference/datasets")
    return path


@pytest.fixture(scope="module")
def ref() -> Path:
    return reference_root()


@pytest.fixture(scope="module")
def mtat_data(ref: Path, tmp_path_factory) -> Path:
    """A data dir with a synthetic annotations_final.csv: the real 25,863 clip ids and paths in order
    (from index_mtt.tsv), the real top-50 tag names plus two rare ones, random 0/1 tags."""
    directory = tmp_path_factory.mktemp("mtat")
    index = [line.rstrip("\n").split("\t") for line in open(ref / "magnatagatune/index_mtt.tsv", encoding="utf-8")]
    tags = [str(tag) for tag in np.load(ref / "magnatagatune/tags.npy")] + ["zz-rare", "aa-rare"]
    rng = np.random.RandomState(0)
    probability = np.linspace(0.12, 0.01, len(tags))
    matrix = (rng.random_sample((len(index), len(tags))) < probability).astype(int)
    with open(directory / "annotations_final.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_ALL)  # the distribution quotes every field
        writer.writerow(["clip_id", *tags, "mp3_path"])
        for (clip_id, path), row in zip(index, matrix):
            writer.writerow([clip_id, *row, path])
    np.save(directory / "matrix.npy", matrix)
    (directory / "tags.txt").write_text("\n".join(tags))
    return directory


def sizes(dataset) -> tuple[int, int, int]:
    counts = Counter(item.split for item in dataset.items)
    return tuple(counts[split] for split in SPLITS)


@pytest.mark.parametrize("name", ["makam", "hindustani", "carnatic", "lyra", "fma", "mtat", "mtat-marble"])
def test_split_sizes_equal_protocol_and_yaml(name: str, ref: Path) -> None:
    dataset = load_dataset(name, reference_dir=ref, allow_unlabelled=True)
    assert sizes(dataset) == PROTOCOL_SIZES[name]
    spec = load_spec(name)
    assert tuple(spec.sizes[split] for split in SPLITS) == PROTOCOL_SIZES[name]
    assert not any("split sizes" in note for note in dataset.notes)
    ids = [item.id for item in dataset.items]
    assert len(set(ids)) == len(ids), "an item appears twice (or in two splits)"


def test_lyra_top30_and_valid_rule(ref: Path) -> None:
    dataset = load_dataset("lyra", reference_dir=ref)
    assert dataset.vocabulary == LYRA_TOP30
    assert dataset.missing_labels is None and dataset.notes == []
    assert dataset.max_seconds is None and dataset.window_seconds == 30
    # valid = first 10% of ccml's shuffle of training.tsv rows (numpy global seed 10)
    training = [row["id"] for _, row in read_rows(ref / "lyra/training.tsv", "\t")]
    state = np.random.get_state()
    try:
        order = list(range(len(training)))
        np.random.seed(10)
        np.random.shuffle(order)  # exactly ccml's torch_train_val_split
    finally:
        np.random.set_state(state)
    assert valid_indices(len(training), 0.1, 10) == order[:124]
    assert [item.id for item in dataset.split("valid")] == [training[i] for i in sorted(order[:124])]
    first = next(item for item in dataset.items if item.id == "ach-ellada")
    assert set(first.tags) == {"instruments--Voice", "instruments--Piano", "instruments--Guitar", "instruments--Bouzouki",
                               "instruments--Bass", "instruments--Accordion", "genres--Laiko", "place--None"}
    assert first.path == "ach-ellada.mp3"


def test_fma_top20_parents_and_all_zero_rows(ref: Path) -> None:
    dataset = load_dataset("fma", reference_dir=ref)
    assert dataset.vocabulary == FMA_TOP20
    train = dataset.split("train")
    labels = dataset.label_matrix(train)
    empty = int((labels.sum(axis=1) == 0).sum())
    assert 0 < empty < len(train), "items without a top-20 genre must stay, as all-zero rows"
    punk = next(item for item in train if "Punk" in item.tags)
    assert "Rock" in punk.tags  # parents included
    assert punk.path == f"{punk.id[:3]}/{punk.id}.mp3"
    assert dataset.max_seconds == 30


def test_fma_tracks_csv_gives_the_same_lists(ref: Path, tmp_path: Path) -> None:
    """FMA's own tracks.csv (genres_all ids) + genres.csv (titles) yield the published metadata's lists."""
    published = load_dataset("fma", reference_dir=ref)
    names = sorted({tag for item in published.items for tag in item.tags})
    genre_id = {name: 1000 + position for position, name in enumerate(names)}
    with open(tmp_path / "genres.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["genre_id", "#tracks", "parent", "title", "top_level"])
        writer.writerows([genre_id[name], 1, 0, name, genre_id[name]] for name in names)
    with open(tmp_path / "tracks.csv", "w", newline="") as handle:
        writer = csv.writer(handle)  # FMA's layout: two header rows, then the index name row
        writer.writerow(["", "album", "track", "track"])
        writer.writerow(["", "title", "genres_all", "title"])
        writer.writerow(["track_id", "", "", ""])
        for item in published.items:
            writer.writerow([int(item.id), "an album, with a comma", str([genre_id[g] for g in item.tags]), "t"])
    from_tracks = load_dataset("fma", reference_dir=ref, metadata=tmp_path / "tracks.csv")
    assert [(i.id, i.split, set(i.tags)) for i in from_tracks.items] == \
           [(i.id, i.split, set(i.tags)) for i in published.items]
    assert from_tracks.vocabulary == FMA_TOP20


def test_fma_bad_genres_value_names_file_and_track(ref: Path, tmp_path: Path) -> None:
    (tmp_path / "genres.csv").write_text("genre_id,#tracks,parent,title,top_level\n12,1,0,Rock,12\n")
    (tmp_path / "tracks.csv").write_text(",track\n,genres_all\ntrack_id,\n2,[12]\n5,[99]\n")
    with pytest.raises(MarbleEvalError, match=r"tracks\.csv: row track_id=5: bad genres_all value"):
        load_dataset("fma", reference_dir=ref, metadata=tmp_path / "tracks.csv")


def test_mtat_clean_split_labels_from_annotations(ref: Path, mtat_data: Path) -> None:
    dataset = load_dataset("mtat", reference_dir=ref, data_dir=mtat_data)
    assert sizes(dataset) == PROTOCOL_SIZES["mtat"]
    assert dataset.vocabulary == [str(tag) for tag in np.load(ref / "magnatagatune/tags.npy")]
    matrix = np.load(mtat_data / "matrix.npy")
    tags = (mtat_data / "tags.txt").read_text().split("\n")
    first_test = np.load(ref / "magnatagatune/test.npy")[0]
    row, path = first_test.split("\t")
    item = dataset.split("test")[0]
    assert item.path == path
    assert set(item.tags) == {tag for tag, on in zip(tags, matrix[int(row)]) if on}
    assert dataset.audio_path(item) == (mtat_data / path).resolve()


def test_mtat_marble_folder_split_and_top50_over_all_clips(ref: Path, mtat_data: Path) -> None:
    dataset = load_dataset("mtat-marble", reference_dir=ref, data_dir=mtat_data)
    assert sizes(dataset) == PROTOCOL_SIZES["mtat-marble"]
    assert {item.path[0] for item in dataset.split("valid")} == {"c"}
    assert {item.path[0] for item in dataset.split("test")} == set("def")
    assert all("norine_braun-now_and_zen-08-gently-117-146" not in item.path for item in dataset.items)
    # top-50 counted over all kept clips, alphabetical then by count
    counts = Counter(tag for item in dataset.items for tag in item.tags)
    expected = sorted(counts, key=lambda tag: (-counts[tag], tag))[:50]
    assert dataset.vocabulary == expected
    assert "aa-rare" not in dataset.vocabulary


def test_mtat_without_annotations_still_describes(ref: Path, tmp_path: Path) -> None:
    dataset = load_dataset("mtat", reference_dir=ref, data_dir=tmp_path, allow_unlabelled=True)
    assert sizes(dataset) == PROTOCOL_SIZES["mtat"]
    assert len(dataset.vocabulary) == 50
    assert "annotations_final.csv" in dataset.missing_labels
    with pytest.raises(MarbleEvalError, match="annotations_final.csv"):
        load_dataset("mtat", reference_dir=ref, data_dir=tmp_path)


def test_mtat_malformed_annotations_name_file_and_line(ref: Path, mtat_data: Path, tmp_path: Path) -> None:
    lines = (mtat_data / "annotations_final.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    bad_value = lines[:]
    bad_value[5] = bad_value[5].replace('"0"', '"7"', 1)
    (tmp_path / "annotations_final.csv").write_text("".join(bad_value), encoding="utf-8")
    with pytest.raises(MarbleEvalError, match=r"annotations_final\.csv: line 6: tag column .* is '7'"):
        load_dataset("mtat", reference_dir=ref, data_dir=tmp_path)
    short = lines[:]
    short[9] = short[9].split("\t", 1)[1]
    (tmp_path / "annotations_final.csv").write_text("".join(short), encoding="utf-8")
    with pytest.raises(MarbleEvalError, match=r"annotations_final\.csv: line 10: expected \d+ tab-separated fields"):
        load_dataset("mtat-marble", reference_dir=ref, data_dir=tmp_path)
    swapped = lines[:]
    swapped[1], swapped[2] = swapped[2], swapped[1]
    (tmp_path / "annotations_final.csv").write_text("".join(swapped), encoding="utf-8")
    with pytest.raises(MarbleEvalError, match=r"line \d+: expected mp3_path .*not the MTAT distribution"):
        load_dataset("mtat", reference_dir=ref, data_dir=tmp_path)


def test_malformed_tsv_row_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "training.tsv"
    path.write_text("id\tinstruments\tgenres\tplace\na\tVoice\tLaiko\tNone\nb\tVoice\tLaiko\n")
    with pytest.raises(MarbleEvalError, match=r"training\.tsv: line 3: expected 4 tab-separated fields .* found 3"):
        list(read_rows(path, "\t", ("id",)))


def test_reference_hash_mismatch_is_refused_before_unpickling(ref: Path, tmp_path: Path) -> None:
    """A tampered fma/metadata.npy (a pickle that would run code) is rejected by sha256 first."""
    fake = tmp_path / "reference"
    for folder in ("fma",):
        shutil.copytree(ref / folder, fake / folder)
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    import pickle

    (fake / "fma/metadata.npy").chmod(0o644)
    (fake / "fma/metadata.npy").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(MarbleEvalError, match=r"fma/metadata\.npy: sha256 mismatch"):
        load_dataset("fma", reference_dir=fake)
    assert not marker.exists()


def test_missing_reference_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(MarbleEvalError) as info:
        load_dataset("lyra", reference_dir=tmp_path)
    assert "lyra/training.tsv: reference file not found" in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_source_and_unknown_key_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("name: x\nversion: '1'\ntask: multilabel\nsource: nope\n")
    with pytest.raises(MarbleEvalError, match=r"x\.yaml: line 4: unknown source 'nope'; known: .*lyra"):
        load_dataset(str(tmp_path / "x.yaml"))
    (tmp_path / "y.yaml").write_text("name: y\nversion: '1'\ntask: multilabel\nsource: lyra\nsplits: 3\n")
    with pytest.raises(MarbleEvalError, match=r"y\.yaml: splits: Unexpected keyword"):
        load_dataset(str(tmp_path / "y.yaml"))
    (tmp_path / "z.yaml").write_text("name: z\nversion: '1'\ntask: multilabel\nsource: lyra\noptions: {colour: red}\n")
    with pytest.raises(MarbleEvalError, match=r"options: colour: Unexpected keyword"):
        load_dataset(str(tmp_path / "z.yaml"), reference_dir=tmp_path)


def test_forgetting_data_dir_is_one_error_up_front(ref: Path, tmp_path: Path) -> None:
    dataset = load_dataset("lyra", reference_dir=ref)
    dataset.check_ready(need_audio=False)
    with pytest.raises(MarbleEvalError) as info:
        dataset.check_ready()
    assert str(info.value) == ("lyra: no --data-dir given, and its audio is needed; pass --data-dir DIR (the folder "
                               "its audio paths are relative to), e.g. `marble-eval data check lyra --data-dir DIR`")
    with pytest.raises(MarbleEvalError, match=r"none of lyra's 1,570 audio files is there \(e\.g\. .*/ach-ellada\.mp3\)"):
        load_dataset("lyra", reference_dir=ref, data_dir=tmp_path).check_ready()
    (tmp_path / "ach-ellada.mp3").write_bytes(b"x")  # one file there: the rest are per-item failures later
    load_dataset("lyra", reference_dir=ref, data_dir=tmp_path).check_ready()
