"""Dunya corpora: describe without labels, `data fetch-dunya` against a fake API on 127.0.0.1, labels."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from marble_eval.cli import data as data_cli
from marble_eval.datasets.assemble import options
from marble_eval.datasets.registry import load_dataset, load_spec, spec_path
from marble_eval.datasets.sources.dunya import DunyaOptions
from marble_eval.datasets.sources.dunya_api import fetch_metadata
from marble_eval.errors import MarbleEvalError
from marble_eval.files import sha256_file
from tests.cli_helpers import run_subcommands

TOKEN = "secret-token"


def reference_root() -> Path:
    env = os.environ.get("MARBLE_EVAL_REFERENCE_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared/reference/datasets"
    if not (path / "SHA256SUMS").is_file():
        pytest.skip(f"reference files not found at {path}; set MARBLE_EVAL_REFERENCE_DIR to shared/reference/datasets")
    return path


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run `marble-eval data ...` in-process."""
    return run_subcommands(argv, capsys, data_cli)


@pytest.fixture(scope="module")
def ref() -> Path:
    return reference_root()


@pytest.fixture(scope="module")
def hindustani(ref: Path):
    """Synthetic API recordings for every Hindustani id (three unknown to the API), with expected tags."""
    ids = [str(mbid) for split in ("train", "valid", "test") for mbid in np.load(ref / f"hindustani/{split}.npy")]
    rng = np.random.RandomState(1)
    raags = [f"Raag {i}" for i in range(12)]
    taals = ["Teentaal", "Ektaal", "Jhaptaal", "Rupak"]
    forms = ["Khayal", "Dhrupad", "Thumri"]
    instruments = ["Voice", "Tabla", "Harmonium", "Sitar", "Sarangi", "Bansuri", "Sarod"]
    recordings, expected = {}, {}
    for mbid in ids[3:]:
        raag, taal, form = raags[rng.randint(12)], taals[rng.randint(4)], forms[rng.randint(3)]
        played = sorted(set(rng.choice(instruments, size=rng.randint(1, 4), p=[.4, .25, .15, .08, .06, .04, .02])))
        artists = [{"artist": {"name": f"A{k}"}, "instrument": {"mbid": "x", "name": name}} for k, name in enumerate(played)]
        artists.append({"artist": {"name": "no instrument"}, "instrument": None})
        recordings[mbid] = {"mbid": mbid, "title": "t", "raags": [{"common_name": raag, "name": raag.upper()}],
                            "taals": [{"common_name": taal}], "forms": [{"common_name": form}], "artists": artists}
        expected[mbid] = sorted({f"raga--{raag}", f"tala--{taal}", f"form--{form}"} | {f"instrument--{n}" for n in played})
    return ids, recordings, expected


@pytest.fixture()
def api(hindustani):
    """Base URL of a fake Dunya API and the list of requested paths; failures scripted per mbid."""
    _, recordings, _ = hindustani
    requests: list[str] = []
    fail_once: set[str] = set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            requests.append(self.path)
            parts = self.path.strip("/").split("/")
            if self.headers.get("Authorization") != f"Token {TOKEN}":
                return self._send(401, {"detail": "Invalid token."})
            if len(parts) != 4 or parts[:3] != ["api", "hindustani", "recording"]:
                return self._send(404, {"detail": "Not found."})
            if parts[3] in fail_once:
                fail_once.discard(parts[3])
                return self._send(503, {"detail": "busy"})
            if parts[3] not in recordings:
                return self._send(404, {"detail": "Not found."})
            return self._send(200, recordings[parts[3]])

        def _send(self, status: int, body: dict) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api", requests, fail_once
    server.shutdown()
    server.server_close()


def test_describe_without_metadata_shows_sizes_and_reference_vocabulary(ref: Path, capsys) -> None:
    code, out, _ = cli(["data", "describe", "makam", "--reference-dir", str(ref), "--json"], capsys)
    summary = json.loads(out)
    assert code == 0
    assert {split: s["n_items"] for split, s in summary["splits"].items()} == {"train": 3709, "valid": 529, "test": 1059}
    assert summary["tags"] == json.loads((ref / "makam/makam.json").read_text())["train"]
    assert all(s["support"] is None for s in summary["splits"].values())
    assert "fetch-dunya makam --token" in summary["missing_labels"]
    code, out, _ = cli(["data", "describe", "makam", "--reference-dir", str(ref)], capsys)
    assert "labels: makam: labels need a metadata JSON" in out and "makam--Hicaz" in out


def test_fetch_dunya_builds_metadata_and_labels_load(ref: Path, hindustani, api, tmp_path: Path, capsys) -> None:
    ids, _, expected = hindustani
    base, requests, _ = api
    code, out, err = cli(["data", "fetch-dunya", "hindustani", "--token", TOKEN, "--api-url", base,
                          "--data-dir", str(tmp_path), "--reference-dir", str(ref)], capsys)
    assert code == 0, err
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert set(metadata) == set(ids)
    assert all(metadata[mbid] is None for mbid in ids[:3])
    assert {mbid: metadata[mbid] for mbid in expected} == expected
    assert f"{len(ids) - 3:,} of {len(ids):,} recordings tagged, 3 unknown to Dunya (null)" in out
    assert len(requests) == len(ids)

    dataset = load_dataset("hindustani", data_dir=tmp_path, reference_dir=ref)
    counts = Counter(tag for item in dataset.split("train") for tag in set(item.tags))
    assert dataset.vocabulary == sorted(counts, key=lambda tag: (-counts[tag], tag))[:20]
    assert dataset.split("test")[0].path == f"{dataset.split('test')[0].id}.mp3"
    assert dataset.max_seconds == 780
    published = json.loads((ref / "hindustani/hindustani.json").read_text())["train"]
    drift = [note for note in dataset.notes if "differs from the published hindustani/hindustani.json" in note]
    assert len(drift) == 1
    for tag in set(published) ^ set(dataset.vocabulary):
        assert tag in drift[0]
    assert any("3 recording(s) have no tags" in note for note in dataset.notes)

    # resume: only entries missing from the file are fetched again
    del metadata[ids[10]], metadata[ids[20]]
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    requests.clear()
    code, _, _ = cli(["data", "fetch-dunya", "hindustani", "--token", TOKEN, "--api-url", base,
                      "--output", str(tmp_path / "metadata.json"), "--reference-dir", str(ref)], capsys)
    assert code == 0 and sorted(requests) == sorted(f"/api/hindustani/recording/{m}" for m in (ids[10], ids[20]))


def test_refused_token_is_one_line(ref: Path, api, tmp_path: Path, capsys) -> None:
    base, _, _ = api
    code, _, err = cli(["data", "fetch-dunya", "hindustani", "--token", "wrong", "--api-url", base,
                        "--output", str(tmp_path / "m.json"), "--reference-dir", str(ref)], capsys)
    assert code == 2 and err.count("\n") == 1 and "HTTP 401: the Dunya token was refused" in err


def test_server_error_is_retried(hindustani, api, tmp_path: Path, ref: Path) -> None:
    ids, _, expected = hindustani
    base, requests, fail_once = api
    some = ids[3:6]
    fail_once.add(some[1])
    opts = options(DunyaOptions, load_spec("hindustani"))
    metadata = fetch_metadata(some, opts, TOKEN, tmp_path / "m.json", api=base, wait_seconds=0)
    assert metadata == {mbid: expected[mbid] for mbid in some}
    assert len(requests) == 4


def test_metadata_json_errors_name_the_file(ref: Path, tmp_path: Path) -> None:
    (tmp_path / "metadata.json").write_text('{\n  "a": ["x"],\n  "b": [1, }\n')
    with pytest.raises(MarbleEvalError, match=r"metadata\.json: line 3: invalid JSON"):
        load_dataset("carnatic", data_dir=tmp_path, reference_dir=ref)
    (tmp_path / "metadata.json").write_text('{"a": "not a list"}')
    with pytest.raises(MarbleEvalError, match=r"metadata\.json: entry 'a': expected a list"):
        load_dataset("carnatic", data_dir=tmp_path, reference_dir=ref)
    with pytest.raises(MarbleEvalError, match="labels need a metadata JSON"):
        load_dataset("carnatic", reference_dir=ref)


def test_partial_metadata_is_noted(ref: Path, tmp_path: Path) -> None:
    ids = [str(mbid) for mbid in np.load(ref / "carnatic/train.npy")]
    published = json.loads((ref / "carnatic/carnatic.json").read_text())["train"]
    # every train recording tagged with the published list: the same 20 tags come out, none missing
    (tmp_path / "m.json").write_text(json.dumps({mbid: published for mbid in ids}))
    dataset = load_dataset("carnatic", metadata=tmp_path / "m.json", reference_dir=ref)
    assert set(dataset.vocabulary) == set(published)
    assert any(note.startswith("783 recording(s) are not in") for note in dataset.notes)  # valid + test
    assert any("same tags as the published carnatic/carnatic.json but in another order" in n for n in dataset.notes)
    assert dataset.label_matrix(dataset.split("test")).sum() == 0


def test_published_vocabulary_is_the_lc_protonets_list_in_order(ref: Path, tmp_path: Path, capsys) -> None:
    """--vocabulary published on Carnatic: LC-Protonets' 20 "train" tags, their order; unlearnable ones noted."""
    published = json.loads((ref / "carnatic/carnatic.json").read_text())["train"]
    assert len(published) == 20
    ids = {split: [str(mbid) for mbid in np.load(ref / f"carnatic/{split}.npy")] for split in ("train", "valid", "test")}
    rng = np.random.RandomState(2)
    kept = published[:15]  # the last five never occur: metadata drift, as with a later Dunya snapshot
    metadata = {mbid: sorted(set(rng.choice(kept, size=3)) | {"raga--newer"}) for split in ids for mbid in ids[split]}
    (tmp_path / "m.json").write_text(json.dumps(metadata))

    dataset = load_dataset("carnatic", metadata=tmp_path / "m.json", reference_dir=ref, vocabulary="published")
    assert dataset.vocabulary == published and dataset.vocabulary_source == "published"
    notes = [note for note in dataset.notes if "have no positive train item" in note]
    assert len(notes) == 1 and notes[0].startswith("5 of the 20 published tags")
    assert all(tag in notes[0] for tag in published[15:]) and not any(tag in notes[0] for tag in kept)
    dataset.check_ready(need_audio=False)

    counted = load_dataset("carnatic", metadata=tmp_path / "m.json", reference_dir=ref)
    assert counted.vocabulary_source == "counted" and counted.vocabulary[0] == "raga--newer"
    assert counted.identity() != dataset.identity()

    unlabelled = load_dataset("carnatic", reference_dir=ref, vocabulary="published", allow_unlabelled=True)
    assert unlabelled.vocabulary == published and unlabelled.vocabulary_source == "published"
    code, out, _ = cli(["data", "describe", "carnatic", "--metadata", str(tmp_path / "m.json"), "--reference-dir",
                        str(ref), "--vocabulary", "published", "--json"], capsys)
    summary = json.loads(out)
    assert code == 0 and summary["tags"] == published and summary["vocabulary_source"] == "published"
    assert summary["splits"]["train"]["support"][published[-1]] == 0


def test_published_vocabulary_needs_a_published_list(ref: Path, small_fixture_yaml: Path, tmp_path: Path) -> None:
    with pytest.raises(MarbleEvalError, match=r"lyra: --vocabulary published needs a published tag list.*"
                                              r"use --vocabulary counted"):
        load_dataset("lyra", reference_dir=ref, vocabulary="published")
    with pytest.raises(MarbleEvalError, match=r"tiny-fixture: --vocabulary published needs a published tag list"):
        load_dataset(str(small_fixture_yaml), data_dir=tmp_path, vocabulary="published")
    with pytest.raises(MarbleEvalError, match=r"--vocabulary 'top': use one of counted, published"):
        load_dataset("carnatic", reference_dir=ref, vocabulary="top")
    mtat = load_dataset("mtat", reference_dir=ref, vocabulary="published", allow_unlabelled=True)
    assert mtat.vocabulary_source == "published" and len(mtat.vocabulary) == 50  # its rule is the tags.npy list


def test_identity_follows_the_label_file_and_the_reference_files(ref: Path, tmp_path: Path) -> None:
    ids = [str(mbid) for split in ("train", "valid", "test") for mbid in np.load(ref / f"carnatic/{split}.npy")]
    published = json.loads((ref / "carnatic/carnatic.json").read_text())["train"]
    metadata = {mbid: published[i % 20: i % 20 + 3] for i, mbid in enumerate(ids)}
    (tmp_path / "m.json").write_text(json.dumps(metadata))
    base = load_dataset("carnatic", metadata=tmp_path / "m.json", reference_dir=ref).identity()
    assert load_dataset("carnatic", metadata=tmp_path / "m.json", reference_dir=ref).identity() == base
    metadata[ids[-1]] = metadata[ids[-1]][:1]  # one test recording loses two tags
    (tmp_path / "m.json").write_text(json.dumps(metadata))
    assert load_dataset("carnatic", metadata=tmp_path / "m.json", reference_dir=ref).identity() != base

    # a reference dir whose train split lacks one recording (its sha256 updated in a copy of the YAML)
    shutil.copytree(ref / "carnatic", tmp_path / "ref/carnatic")
    (tmp_path / "ref/carnatic/train.npy").chmod(0o644)
    np.save(tmp_path / "ref/carnatic/train.npy", np.load(ref / "carnatic/train.npy")[1:])
    spec = yaml.safe_load(spec_path("carnatic").read_text())
    spec["files"]["train"]["sha256"] = sha256_file(tmp_path / "ref/carnatic/train.npy")
    spec.pop("sizes")
    (tmp_path / "carnatic.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "m.json").write_text(json.dumps({mbid: published[i % 20: i % 20 + 3] for i, mbid in enumerate(ids)}))
    moved = load_dataset(str(tmp_path / "carnatic.yaml"), metadata=tmp_path / "m.json", reference_dir=tmp_path / "ref")
    assert len(moved.split("train")) == 1828 and moved.identity() != base

