"""Audio stage: decoding of every format, downmix, resampling, truncation, windows, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from marble_eval.audio.decode import load_audio, normalize, split_windows
from marble_eval.errors import AudioError

FORMATS = [("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")]


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_frequency(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("extension,subtype", FORMATS)
def test_every_format_decodes_resamples_and_keeps_the_pitch(tmp_path, extension, subtype):
    path = tmp_path / f"tone.{extension}"
    sf.write(path, _tone(440.0, 2.0, 44100), 44100, subtype=subtype)
    wave = load_audio(path, 24000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    # Lossy codecs add encoder delay/padding: length within 0.1 s, pitch within one FFT bin.
    assert abs(len(wave) - 48000) < 2400
    assert abs(_peak_frequency(wave, 24000) - 440.0) < 2.0


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = _tone(440, 1.0, 16000), _tone(1000, 1.0, 16000)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    wave = load_audio(tmp_path / "stereo.wav", 16000)
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-6)


def test_max_seconds_truncates_before_resampling(tmp_path):
    sf.write(tmp_path / "long.wav", _tone(220, 5.0, 16000), 16000)
    assert len(load_audio(tmp_path / "long.wav", 24000, max_seconds=2.0)) == 48000


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"this is not audio at all" * 40, "unreadable audio"),
])
def test_bad_files_raise_a_reason_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=reason) as error:
        load_audio(path, 24000)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_and_nan_audio_are_refused(tmp_path):
    with pytest.raises(AudioError, match="file not found"):
        load_audio(tmp_path / "nope.wav", 24000)
    wave = _tone(440, 0.5, 16000)
    wave[100] = np.nan
    sf.write(tmp_path / "nan.wav", wave, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(tmp_path / "nan.wav", 16000)


def test_windows_are_non_overlapping_and_drop_a_short_tail():
    rate = 1000
    wave = np.arange(12_500, dtype=np.float32)
    windows = split_windows(wave, rate, 5.0)
    assert [len(w) for w in windows] == [5000, 5000, 2500]
    np.testing.assert_array_equal(np.concatenate(windows), wave)
    # a 0.5 s tail is dropped ...
    assert [len(w) for w in split_windows(np.zeros(10_500), rate, 5.0)] == [5000, 5000]
    # ... unless it is the only window; 0 means the whole clip.
    assert [len(w) for w in split_windows(np.zeros(500), rate, 5.0)] == [500]
    assert [len(w) for w in split_windows(wave, rate, 0)] == [12_500]


def test_normalize_gives_zero_mean_unit_variance():
    wave = np.random.default_rng(0).normal(3.0, 5.0, 10_000).astype(np.float32)
    out = normalize(wave)
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-4


def test_a_named_pipe_is_a_stream_not_an_empty_file(tmp_path):
    """A FIFO has no size: it is opened and decoded (a WAV streams fine), never refused as "0 bytes"."""
    import os
    import threading

    from marble_eval.audio.decode import stream_windows

    source = tmp_path / "tone.wav"
    sf.write(source, _tone(440, 2.0, 16000), 16000, subtype="PCM_16")
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(source.read_bytes()))  # blocks until read
    writer.start()
    try:
        streamed = np.concatenate(list(stream_windows(fifo, 16000, 1.0)))
    finally:
        if writer.is_alive():  # the decode failed before opening: let the writer go
            with open(fifo, "rb") as handle:
                handle.read()
        writer.join(timeout=30)
    np.testing.assert_array_equal(streamed, load_audio(source, 16000))
