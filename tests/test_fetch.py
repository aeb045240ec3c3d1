"""`marble-eval data fetch` and marble_eval.datasets.fetch against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path
from typing import Iterator

import pytest

from marble_eval.datasets.fetch import Download, fetch_all, md5_file, mirrored
from marble_eval.errors import MarbleEvalError
from tests.test_datasets_cli import cli, reference_root

GS_FILES = ("giantsteps-mtg-key-dataset/annotations/annotations.txt",
            "giantsteps-mtg-key-dataset/annotations/beatport_metadata.txt", "jukemir_giantsteps_clips.json.gz")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder): a threaded HTTP server on a free port, shut down when the test ends."""
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/files", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def serve(served: Path, name: str, data: bytes) -> None:
    (served / "files").mkdir(exist_ok=True)
    (served / "files" / name).write_bytes(data)


def test_fetch_verifies_md5_reports_failures_and_resumes(server, tmp_path: Path) -> None:
    base, served = server
    good = {f"audio/{n}.LOFI.mp3": f"preview {n}".encode() * 50 for n in (1, 2)}
    for path, data in good.items():
        serve(served, path.rsplit("/", 1)[-1], data)
    serve(served, "3.LOFI.mp3", b"not what was published")
    downloads = [Download(f"http://unreachable.invalid/x/{p.rsplit('/', 1)[-1]}", p, md5(d)) for p, d in good.items()]
    downloads += [Download("http://unreachable.invalid/x/3.LOFI.mp3", "audio/3.LOFI.mp3", md5(b"the published bytes")),
                  Download("http://unreachable.invalid/x/4.LOFI.mp3", "audio/4.LOFI.mp3", md5(b"gone"))]
    output = tmp_path / "out"
    done = []
    report = fetch_all(downloads, output, base_url=base, jobs=2, on_done=lambda: done.append(1))
    assert sorted(report.fetched) == sorted(good) and report.present == []
    failed = dict(report.failed)
    assert set(failed) == {"audio/3.LOFI.mp3", "audio/4.LOFI.mp3"}
    assert "md5 mismatch" in failed["audio/3.LOFI.mp3"] and "HTTP 404" in failed["audio/4.LOFI.mp3"]
    assert len(done) == 4
    for path, data in good.items():
        assert (output / path).read_bytes() == data
    # nothing half-written stays behind: no failed file, no temporary
    assert sorted(p.name for p in (output / "audio").iterdir()) == ["1.LOFI.mp3", "2.LOFI.mp3"]

    (output / "audio/2.LOFI.mp3").write_bytes(b"truncated")  # a damaged copy is fetched again
    again = fetch_all(downloads[:2], output, base_url=base)
    assert again.present == ["audio/1.LOFI.mp3"] and again.fetched == ["audio/2.LOFI.mp3"] and not again.failed
    assert md5_file(output / "audio/2.LOFI.mp3") == md5(good["audio/2.LOFI.mp3"])


def test_fetch_refuses_paths_leaving_the_output_and_reports_dead_hosts(tmp_path: Path) -> None:
    downloads = [Download("http://127.0.0.1:9/a.mp3", "../a.mp3", md5(b"")),
                 Download("http://127.0.0.1:9/b.mp3", "b.mp3", md5(b"x"))]  # port 9 (discard): refused
    report = fetch_all(downloads, tmp_path / "out", timeout=5)
    failed = dict(report.failed)
    assert "leads out of the output folder" in failed["../a.mp3"]
    assert "cannot download" in failed["b.mp3"]
    assert not (tmp_path / "a.mp3").exists()
    with pytest.raises(MarbleEvalError, match="--jobs 0"):
        fetch_all(downloads, tmp_path / "out", jobs=0)


def test_mirrored_keeps_the_file_name() -> None:
    url = "http://www.cp.jku.at/datasets/giantsteps/mtg_key_backup/299547.LOFI.mp3"
    assert mirrored(url, None) == url
    assert mirrored(url, "http://127.0.0.1:8000/m/") == "http://127.0.0.1:8000/m/299547.LOFI.mp3"


def gs_reference_with_assets(tmp_path: Path, assets: dict) -> tuple[Path, Path]:
    """(reference dir, YAML): the real GiantSteps files, with ``assets`` as the assets json (YAML hash updated)."""
    real = reference_root() / "giantsteps"
    root = tmp_path / "reference"
    for relative in GS_FILES:
        (root / "giantsteps" / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real / relative, root / "giantsteps" / relative)
    data = json.dumps(assets).encode()
    (root / "giantsteps/marble_giantsteps_assets.json").write_bytes(data)
    yaml_text = (Path(__file__).resolve().parents[1] / "benchmarks/gs-key.yaml").read_text()
    real_sha = hashlib.sha256((real / "marble_giantsteps_assets.json").read_bytes()).hexdigest()
    yaml = tmp_path / "gs-key.yaml"
    yaml.write_text(yaml_text.replace(real_sha, hashlib.sha256(data).hexdigest()))
    return root, yaml


def test_data_fetch_gs_key_downloads_the_listed_previews(server, tmp_path: Path, capsys, monkeypatch) -> None:
    base, served = server
    real_assets = json.loads((reference_root() / "giantsteps/marble_giantsteps_assets.json").read_text())
    assets = {}
    payload = {}
    for name, asset in real_assets.items():
        track = name.rsplit("_", 1)[-1]
        payload[name] = f"mp3 of {track}".encode()
        assets[name] = {**asset, "checksum": md5(payload[name])}
    root, yaml = gs_reference_with_assets(tmp_path, assets)
    monkeypatch.setenv("MARBLE_EVAL_REFERENCE_DIR", str(root))
    monkeypatch.setenv("MARBLE_EVAL_FETCH_BASE_URL", base)
    output = tmp_path / "gs"
    # first pass: learn which six previews --limit 2 needs; serve four, one wrong, leave one missing
    code, out, _ = cli(["data", "fetch", str(yaml), "--output", str(output), "--limit", "2"], capsys)
    assert code == 1 and "0 downloaded, 0 already present, 6 failed" in out
    wanted = sorted(line.split(": ", 2)[1] for line in out.splitlines() if line.startswith("failed: "))
    assert len(wanted) == 6 and all(path.startswith("audio/") and path.endswith(".LOFI.mp3") for path in wanted)
    names = {asset["path_rel"].rsplit("/", 1)[-1]: name for name, asset in assets.items()}
    files = [path.rsplit("/", 1)[-1] for path in wanted]
    for file in files[:4]:
        serve(served, file, payload[names[file]])
    serve(served, files[4], b"tampered")
    code, out, _ = cli(["data", "fetch", str(yaml), "--output", str(output), "--limit", "2", "--jobs", "3"], capsys)
    assert code == 1 and "4 downloaded, 0 already present, 2 failed" in out
    assert f"failed: audio/{files[4]}: md5 mismatch" in out and f"failed: audio/{files[5]}: HTTP 404" in out
    serve(served, files[4], payload[names[files[4]]])
    serve(served, files[5], payload[names[files[5]]])
    code, out, _ = cli(["data", "fetch", str(yaml), "--output", str(output), "--limit", "2"], capsys)
    assert code == 0 and "2 downloaded, 4 already present, 0 failed" in out
    assert sorted(p.name for p in (output / "audio").iterdir()) == sorted(files)


def test_data_fetch_refuses_datasets_without_published_urls(capsys) -> None:
    code, _, err = cli(["data", "fetch", "mtg-top50", "--output", "/nonexistent", "--limit", "1",
                        "--reference-dir", str(reference_root())], capsys)
    assert code == 2 and "cannot download its audio" in err and "audio-low" in err
