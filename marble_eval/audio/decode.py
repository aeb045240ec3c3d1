"""Decode, downmix, resample and cut audio into windows (soundfile, else PyAV; soxr)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from marble_eval.audio.decoders import SOUNDFILE, NativeDecoder, cut_short, decoder_errors, open_decoder
from marble_eval.errors import AudioError

MIN_TRAILING_SECONDS = 1.0  # a trailing window shorter than this is dropped (MARBLE v1)
FULL_WINDOW_TOLERANCE_SECONDS = 0.05  # drop_partial: a window this much short of full still counts as full
STREAM_BLOCK_SECONDS = 10.0  # native-rate seconds decoded per step when streaming
LOAD_BLOCK_SECONDS = 60.0    # the same when a whole file is loaded at once
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
    decoder: str = ""

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: Path) -> AudioInfo:
    """Read the header of ``path`` (libsndfile, else FFmpeg) or raise AudioError with the reason."""
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
        return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames), str(info.format), SOUNDFILE)
    except Exception:  # libsndfile refuses it: FFmpeg may read it
        pass
    decoder = _open(path)
    try:
        return AudioInfo(decoder.rate, decoder.channels, decoder.declared, path.suffix.lstrip(".").upper(),
                         decoder.name)
    finally:
        decoder.close()


def downmix(data: np.ndarray) -> np.ndarray:
    """[frames, channels] -> mono. Stereo is ``0.5 * (l + r)``: bitwise the samples of ``mean(axis=1)`` (one
    rounded float32 add, then an exact halving), without numpy's reduction machinery."""
    if data.shape[1] == 1:
        return data[:, 0]
    if data.shape[1] == 2:
        return 0.5 * (data[:, 0] + data[:, 1])
    return data.mean(axis=1)


class AudioStream:
    """Mono float32 chunks of ``path`` at ``sample_rate``, decoded in bounded blocks (iterate once).

    ``decoder`` names what decoded the file. Raises AudioError (one line naming the file) for
    missing, empty, corrupt, unsupported, NaN/Inf-containing, zero-length or visibly truncated
    audio, possibly after some chunks were yielded; a truncation message says how much was decoded.
    """

    def __init__(self, path: Path, sample_rate: int, max_seconds: float | None = None,
                 block_seconds: float = STREAM_BLOCK_SECONDS) -> None:
        self.path = Path(path)
        _check_file(self.path)
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.block_seconds = block_seconds
        self.decoder = ""
        self.native_rate = 0

    def native_blocks(self) -> Iterator[np.ndarray]:
        """[n, channels] float32 blocks at the file's own rate, checked for NaN/Inf and truncation."""
        path = self.path
        decoder = _open(path)
        self.decoder, self.native_rate = decoder.name, decoder.rate
        limit = -1 if self.max_seconds is None else int(round(self.max_seconds * decoder.rate))
        total = 0
        try:
            blocks = decoder.blocks(limit, max(1, int(self.block_seconds * decoder.rate)))
            while True:
                try:
                    data = next(blocks, None)
                except decoder_errors() as exc:
                    raise AudioError(f"{path}: {_decoded(total, decoder.rate)} then the decoder failed "
                                     f"({_reason(exc)}); not kept") from None
                if data is None:
                    break
                if not np.isfinite(data).all():
                    raise AudioError(f"{path}: contains NaN or Inf samples")
                total += len(data)
                yield data
        finally:
            decoder.close()
        if total == 0:
            raise AudioError(f"{path}: no audio samples")
        _check_complete(path, total, decoder.declared, limit, decoder.rate)

    def __iter__(self) -> Iterator[np.ndarray]:
        resampler = None
        for data in self.native_blocks():
            mono = downmix(data)
            if self.native_rate != self.sample_rate:
                if resampler is None:
                    resampler = soxr.ResampleStream(self.native_rate, self.sample_rate, 1, dtype="float32",
                                                    quality="HQ")
                mono = resampler.resample_chunk(np.ascontiguousarray(mono, dtype=np.float32))
            if len(mono):
                yield np.ascontiguousarray(mono, dtype=np.float32)
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if len(tail):
                yield np.ascontiguousarray(tail, dtype=np.float32)


def load_audio(path: Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate``, truncated to ``max_seconds`` (errors: AudioStream)."""
    stream = AudioStream(path, sample_rate, max_seconds, block_seconds=LOAD_BLOCK_SECONDS)
    mono = np.concatenate([downmix(block) for block in stream.native_blocks()])
    if stream.native_rate != sample_rate:
        mono = soxr.resample(mono, stream.native_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def stream_audio(path: Path, sample_rate: int, max_seconds: float | None = None,
                 block_seconds: float = STREAM_BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Decode ``path`` in bounded blocks: mono float32 chunks at ``sample_rate`` (same samples as load_audio).

    soxr's streaming resampler gives exactly the samples of a one-shot resample, so memory
    stays at one block however long the file is.
    """
    yield from AudioStream(path, sample_rate, max_seconds, block_seconds)


def stream_windows(path: Path | AudioStream, sample_rate: int, window_seconds: float,
                   max_seconds: float | None = None,
                   block_seconds: float = STREAM_BLOCK_SECONDS, drop_partial: bool = False) -> Iterator[np.ndarray]:
    """The windows of ``split_windows(load_audio(...))``, decoded and cut as the file streams in.

    With a window length, at most one window plus one block is held; whole-clip mode
    (``window_seconds <= 0``) necessarily holds the whole clip. ``path`` may be an AudioStream (its
    ``decoder`` then tells what decoded the file). ``drop_partial``: only full windows (see
    ``is_full_window``), as GiantSteps' 30-s clips in MARBLE v1.
    """
    chunks = path if isinstance(path, AudioStream) else AudioStream(path, sample_rate, max_seconds, block_seconds)
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
    if drop_partial:
        if is_full_window(len(tail), size, sample_rate):
            yield tail
    elif emitted == 0 or len(tail) >= MIN_TRAILING_SECONDS * sample_rate:
        yield tail


def is_full_window(n_samples: int, size: int, sample_rate: int) -> bool:
    """Whether a window of ``n_samples`` counts as full when partial windows are dropped: at most
    ``FULL_WINDOW_TOLERANCE_SECONDS`` short (MARBLE v1 keeps the GiantSteps clips that decode a few
    milliseconds under 30 s)."""
    return n_samples >= size - FULL_WINDOW_TOLERANCE_SECONDS * sample_rate


def split_windows(wave: np.ndarray, sample_rate: int, window_seconds: float) -> list[np.ndarray]:
    """Non-overlapping windows of ``window_seconds`` (0 = the whole clip as one window).

    A trailing window under 1 s is dropped unless it is the only one (``stream_windows`` cuts the same
    windows as the file streams in).
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


def _decoded(frames: int, rate: int) -> str:
    return f"decoded {frames / rate:.1f} s" if rate else "decoded nothing"


def _check_complete(path: Path, decoded: int, declared: int, limit: int, rate: int) -> None:
    """Refuse a file the bytes show to be cut short (truncated download or copy): it decodes to much less
    than its header states, or (decoded to its end) its own structure shows a cut (decoders.cut_short). The message says how much
    was decoded and that the item is not kept."""
    expected = declared if limit < 0 else min(declared, limit)
    if 0 < expected and decoded < TRUNCATION_TOLERANCE * expected:
        raise AudioError(f"{path}: truncated ({_decoded(decoded, rate)} of the {declared / rate:.1f} s its header "
                         f"states); not kept")
    if limit < 0 or decoded < limit:
        cut = cut_short(path)
        if cut is not None:
            raise AudioError(f"{path}: truncated ({cut}; {_decoded(decoded, rate)}); not kept")


def _open(path: Path) -> NativeDecoder:
    try:
        return open_decoder(path)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"{path}: unreadable audio ({_reason(exc)})") from None


# libsndfile's text for a file it cannot parse at all (the file exists: _check_file ran first).
_MISLEADING = "File does not exist or is not a regular file"


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    if _MISLEADING in text:
        return "not a decodable audio file: corrupt, truncated or an unsupported codec"
    return text.replace(str(Path.cwd()), ".")[:200]
