"""Custom datasets: a CSV or JSONL manifest plus a few YAML lines; every command works on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from marble_eval.cli import data as data_cli
from marble_eval.datasets.registry import load_dataset
from marble_eval.errors import MarbleEvalError
from marble_eval.metrics.keys import KEY_CLASSES
from tests.cli_helpers import run_subcommands

ROWS = [  # path, split, labels
    ("a/one.wav", "train", "rock|guitar"),
    ("a/two.flac", "train", "rock"),
    ("b/three.wav", "train", "jazz|piano|rock"),
    ("b/four.wav", "valid", "jazz"),
    ("c/five.wav", "test", ""),
    ("c/six.wav", "test", "guitar|piano"),
]


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run `marble-eval data ...` in-process."""
    return run_subcommands(argv, capsys, data_cli)


def write_yaml(folder: Path, manifest: str, extra: str = "vocabulary: {rule: top_n, n: 3}\n") -> Path:
    path = folder / "mine.yaml"
    path.write_text(f"name: mine\nversion: '1'\ntask: multilabel\nsource: manifest\noptions: {{manifest: {manifest}}}\n"
                    + extra)
    return path


def write_csv(path: Path, rows=ROWS, header="path,split,labels") -> None:
    path.write_text(header + "\n" + "".join(f"{p},{s},{l}\n" for p, s, l in rows))


@pytest.fixture()
def audio_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "audio"
    tone = 0.1 * np.sin(np.linspace(0, 2000, 16000)).astype(np.float32)
    for path, _, _ in ROWS:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / path, tone, 16000)
    return folder


def test_csv_manifest_loads_with_top_n(tmp_path: Path) -> None:
    write_csv(tmp_path / "m.csv")
    dataset = load_dataset(str(write_yaml(tmp_path, "m.csv")))
    assert [(i.path, i.split) for i in dataset.items] == [(p, s) for p, s, _ in ROWS]
    assert dataset.vocabulary == ["rock", "guitar", "jazz"]  # counts over train 3, 1, 1, 1 (piano cut alphabetically)
    assert dataset.items[4].tags == ()
    assert dataset.label_matrix(dataset.split("test")).tolist() == [[0, 0, 0], [0, 1, 0]]


def test_jsonl_manifest_equals_csv(tmp_path: Path) -> None:
    write_csv(tmp_path / "m.csv")
    lines = [json.dumps({"path": p, "split": s, "labels": [x for x in l.split("|") if x]}) for p, s, l in ROWS]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n\n")
    from_csv = load_dataset(str(write_yaml(tmp_path, "m.csv")))
    from_jsonl = load_dataset(str(write_yaml(tmp_path, "m.jsonl")))
    assert from_csv.items == from_jsonl.items and from_csv.vocabulary == from_jsonl.vocabulary


def test_every_data_command_works_on_a_manifest(tmp_path: Path, audio_dir: Path, capsys) -> None:
    write_csv(tmp_path / "m.csv")
    yaml_path = str(write_yaml(tmp_path, "m.csv"))
    code, out, _ = cli(["data", "describe", yaml_path, "--data-dir", str(audio_dir), "--json"], capsys)
    summary = json.loads(out)
    assert code == 0 and summary["name"] == "mine" and summary["missing_audio"] == 0
    assert summary["splits"]["train"] == {"n_items": 3, "support": {"rock": 3, "guitar": 1, "jazz": 1}}
    assert summary["splits"]["test"]["support"] == {"rock": 0, "guitar": 1, "jazz": 0}
    code, out, _ = cli(["data", "check", yaml_path, "--data-dir", str(audio_dir)], capsys)
    assert code == 0 and "6 of 6 items OK" in out

    (audio_dir / "b/four.wav").unlink()
    (audio_dir / "c/six.wav").write_bytes(b"RIFF....not audio at all")
    (audio_dir / "a/two.flac").write_bytes(b"")
    code, out, _ = cli(["data", "check", yaml_path, "--data-dir", str(audio_dir)], capsys)
    assert code == 1
    lines = out.strip().splitlines()
    assert f"missing: {(audio_dir / 'b/four.wav').resolve()} (file not found)" in lines
    assert any(line.startswith(f"corrupt: {(audio_dir / 'c/six.wav').resolve()} (unreadable audio") for line in lines)
    assert f"corrupt: {(audio_dir / 'a/two.flac').resolve()} (empty file (0 bytes))" in lines
    assert lines[-1] == "mine: 3 of 6 items OK, 1 missing, 2 corrupt"
    code, out, _ = cli(["data", "check", yaml_path, "--data-dir", str(audio_dir), "--quick", "--json"], capsys)
    problems = json.loads(out)["problems"]
    assert code == 1 and sorted((p["id"], p["kind"]) for p in problems) == [
        ("a/two.flac", "corrupt"), ("b/four.wav", "missing"), ("c/six.wav", "corrupt")]
    code, out, _ = cli(["data", "describe", yaml_path, "--data-dir", str(audio_dir), "--json"], capsys)
    assert json.loads(out)["missing_audio"] == 1


@pytest.mark.parametrize("bad_path", ["../outside.wav", "/etc/passwd", "a/../../outside.wav"])
def test_paths_never_escape_the_data_dir(tmp_path: Path, bad_path: str) -> None:
    write_csv(tmp_path / "m.csv", ROWS[:2] + [(bad_path, "test", "rock")])
    with pytest.raises(MarbleEvalError, match=r"m\.csv: line 4: audio path .* escapes the data dir"):
        load_dataset(str(write_yaml(tmp_path, "m.csv")), data_dir=tmp_path)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "..", "."]), min_size=1, max_size=6))
def test_escape_rule_matches_path_depth(tmp_path_factory, parts: list[str]) -> None:
    """A relative path is accepted exactly when it never climbs above the data dir."""
    folder = tmp_path_factory.mktemp("escape")
    relative = "/".join(parts) + "/x.wav"
    depth, escapes = 0, False
    for part in parts:
        depth += {"..": -1, ".": 0}.get(part, 1)
        escapes = escapes or depth < 0
    write_csv(folder / "m.csv", [(relative, "train", "rock")])
    if escapes:
        with pytest.raises(MarbleEvalError, match="escapes the data dir"):
            load_dataset(str(write_yaml(folder, "m.csv")), data_dir=folder / "data")
    else:
        assert load_dataset(str(write_yaml(folder, "m.csv")), data_dir=folder / "data").items[0].path == relative


@pytest.mark.parametrize("content, message", [
    ("path,split,labels\na.wav,train,rock\nb.wav,training,rock\n", r"line 3: split 'training' is not one of"),
    ("path,split,labels\na.wav,train,rock\nb.wav,test\n", r"line 3: expected 3 ','-separated fields"),
    ("path,split\n", r"no rows"),
    ("file,split,labels\na.wav,train,x\n", r"line 1: header lacks column\(s\) path"),
    ("path,split,labels\na.wav,train,rock\na.wav,test,rock\n", r"line 3: id 'a.wav' repeats line 2"),
])
def test_malformed_csv_rows_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(MarbleEvalError, match=rf"m\.csv: {message}") as info:
        load_dataset(str(write_yaml(tmp_path, "m.csv")))
    assert "\n" not in str(info.value)


def test_malformed_jsonl_and_missing_manifest(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav", "split": "train", "labels": ["x"]}\n{"path": "b.wav",\n')
    with pytest.raises(MarbleEvalError, match=r"m\.jsonl: line 2: invalid JSON"):
        load_dataset(str(write_yaml(tmp_path, "m.jsonl")))
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav", "split": "train", "labels": [3]}\n')
    with pytest.raises(MarbleEvalError, match=r"m\.jsonl: line 1: labels must be a list of non-empty strings"):
        load_dataset(str(write_yaml(tmp_path, "m.jsonl")))
    with pytest.raises(MarbleEvalError, match=r"gone\.csv: manifest not found"):
        load_dataset(str(write_yaml(tmp_path, "gone.csv")))


def test_fixture_style_manifest_with_tags_column_and_ids(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("id,split,path,tags\nclip0,train,train/clip0.wav,tone-220|chirp-up\n"
                                    "clip1,test,test/clip1.wav,\n")
    dataset = load_dataset(str(write_yaml(tmp_path, "m.csv", "vocabulary: {rule: fixed, tags: [tone-220, chirp-up]}\n")))
    assert [i.id for i in dataset.items] == ["clip0", "clip1"]
    assert dataset.label_matrix(dataset.items).tolist() == [[1, 1], [0, 0]]


def test_multiclass_needs_one_label_per_item(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,split,labels\na.wav,train,rock\nc.wav,valid,rock\nb.wav,test,jazz\n")
    yaml_path = write_yaml(tmp_path, "m.csv", "vocabulary: {rule: all}\n")
    yaml_path.write_text(yaml_path.read_text().replace("multilabel", "multiclass"))
    dataset = load_dataset(str(yaml_path))
    assert dataset.vocabulary == ["rock", "jazz"]  # every class; those absent from train follow
    with pytest.raises(MarbleEvalError, match="1 of the 2 classes have no train item.*: jazz;"):
        dataset.check_ready(need_audio=False)
    (tmp_path / "m.csv").write_text("path,split,labels\na.wav,train,rock\nb.wav,test,jazz|rock\nc.wav,test,\n")
    with pytest.raises(MarbleEvalError, match=r"m\.csv: 2 bad rows: line 3: task multiclass needs exactly one label "
                                              r"per item, this row has 2 \(jazz, rock\); line 4: .* this row has 0;"):
        load_dataset(str(yaml_path))


def test_utf8_bom_from_excel_is_accepted(tmp_path: Path) -> None:
    write_csv(tmp_path / "plain.csv")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.csv").read_bytes())
    lines = [json.dumps({"path": p, "split": s, "labels": l}) for p, s, l in ROWS]
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    plain = load_dataset(str(write_yaml(tmp_path, "plain.csv")))
    for name in ("bom.csv", "bom.jsonl"):
        dataset = load_dataset(str(write_yaml(tmp_path, name)))
        assert dataset.items == plain.items and dataset.vocabulary == plain.vocabulary


def test_every_bad_row_is_reported_in_one_line(tmp_path: Path) -> None:
    rows = ["path,split,labels", "ok0.wav,train,rock", "a.wav,training,rock", "../up.wav,train,rock",
            "ok0.wav,test,rock", "short.wav,test", "/abs.wav,valid,x"]
    rows += [f"b{i}.wav,nope,x" for i in range(8)]  # 5 + 8 = 13 bad rows
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(MarbleEvalError) as info:
        load_dataset(str(write_yaml(tmp_path, "m.csv")))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'm.csv'}: 13 bad rows: line 3: split 'training'")
    for expected in ("line 4: audio path '../up.wav' escapes the data dir", "line 5: id 'ok0.wav' repeats line 2",
                     "line 6: expected 3 ','-separated fields", "line 7: audio path '/abs.wav' escapes",
                     "line 12: split 'nope'", "and 3 more; fix them and rerun"):
        assert expected in message
    assert "line 13:" not in message  # capped at the first ten
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav", "split": "train", "labels": ["x"]}\n[1]\n{"path": "b.wav",\n'
                                      '{"path": "c.wav", "split": "train", "labels": [3]}\n')
    with pytest.raises(MarbleEvalError, match=r"m\.jsonl: 3 bad rows: line 2: expected a JSON object.*; line 3: "
                                              r"invalid JSON.*; line 4: labels must be"):
        load_dataset(str(write_yaml(tmp_path, "m.jsonl")))


def test_symlink_leaving_the_data_dir_fails_that_item_only(tmp_path: Path, audio_dir: Path, capsys) -> None:
    from marble_eval.features.windows import decode_jobs

    outside = tmp_path / "elsewhere.wav"
    sf.write(outside, np.zeros(1600, dtype=np.float32), 16000)
    (audio_dir / "a/one.wav").unlink()
    (audio_dir / "a/one.wav").symlink_to(outside)
    (audio_dir / "inside.wav").symlink_to(audio_dir / "b/three.wav")  # a link within the data dir is fine
    write_csv(tmp_path / "m.csv", ROWS + [("inside.wav", "train", "rock")])
    yaml_path = str(write_yaml(tmp_path, "m.csv"))
    dataset = load_dataset(yaml_path, data_dir=audio_dir)
    assert len(dataset.items) == len(ROWS) + 1
    dataset.check_ready()
    with pytest.raises(MarbleEvalError, match=r"'a/one\.wav' escapes the data dir .* through a symlink \(to .*elsewhere\.wav\)"):
        dataset.audio_path(dataset.items[0])
    jobs = decode_jobs(dataset, dataset.items)
    assert [job.path is None for job in jobs] == [True] + [False] * len(ROWS)
    code, out, _ = cli(["data", "check", yaml_path, "--data-dir", str(audio_dir), "--quick"], capsys)
    lines = out.strip().splitlines()
    assert code == 1 and lines[0].startswith(f"refused: {audio_dir / 'a/one.wav'} (")
    assert lines[-1] == "mine: 6 of 7 items OK, 0 missing, 0 corrupt, 1 refused (outside the data dir)"
    code, out, _ = cli(["data", "describe", yaml_path, "--data-dir", str(audio_dir), "--json"], capsys)
    assert code == 0 and json.loads(out)["missing_audio"] == 1


def test_check_ready_refuses_up_front_with_the_exact_command(tmp_path: Path, audio_dir: Path) -> None:
    write_csv(tmp_path / "m.csv")
    yaml_path = str(write_yaml(tmp_path, "m.csv"))
    dataset = load_dataset(yaml_path)
    dataset.check_ready(need_audio=False)
    with pytest.raises(MarbleEvalError) as info:
        dataset.check_ready()
    assert "\n" not in str(info.value)
    assert "no --data-dir given" in str(info.value) and f"`marble-eval data check {yaml_path} --data-dir DIR`" in str(info.value)
    with pytest.raises(MarbleEvalError, match=r"no --data-dir given"):
        dataset.audio_path(dataset.items[0])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MarbleEvalError, match=rf"none of mine's 6 audio files is there \(e\.g\. {empty}/a/one\.wav\); "
                                              rf"is it the right --data-dir\? `marble-eval data check {yaml_path} "
                                              rf"--data-dir {empty} --quick`"):
        load_dataset(yaml_path, data_dir=empty).check_ready()
    with pytest.raises(MarbleEvalError, match=r"--data-dir is not a directory"):
        load_dataset(yaml_path, data_dir=tmp_path / "absent").check_ready()
    load_dataset(yaml_path, data_dir=audio_dir).check_ready()
    (audio_dir / "a/one.wav").unlink()  # some files missing: those items fail later, one by one
    load_dataset(yaml_path, data_dir=audio_dir).check_ready()


def test_check_ready_refuses_an_empty_split_and_a_vocabulary_without_train_positives(tmp_path: Path) -> None:
    write_csv(tmp_path / "m.csv", [row for row in ROWS if row[1] != "valid"])
    dataset = load_dataset(str(write_yaml(tmp_path, "m.csv")))
    with pytest.raises(MarbleEvalError, match=r"mine: the valid split is empty \(train 3, valid 0, test 2\)"):
        dataset.check_ready(need_audio=False)
    write_csv(tmp_path / "m.csv")
    fixed = write_yaml(tmp_path, "m.csv", "vocabulary: {rule: fixed, tags: [cello, flute]}\n")
    dataset = load_dataset(str(fixed))
    assert dataset.vocabulary_source == "fixed"
    assert any("2 of the 2 fixed tags have no positive train item" in note for note in dataset.notes)
    with pytest.raises(MarbleEvalError, match=r"none of the 2 tags of the fixed vocabulary has a positive train item"):
        dataset.check_ready(need_audio=False)
    dataset.check_ready(need_audio=False, need_labels=False)


def test_identity_follows_what_is_evaluated(tmp_path: Path, audio_dir: Path) -> None:
    write_csv(tmp_path / "m.csv")
    yaml_path = str(write_yaml(tmp_path, "m.csv"))
    base = load_dataset(yaml_path).identity()
    assert load_dataset(yaml_path).identity() == base
    assert load_dataset(yaml_path, data_dir=audio_dir).identity() == base  # where the audio lies is not identity
    changed = {
        "a label": [ROWS[0][:2] + ("rock",)] + ROWS[1:],
        "a split": [ROWS[0][:1] + ("valid", ROWS[0][2])] + ROWS[1:],
        "a path": [("a/uno.wav",) + ROWS[0][1:]] + ROWS[1:],
        "an item": ROWS[:-1],
    }
    seen = {base}
    for what, rows in changed.items():
        write_csv(tmp_path / "m.csv", rows)
        identity = load_dataset(yaml_path).identity()
        assert identity not in seen, what
        seen.add(identity)
    write_csv(tmp_path / "m.csv")
    assert load_dataset(yaml_path).identity() == base
    assert load_dataset(str(write_yaml(tmp_path, "m.csv", "vocabulary: {rule: top_n, n: 2}\n"))).identity() != base


def test_limit_keeps_the_first_items_of_each_split(tmp_path: Path, capsys) -> None:
    write_csv(tmp_path / "m.csv")
    yaml_path = str(write_yaml(tmp_path, "m.csv"))
    full = load_dataset(yaml_path)
    small = load_dataset(yaml_path, limit=2)
    assert [item.path for item in small.items] == ["a/one.wav", "a/two.flac", "b/four.wav", "c/five.wav", "c/six.wav"]
    assert small.vocabulary == full.vocabulary and small.limit == 2 and full.limit is None
    assert small.identity() != full.identity()
    assert any(note.startswith("smoke run: only the first 2 item(s) of each split (2 / 1 / 2)") for note in small.notes)
    assert load_dataset(yaml_path, limit=100).items == full.items
    for bad in (0, -1, True):
        with pytest.raises(MarbleEvalError, match=r"--limit .*: give a whole number of items per split, 1 or more"):
            load_dataset(yaml_path, limit=bad)
    code, out, _ = cli(["data", "describe", yaml_path, "--limit", "1", "--json"], capsys)
    summary = json.loads(out)
    assert code == 0 and summary["limit"] == 1 and [s["n_items"] for s in summary["splits"].values()] == [1, 1, 1]
    assert summary["vocabulary_source"] == "counted"


@pytest.mark.parametrize("name", ["m.csv", "m.jsonl"])
def test_a_manifest_that_is_not_utf8_is_one_line(tmp_path: Path, name: str) -> None:
    row = "caf\xe9.wav,train,rock\n" if name == "m.csv" else '{"path": "caf\xe9.wav", "split": "train"}\n'
    header = "path,split,labels\n" if name == "m.csv" else ""
    (tmp_path / name).write_bytes((header + row).encode("latin-1"))
    with pytest.raises(MarbleEvalError, match=rf"{name.replace('.', '[.]')}: not UTF-8 text( after line \d+)? \(invalid .*\); save it as UTF-8"):
        load_dataset(str(write_yaml(tmp_path, name)))


def task_yaml(folder: Path, manifest: str, task: str, extra: str = "") -> str:
    path = folder / "task.yaml"
    path.write_text(f"name: mine\nversion: '1'\ntask: {task}\nsource: manifest\noptions: {{manifest: {manifest}}}\n"
                    + extra)
    return str(path)


def test_a_key_manifest_parses_every_accepted_spelling_and_reports_bad_keys_together(tmp_path: Path) -> None:
    (tmp_path / "k.csv").write_text("path,split,labels\na.wav,train,F# minor\nb.wav,valid,C:maj\n"
                                    "c.wav,test,Db minor\nd.wav,test, a:min \n")
    dataset = load_dataset(task_yaml(tmp_path, "k.csv", "key"))
    assert [item.tags for item in dataset.items] == [("Gb minor",), ("C major",), ("Db minor",), ("A minor",)]
    assert dataset.vocabulary == list(KEY_CLASSES) and dataset.label_matrix(dataset.items).sum() == 4
    (tmp_path / "k.jsonl").write_text("\n".join(json.dumps({"path": p, "split": s, "labels": [k]}) for p, s, k in [
        ("a.wav", "train", "H major"), ("b.wav", "train", "C major"), ("c.wav", "test", "C major|G major"),
        ("d.wav", "test", "Bb")]) + "\n")
    with pytest.raises(MarbleEvalError) as info:
        load_dataset(task_yaml(tmp_path, "k.jsonl", "key"))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'k.jsonl'}: 2 bad rows: line 1: key label 'H major' is not a key; "
                              "write it as 'C major', 'F# minor', 'Db minor' or 'C:maj'; line 3: key label "
                              "'C major|G major' is not a key")


def test_a_regression_manifest_has_one_number_per_target(tmp_path: Path) -> None:
    targets = "targets: [arousal, valence]\n"
    (tmp_path / "r.csv").write_text("path,split,arousal,valence\na.wav,train,1.5,-2\nb.wav,valid,3,4e-1\n"
                                    "c.wav,test, 7 ,0\n")
    dataset = load_dataset(task_yaml(tmp_path, "r.csv", "regression", targets))
    assert dataset.vocabulary == ["arousal", "valence"] and [i.tags for i in dataset.items] == [()] * 3
    assert dataset.label_matrix(dataset.items).tolist() == [[1.5, -2.0], [3.0, 0.4000000059604645], [7.0, 0.0]]
    lines = [{"path": "a.wav", "split": "train", "arousal": 1.5, "valence": -2},
             {"path": "b.wav", "split": "valid", "arousal": "3", "valence": 0.4},
             {"path": "c.wav", "split": "test", "arousal": 7, "valence": 0}]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert load_dataset(task_yaml(tmp_path, "r.jsonl", "regression", targets)).items == dataset.items
    (tmp_path / "r.csv").write_text("path,split,arousal,valence\na.wav,train,high,1\nb.wav,train,,1\n"
                                    "c.wav,train,nan,1\nd.wav,train,1,1\n")
    with pytest.raises(MarbleEvalError, match=r"r\.csv: 3 bad rows: line 2: target 'arousal' is 'high', not a number; "
                                              r"line 3: target 'arousal' is missing; line 4: target 'arousal' is "
                                              r"'nan', not a finite number; fix them"):
        load_dataset(task_yaml(tmp_path, "r.csv", "regression", targets))
    (tmp_path / "r.csv").write_text("path,split,arousal\na.wav,train,1\n")
    with pytest.raises(MarbleEvalError, match=r"line 1: header lacks column\(s\) valence"):
        load_dataset(task_yaml(tmp_path, "r.csv", "regression", targets))
    (tmp_path / "r.jsonl").write_text('{"path": "a.wav", "split": "train", "arousal": 1}\n'
                                      '{"path": "b.wav", "split": "train", "arousal": true, "valence": 1}\n'
                                      '{"path": "c.wav", "split": "train", "arousal": 1, "valence": 1, "labels": "x"}\n')
    with pytest.raises(MarbleEvalError, match=r"3 bad rows: line 1: target 'valence' is missing; line 2: target "
                                              r"'arousal' is True, not a number; line 3: a regression row has targets"):
        load_dataset(task_yaml(tmp_path, "r.jsonl", "regression", targets))


def test_stray_label_spaces_never_create_tags_and_are_noted(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,split,labels\na.ogg,train, rock | guitar \nb.ogg,train,rock|guitar\n"
                                    "c.ogg,valid,rock\nd.ogg,test,guitar\n")
    dataset = load_dataset(str(write_yaml(tmp_path, "m.csv", "vocabulary: {rule: all}\n")))
    assert dataset.items[0].tags == ("rock", "guitar") and dataset.vocabulary == ["guitar", "rock"]
    assert [note for note in dataset.notes if "spaces" in note] == [
        "2 label(s) had spaces around them, which were stripped (e.g. ' rock ' -> 'rock'); spaces never make a new label"]
    lines = [{"path": "a.ogg", "split": "train", "labels": [" rock", "guitar\t"]},
             {"path": "b.ogg", "split": "train", "labels": "rock | guitar"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    from_jsonl = load_dataset(str(write_yaml(tmp_path, "m.jsonl", "vocabulary: {rule: all}\n")))
    assert [item.tags for item in from_jsonl.items] == [("rock", "guitar")] * 2
    assert any(note.startswith("4 label(s) had spaces") for note in from_jsonl.notes)
    write_csv(tmp_path / "clean.csv")
    assert not any("spaces" in note for note in load_dataset(str(write_yaml(tmp_path, "clean.csv"))).notes)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["rock", "jazz", "piano"]), st.sampled_from(["", " ", "  ", "\t"]),
                          st.sampled_from(["", " ", "\t "])), min_size=1, max_size=4),
       st.booleans())
def test_no_padding_of_labels_ever_makes_a_tag(tmp_path_factory, labels, as_jsonl: bool) -> None:
    folder = tmp_path_factory.mktemp("spaces")
    padded = [before + label + after for label, before, after in labels]
    if as_jsonl:
        (folder / "m.jsonl").write_text(json.dumps({"path": "a.wav", "split": "train", "labels": padded}) + "\n")
    else:
        (folder / "m.jsonl").write_text("")
        (folder / "m.csv").write_text(f"path,split,labels\na.wav,train,\"{'|'.join(padded)}\"\n")
    dataset = load_dataset(str(write_yaml(folder, "m.jsonl" if as_jsonl else "m.csv", "vocabulary: {rule: all}\n")))
    assert dataset.items[0].tags == tuple(dict.fromkeys(label for label, _, _ in labels))
    assert set(dataset.vocabulary) == {label for label, _, _ in labels}


def test_audio_behind_symlinks_leading_out_says_so_and_what_to_do(tmp_path: Path, audio_dir: Path) -> None:
    write_csv(tmp_path / "m.csv")
    yaml_path = str(write_yaml(tmp_path, "m.csv"))
    links = tmp_path / "links"
    for path, _, _ in ROWS:  # every file a symlink into the real folder, same layout
        (links / path).parent.mkdir(parents=True, exist_ok=True)
        (links / path).symlink_to(audio_dir / path)
    with pytest.raises(MarbleEvalError) as info:
        load_dataset(yaml_path, data_dir=links).check_ready()
    message = str(info.value)
    assert "none of" not in message and "\n" not in message
    assert message.startswith(f"{links}: 6 of mine's 6 audio files exist but lead out of the data dir through "
                              f"symlinks (e.g. {links / 'a/one.wav'} -> {(audio_dir / 'a/one.wav').resolve()})")
    assert message.endswith(f"copy the files into the data dir, or pass the folder the links point into as "
                            f"--data-dir (e.g. --data-dir {audio_dir.resolve()})")
    load_dataset(yaml_path, data_dir=audio_dir.resolve()).check_ready()  # the advice works
    (links / "a/one.wav").unlink()  # a link to a file elsewhere, named otherwise: no folder to suggest
    other = tmp_path / "stash" / "x.wav"
    other.parent.mkdir()
    other.write_bytes((audio_dir / "a/one.wav").read_bytes())
    (links / "a/one.wav").symlink_to(other)
    for path, _, _ in ROWS[1:]:
        (links / path).unlink()
    with pytest.raises(MarbleEvalError, match=r"1 of mine's 6 audio files exist but lead out .*\(the other 5 are not "
                                              r"there\).*copy the files into the data dir, or make --data-dir the "
                                              r"folder that holds the files themselves"):
        load_dataset(yaml_path, data_dir=links).check_ready()
