"""Decode, downmix, resample and cut audio into windows (soundfile + soxr)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from marble_eval.errors import AudioError

MIN_TRAILING_SECONDS = 1.0  # a trailing window shorter than this is dropped (MARBLE v1)
STREAM_BLOCK_SECONDS = 10.0  # native-rate seconds decoded per step when streaming
# A file that decodes to less than this fraction of the length its header declares is truncated.
# (Not 1.0: a VBR MP3 without a Xing header only has an estimated length.)
TRUNCATION_TOLERANCE = 0.9


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file."""

    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


class ForwardSoundFile(sf.SoundFile):
    """A SoundFile read strictly forward: ``seekable()`` is False, so python-soundfile does not seek
    to the current position after every read. libsndfile's MP3 decoder loses its bit reservoir on
    any seek (about 2 corrupt frames per block); read forward, blocks join into exactly the samples
    of one whole-file read."""

    def seekable(self) -> bool:
        return False


def audio_info(path: Path) -> AudioInfo:
    """Read the header of ``path`` or raise AudioError with the reason."""
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types with the reason in the text
        raise AudioError(f"{path}: unreadable audio ({_reason(exc)})") from None
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames), str(info.format))


def load_audio(path: Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate``, truncated to ``max_seconds``.

    Raises AudioError (one line naming the file) for missing, empty, corrupt, unsupported,
    NaN/Inf-containing or zero-length audio.
    """
    path = Path(path)
    _check_file(path)
    try:
        with sf.SoundFile(str(path)) as handle:
            native_rate, declared = int(handle.samplerate), int(handle.frames)
            limit = -1 if max_seconds is None else int(round(max_seconds * native_rate))
            data = handle.read(frames=limit, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: unreadable audio ({_reason(exc)})") from None
    if data.size == 0:
        raise AudioError(f"{path}: no audio samples")
    _check_complete(path, len(data), declared, limit)
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or Inf samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if native_rate != sample_rate:
        mono = soxr.resample(mono, native_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def stream_audio(path: Path, sample_rate: int, max_seconds: float | None = None,
                 block_seconds: float = STREAM_BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Decode ``path`` in bounded blocks: mono float32 chunks at ``sample_rate`` (same samples as load_audio).

    soxr's streaming resampler gives exactly the samples of a one-shot resample, so memory
    stays at one block however long the file is. Raises AudioError like load_audio, possibly
    after some chunks were yielded (e.g. NaN samples deep into a file).
    """
    path = Path(path)
    _check_file(path)
    try:
        handle = ForwardSoundFile(str(path))
    except Exception as exc:
        raise AudioError(f"{path}: unreadable audio ({_reason(exc)})") from None
    with handle:
        native_rate, declared = int(handle.samplerate), int(handle.frames)
        limit = -1 if max_seconds is None else int(round(max_seconds * native_rate))
        remaining = None if max_seconds is None else int(round(max_seconds * native_rate))
        resampler = soxr.ResampleStream(native_rate, sample_rate, 1, dtype="float32", quality="HQ") \
            if native_rate != sample_rate else None
        blocksize = max(1, int(block_seconds * native_rate))
        total = 0
        while remaining is None or remaining > 0:
            try:
                data = handle.read(blocksize if remaining is None else min(blocksize, remaining),
                                   dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioError(f"{path}: unreadable audio ({_reason(exc)})") from None
            if data.size == 0:
                break
            if not np.isfinite(data).all():
                raise AudioError(f"{path}: contains NaN or Inf samples")
            total += len(data)
            if remaining is not None:
                remaining -= len(data)
            mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
            if resampler is not None:
                mono = resampler.resample_chunk(np.ascontiguousarray(mono, dtype=np.float32))
            if len(mono):
                yield np.ascontiguousarray(mono, dtype=np.float32)
        if total == 0:
            raise AudioError(f"{path}: no audio samples")
        _check_complete(path, total, declared, limit)
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if len(tail):
                yield np.ascontiguousarray(tail, dtype=np.float32)


def stream_windows(path: Path, sample_rate: int, window_seconds: float, max_seconds: float | None = None,
                   block_seconds: float = STREAM_BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """The windows of ``split_windows(load_audio(...))``, decoded and cut as the file streams in.

    With a window length, at most one window plus one block is held; whole-clip mode
    (``window_seconds <= 0``) necessarily holds the whole clip.
    """
    chunks = stream_audio(path, sample_rate, max_seconds, block_seconds)
    if window_seconds <= 0:
        yield np.concatenate(list(chunks))
        return
    size = int(round(window_seconds * sample_rate))
    pending: list[np.ndarray] = []
    held = 0
    emitted = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        # keep one full window back until more audio arrives: a clip of exactly one window stays whole
        while held > size:
            joined = np.concatenate(pending)
            yield joined[:size].copy()
            emitted += 1
            pending, held = [joined[size:]], held - size
    if held == 0:
        return
    tail = np.concatenate(pending)
    if emitted == 0 or len(tail) >= MIN_TRAILING_SECONDS * sample_rate:
        yield tail


def split_windows(wave: np.ndarray, sample_rate: int, window_seconds: float) -> list[np.ndarray]:
    """Non-overlapping windows of ``window_seconds`` (0 = the whole clip as one window).

    A trailing window under 1 s is dropped unless it is the only one.
    """
    if window_seconds <= 0 or len(wave) <= int(round(window_seconds * sample_rate)):
        return [wave]
    size = int(round(window_seconds * sample_rate))
    windows = [wave[start:start + size] for start in range(0, len(wave), size)]
    if len(windows[-1]) < MIN_TRAILING_SECONDS * sample_rate:
        windows.pop()
    return windows


def normalize(wave: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Zero mean, unit variance per input (Wav2Vec2FeatureExtractor's do_normalize formula)."""
    wave = wave.astype(np.float32, copy=False)
    return (wave - wave.mean()) / np.sqrt(wave.var() + eps)


def _check_file(path: Path) -> None:
    # libsndfile reports a 0-byte file as "does not exist": give the real reason. Only a regular file
    # is refused for its size: a FIFO (or other stream) has none and is opened like any file.
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.is_file() and path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")


def _check_complete(path: Path, decoded: int, declared: int, limit: int) -> None:
    """Refuse a file that decodes to much less than its header declares (truncated download or copy)."""
    expected = declared if limit < 0 else min(declared, limit)
    if 0 < expected and decoded < TRUNCATION_TOLERANCE * expected:
        raise AudioError(f"{path}: truncated (decoded {decoded} of the {declared} samples its header declares)")


# libsndfile's text for a file it cannot parse at all (the file exists: _check_file ran first).
_MISLEADING = "File does not exist or is not a regular file"


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    if _MISLEADING in text:
        return "not a decodable audio file: corrupt, truncated or an unsupported codec"
    return text.replace(str(Path.cwd()), ".")[:200]
