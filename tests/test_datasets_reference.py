"""Fetching reference files: a local HTTP server on 127.0.0.1 stands in for raw.githubusercontent.com."""

from __future__ import annotations

import http.server
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from marble_eval.configs import validate
from marble_eval.datasets.reference import REFERENCE_ENV, resolve_file
from marble_eval.datasets.registry import load_dataset, spec_path
from marble_eval.datasets.spec import BenchmarkSpec
from marble_eval.errors import MarbleEvalError
from marble_eval.files import sha256_file


def reference_root() -> Path:
    env = os.environ.get(REFERENCE_ENV)
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared/reference/datasets"
    if not (path / "SHA256SUMS").is_file():
        pytest.skip(f"reference files not found at {path}; set {REFERENCE_ENV} to shared/reference/datasets")
    return path


@pytest.fixture()
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(base URL, served folder, list of requested paths) of a throwaway HTTP server."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):  # noqa: N802 - http.server's naming
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.delenv(REFERENCE_ENV, raising=False)
    yield f"http://127.0.0.1:{server.server_address[1]}", root, requests
    server.shutdown()
    server.server_close()


def spec_with(files: dict) -> BenchmarkSpec:
    return validate(BenchmarkSpec, {"name": "t", "version": "1", "task": "multilabel", "source": "lyra",
                                    "files": files}, "test spec")


def test_fetch_verifies_and_caches(served, tmp_path: Path) -> None:
    base, root, requests = served
    (root / "a.tsv").write_bytes(b"id\tx\n1\t2\n")
    spec = spec_with({"a": {"path": "t/a.tsv", "url": f"{base}/a.tsv", "sha256": sha256_file(root / "a.tsv")}})
    cache = tmp_path / "cache"
    path = resolve_file(spec, "a", cache_dir=cache)
    assert path == cache / "reference/t/a.tsv" and path.read_bytes() == b"id\tx\n1\t2\n"
    assert resolve_file(spec, "a", cache_dir=cache) == path
    assert requests == ["/a.tsv"], "a verified cached file is not downloaded again"
    path.write_bytes(b"stale")
    resolve_file(spec, "a", cache_dir=cache)
    assert path.read_bytes() == b"id\tx\n1\t2\n" and len(requests) == 2


def test_bad_hash_and_http_error_are_one_line(served, tmp_path: Path) -> None:
    base, root, _ = served
    (root / "a.tsv").write_bytes(b"changed upstream\n")
    spec = spec_with({"a": {"path": "t/a.tsv", "url": f"{base}/a.tsv", "sha256": "0" * 64},
                      "b": {"path": "t/b.tsv", "url": f"{base}/missing.tsv", "sha256": "0" * 64}})
    with pytest.raises(MarbleEvalError, match=rf"{base}/a\.tsv: sha256 mismatch .* nothing was saved") as info:
        resolve_file(spec, "a", cache_dir=tmp_path)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "reference/t/a.tsv").exists()
    with pytest.raises(MarbleEvalError, match=rf"{base}/missing\.tsv: HTTP 404"):
        resolve_file(spec, "b", cache_dir=tmp_path)


def test_env_variable_points_at_a_local_reference_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t/a.tsv").write_bytes(b"local\n")
    spec = spec_with({"a": {"path": "t/a.tsv", "url": "http://127.0.0.1:9/never", "sha256": sha256_file(tmp_path / "t/a.tsv")}})
    monkeypatch.setenv(REFERENCE_ENV, str(tmp_path))
    assert resolve_file(spec, "a") == tmp_path / "t/a.tsv"


def test_whole_dataset_fetched_through_its_yaml(served, tmp_path: Path) -> None:
    """lyra.yaml with its URLs pointed at the local server: fetched, verified, loaded; no reference dir."""
    base, root, requests = served
    ref = reference_root()
    data = yaml.safe_load(Path(spec_path("lyra")).read_text())
    for entry in data["files"].values():
        (root / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
        (root / entry["path"]).write_bytes((ref / entry["path"]).read_bytes())
        entry["url"] = f"{base}/{entry['path']}"
    (tmp_path / "lyra-local.yaml").write_text(yaml.safe_dump(data))
    dataset = load_dataset(str(tmp_path / "lyra-local.yaml"), cache_dir=tmp_path / "cache")
    assert len(dataset.items) == 1570 and len(dataset.vocabulary) == 30
    assert sorted(requests) == ["/lyra/test.tsv", "/lyra/training.tsv"]


def python2_pickle(names: list[str]) -> bytes:
    """A protocol-0 list of byte strings, as Python 2's cPickle writes train_list_pub.cP."""
    body = b"(lp1\n" + b"".join(b"S'%s'\np%d\na" % (name.encode(), position + 2) for position, name in enumerate(names))
    return body + b"."


def test_mtat_train_list_rebuilt_to_the_pinned_hash(served, tmp_path: Path) -> None:
    """train.npy has no public copy: rebuilt from a train_list_pub.cP-style pickle + index_mtt.tsv and
    accepted only because the result matches the sha256 pinned in mtat.yaml."""
    base, root, requests = served
    ref = reference_root()
    rows = np.load(ref / "magnatagatune/train.npy")
    names = sorted(entry.split("\t")[1].replace(".mp3", ".npy") for entry in rows)  # the list's own order
    (root / "train_list_pub.cP").write_bytes(python2_pickle(names))
    (root / "index_mtt.tsv").write_bytes((ref / "magnatagatune/index_mtt.tsv").read_bytes())
    data = yaml.safe_load(Path(spec_path("mtat")).read_text())
    data["files"]["train"]["built_from"]["url"] = f"{base}/train_list_pub.cP"
    data["files"]["index"]["url"] = f"{base}/index_mtt.tsv"
    spec = validate(BenchmarkSpec, data, "mtat (local)")
    built = resolve_file(spec, "train", cache_dir=tmp_path)
    assert built.read_bytes() == (ref / "magnatagatune/train.npy").read_bytes()
    # a list missing one clip builds a different file: refused, nothing stored
    (root / "train_list_pub.cP").write_bytes(python2_pickle(names[1:]))
    built.unlink()
    with pytest.raises(MarbleEvalError, match="sha256 mismatch"):
        resolve_file(spec, "train", cache_dir=tmp_path)
    assert not built.exists()


def test_pickle_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    from marble_eval.datasets.sources.mtat_files import build_split_file

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "index.tsv").write_text("2\tf/a.mp3\n")
    with pytest.raises(MarbleEvalError, match=r"opcode .* is not allowed"):
        build_split_file(pickle.dumps(["f/a.npy", Payload()], protocol=0), tmp_path / "index.tsv", "list.cP")
    assert not marker.exists()
    with pytest.raises(MarbleEvalError, match="not a pickled list"):
        build_split_file(b"(lp1\nS'unterminated", tmp_path / "index.tsv", "list.cP")
