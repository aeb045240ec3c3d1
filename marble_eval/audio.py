"""Decode, downmix, resample and cut audio into windows (soundfile + soxr)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from marble_eval.errors import AudioError

MIN_TRAILING_SECONDS = 1.0  # a trailing window shorter than this is dropped (MARBLE v1)


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
            native_rate = int(handle.samplerate)
            limit = -1 if max_seconds is None else int(round(max_seconds * native_rate))
            data = handle.read(frames=limit, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: unreadable audio ({_reason(exc)})") from None
    if data.size == 0:
        raise AudioError(f"{path}: no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or Inf samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if native_rate != sample_rate:
        mono = soxr.resample(mono, native_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


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
    # libsndfile reports a 0-byte file as "does not exist": give the real reason.
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return text.replace(str(Path.cwd()), ".")[:200]
