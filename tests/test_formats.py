"""Every format users have: libsndfile first, PyAV (FFmpeg) for what it refuses; cut or corrupt files are one
line per item, and a truncated file is flagged with what was decoded (issue #24, issue #21 item 8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from marble_eval.audio.decode import audio_info, downmix, load_audio, stream_audio
from marble_eval.audio.decoders import SOUNDFILE
from marble_eval.cli import main
from marble_eval.errors import AudioError

av = pytest.importorskip("av")

SECONDS = 2.0


def tone(rate: int, seconds: float = SECONDS, channels: int = 2) -> np.ndarray:
    """[channels, frames] float32: two different tones plus a little noise."""
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(rate)
    waves = [0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.02 * rng.standard_normal(len(t)) for c in range(channels)]
    return np.stack(waves).astype(np.float32)


def encode_av(path: Path, codec: str, rate: int, container: str | None = None) -> Path:
    """Write ``path`` with FFmpeg's ``codec`` (PyAV), stereo, SECONDS long."""
    samples = tone(rate)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        resampler = av.AudioResampler(format=stream.codec_context.format, layout="stereo", rate=rate)
        step = stream.codec_context.frame_size or 1024
        for start in range(0, samples.shape[1], step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + step]), format="fltp",
                                               layout="stereo")
            frame.sample_rate = rate
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    out.mux(packet)
        for converted in resampler.resample(None):
            for packet in stream.encode(converted):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def make_formats(folder: Path) -> dict[str, Path]:
    """One file per format: m4a (AAC), webm (Opus), .opus (Ogg Opus), AIFF, 96 kHz/24-bit WAV."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"m4a": encode_av(folder / "song.m4a", "aac", 44100, "mp4"),
             "webm": encode_av(folder / "song.webm", "libopus", 48000, "webm"),
             "opus": encode_av(folder / "song.opus", "libopus", 48000, "ogg")}
    sf.write(folder / "song.aiff", tone(44100).T, 44100, format="AIFF", subtype="PCM_16")
    sf.write(folder / "song96.wav", tone(96000).T, 96000, subtype="PCM_24")
    files["aiff"], files["wav96"] = folder / "song.aiff", folder / "song96.wav"
    return files


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> dict[str, Path]:
    return make_formats(tmp_path_factory.mktemp("formats"))


def test_the_stereo_downmix_is_bitwise_the_mean() -> None:
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.standard_normal((20000, 2)).astype(np.float32),
                           np.array([[3.4e38, -3.4e38], [1e-45, -1e-45], [1e-38, 3e-39], [0.1, 0.2]], np.float32)])
    assert np.array_equal(downmix(data), data.mean(axis=1))
    assert downmix(data).tobytes() == data.mean(axis=1).tobytes()
    three = rng.standard_normal((100, 3)).astype(np.float32)
    assert np.array_equal(downmix(three), three.mean(axis=1))
    assert np.array_equal(downmix(three[:, :1]), three[:, 0])


@pytest.mark.parametrize("kind", ["m4a", "webm", "opus", "aiff", "wav96"])
def test_each_format_decodes_to_its_length(formats, kind) -> None:
    path = formats[kind]
    info = audio_info(path)
    assert info.channels == 2 and info.seconds == pytest.approx(SECONDS, abs=0.1)
    wave = load_audio(path, 24000)
    assert len(wave) == pytest.approx(SECONDS * 24000, abs=0.06 * 24000)
    assert 0.1 < float(np.std(wave)) < 0.5  # the tones, not silence or noise
    streamed = np.concatenate(list(stream_audio(path, 24000, block_seconds=0.25)))
    np.testing.assert_allclose(streamed, wave, atol=1e-6)
    refused_by_libsndfile = kind in ("m4a", "webm")
    assert (info.decoder == SOUNDFILE) != refused_by_libsndfile


def cut(path: Path, fraction: float = 0.3) -> Path:
    target = path.with_name(f"cut-{path.name}")
    data = path.read_bytes()
    target.write_bytes(data[:int(len(data) * fraction)])
    return target


def test_an_ogg_cut_to_30_percent_is_flagged_with_what_was_decoded(tmp_path) -> None:
    full = tmp_path / "song.ogg"
    sf.write(full, tone(44100, seconds=6.0).T, 44100, format="OGG", subtype="VORBIS")
    short = cut(full)
    assert sf.info(str(short)).frames > 0  # libsndfile alone sees a shorter, valid-looking file
    with pytest.raises(AudioError, match=r"cut-song\.ogg: truncated \(the last Ogg page .*decoded \d+\.\d s\); "
                                         r"not kept"):
        load_audio(short, 24000)
    with pytest.raises(AudioError, match="truncated"):
        list(stream_audio(short, 24000))
    assert len(load_audio(full, 24000)) == 6 * 24000
    assert len(load_audio(short, 24000, max_seconds=0.5)) == 12000  # the part asked for is whole


def write_manifest(folder: Path, files: list[Path]) -> Path:
    rows = "".join(f"{path.name},{split},{'rock' if index % 2 else 'jazz'}\n"
                   for index, (path, split) in enumerate(zip(files, ["train", "train", "valid", "test", "test"] * 3)))
    (folder / "m.csv").write_text("path,split,labels\n" + rows)
    yaml_path = folder / "mine.yaml"
    yaml_path.write_text("name: mine\nversion: '1'\ntask: multilabel\nsource: manifest\noptions: {manifest: m.csv}\n"
                         "vocabulary: {rule: top_n, n: 2}\n")
    return yaml_path


def test_every_format_passes_data_check_and_extract(formats, tiny_mert_dirs, tmp_path, capsys) -> None:
    audio = formats["m4a"].parent
    yaml_path = write_manifest(tmp_path, list(formats.values()))
    assert main(["data", "check", str(yaml_path), "--data-dir", str(audio)]) == 0
    assert "5 of 5 items OK" in capsys.readouterr().out
    code = main(["extract", "--model", str(tiny_mert_dirs["safetensors"]), "--dataset", str(yaml_path),
                 "--data-dir", str(audio), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0
    shards = list((tmp_path / "cache").rglob("shard-*.npz"))
    decoders = {}
    for shard in shards:
        with np.load(shard) as data:
            decoders.update(zip(data["ids"].tolist(), data["audio_decoder"].tolist()))
    assert sorted(decoders) == sorted(path.name for path in formats.values())
    assert decoders["song.m4a"].startswith("pyav") and decoders["song.webm"].startswith("pyav")
    assert decoders["song.aiff"] == SOUNDFILE and decoders["song96.wav"] == SOUNDFILE


def test_a_corrupt_file_of_each_format_is_one_line_per_item(formats, tiny_mert_dirs, tmp_path, capsys) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    bad = []
    for path in formats.values():
        bad.append(cut(path))
        garbage = folder / f"garbage-{path.name}"
        garbage.write_bytes(path.read_bytes()[:64] + np.random.default_rng(1).bytes(4000))
        bad.append(garbage)
    bad = [path.rename(folder / path.name) if path.parent != folder else path for path in bad]
    yaml_path = write_manifest(tmp_path, bad)
    assert main(["data", "check", str(yaml_path), "--data-dir", str(folder)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    corrupt = [line for line in lines if line.startswith("corrupt: ")]
    assert sorted(Path(line.split(" ")[1]).name for line in corrupt) == sorted(path.name for path in bad)
    assert lines[-1] == f"mine: 0 of {len(bad)} items OK, 0 missing, {len(bad)} corrupt"
    cut_lines = [line for line in corrupt if "/cut-song." in line]
    assert cut_lines and all("truncated" in line or "unreadable" in line or "decoder failed" in line
                             for line in cut_lines)
    code = main(["extract", "--model", str(tiny_mert_dirs["safetensors"]), "--dataset", str(yaml_path),
                 "--data-dir", str(folder), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 3  # nothing extracted
    failures = json.loads(next((tmp_path / "cache").rglob("failures.json")).read_text())
    assert sorted(failures) == sorted(path.name for path in bad)
    assert all("\n" not in failure["reason"] for failure in failures.values())
