"""Native-rate decoders: libsndfile (soundfile) first, PyAV (FFmpeg) for every format libsndfile refuses.

A decoder yields float32 blocks [frames, channels] at the file's own rate, strictly forward, and
says how long the file claims to be (``declared``, 0 when it does not say) and what it is
(``name``, recorded in the item's cache stamp).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import soundfile as sf

from marble_eval.errors import AudioError

SOUNDFILE = f"libsndfile {sf.__libsndfile_version__}"


class NativeDecoder(Protocol):
    """What audio.py needs from a decoder."""

    name: str
    rate: int
    channels: int
    declared: int  # frames the file states it holds (0: unknown)

    def blocks(self, limit: int, block_frames: int) -> Iterator[np.ndarray]:
        """[n, channels] float32 blocks, at most ``limit`` frames in all (-1: to the end)."""

    def close(self) -> None:
        """Release the file."""


class _ForwardSoundFile(sf.SoundFile):
    """A SoundFile read strictly forward: ``seekable()`` is False, so python-soundfile does not seek
    to the current position after every read. libsndfile's MP3 decoder loses its bit reservoir on
    any seek (about 2 corrupt frames per block); read forward, blocks join into exactly the samples
    of one whole-file read."""

    def seekable(self) -> bool:
        return False


class SoundFileDecoder:
    """libsndfile: WAV, AIFF, FLAC, OGG/Vorbis, most Opus, MP3, AU."""

    name = SOUNDFILE

    def __init__(self, path: Path) -> None:
        self.handle = _ForwardSoundFile(str(path))
        self.rate, self.channels = int(self.handle.samplerate), int(self.handle.channels)
        self.declared = int(self.handle.frames)

    def blocks(self, limit: int, block_frames: int) -> Iterator[np.ndarray]:
        remaining = limit
        while remaining != 0:
            size = block_frames if remaining < 0 else min(block_frames, remaining)
            data = self.handle.read(size, dtype="float32", always_2d=True)
            if data.size == 0:
                return
            remaining = remaining - len(data) if remaining > 0 else remaining
            yield data

    def close(self) -> None:
        self.handle.close()


class PyAVDecoder:
    """FFmpeg through PyAV (its wheels bundle FFmpeg): m4a/AAC, webm/Opus, and whatever else FFmpeg reads."""

    def __init__(self, path: Path) -> None:
        import av

        self._av = av
        self.name = f"pyav {av.__version__} (FFmpeg {getattr(av, 'ffmpeg_version_info', '?')})"
        self.container = av.open(str(path), metadata_errors="ignore")
        if not self.container.streams.audio:
            self.container.close()
            raise AudioError(f"{path}: no audio stream")
        self.stream = self.container.streams.audio[0]
        context = self.stream.codec_context
        self.rate = int(context.sample_rate or self.stream.rate or 0)
        self.channels = int(context.layout.nb_channels) if context.layout else 1
        if self.rate <= 0:
            self.container.close()
            raise AudioError(f"{path}: no sample rate in the audio stream")
        self.declared = self._declared_frames()

    def _declared_frames(self) -> int:
        stream = self.stream
        if stream.duration and stream.time_base:
            return int(round(float(stream.duration * stream.time_base) * self.rate))
        if self.container.duration:
            return int(round(self.container.duration / self._av.time_base * self.rate))
        return 0

    def blocks(self, limit: int, block_frames: int) -> Iterator[np.ndarray]:
        resampler = self._av.AudioResampler(format="fltp", layout=self.stream.codec_context.layout or "mono",
                                            rate=self.rate)
        pending: list[np.ndarray] = []
        held, remaining = 0, limit
        for packet in self.container.demux(self.stream):
            for frame in packet.decode():
                for converted in resampler.resample(frame):
                    data = converted.to_ndarray().T  # [n, channels]
                    if remaining >= 0:
                        data = data[:remaining]
                        remaining -= len(data)
                    pending.append(data)
                    held += len(data)
            if held >= block_frames or remaining == 0:
                yield np.ascontiguousarray(np.concatenate(pending), dtype=np.float32)
                pending, held = [], 0
            if remaining == 0:
                return
        if pending:
            yield np.ascontiguousarray(np.concatenate(pending), dtype=np.float32)

    def close(self) -> None:
        self.container.close()


def decoder_errors() -> tuple[type[BaseException], ...]:
    """Exception types a decoder raises for bad input (the reason is in their text)."""
    import av

    return (sf.LibsndfileError, RuntimeError, ValueError, OSError, av.FFmpegError, EOFError)


class DecodersRefused(Exception):
    """Neither libsndfile nor FFmpeg could open a file; the text gives both reasons."""


def open_decoder(path: Path) -> NativeDecoder:
    """soundfile when libsndfile opens ``path``, else PyAV; DecodersRefused (both reasons) when neither can."""
    try:
        return SoundFileDecoder(path)
    except Exception as first:  # libsndfile raises several types, the reason in the text
        try:
            return PyAVDecoder(path)
        except AudioError:
            raise
        except Exception as second:
            raise DecodersRefused(f"libsndfile: {_last_line(first)}; FFmpeg: {_last_line(second)}") from None


def _last_line(exc: Exception) -> str:
    """The reason alone: the last line, without the file name or errno the libraries prefix."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    text = re.sub(r"^Error opening '.*?': |^\[Errno -?\d+\] ", "", text.splitlines()[-1])
    return re.sub(r": '[^']*'$", "", text).rstrip(". ")


def cut_short(path: Path) -> str | None:
    """Why a regular file's own structure shows it was cut short, or None. Ogg: the last page runs past the
    end of the file, or lacks the end-of-stream flag. WAV/AIFF: a chunk (the sample data) states more bytes
    than the file holds. Other formats, and streams, show nothing here (docs/reliability.md)."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as handle:
        magic = handle.read(12)
    if magic[:4] == b"OggS":
        return _ogg_cut_short(path)
    if magic[:4] == b"RIFF" and magic[8:12] == b"WAVE":
        return _chunks_cut_short(path, "little", "WAV")
    if magic[:4] == b"FORM" and magic[8:12] in (b"AIFF", b"AIFC"):
        return _chunks_cut_short(path, "big", "AIFF")
    return None


def _chunks_cut_short(path: Path, order: str, kind: str) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        position = 12
        while position + 8 <= size:
            handle.seek(position)
            header = handle.read(8)
            length = int.from_bytes(header[4:8], order)
            if length == 0xFFFFFFFF or (length == 0 and header[:4] == b"data"):
                return None  # a streamed WAV leaves its size open: nothing to compare with
            end = position + 8 + length
            if end > size:
                return (f"its {kind} {header[:4].decode('latin-1').strip()!r} chunk states {length} bytes, the file "
                        f"holds {size - position - 8}")
            position = end + (length & 1)
    return None


def _ogg_cut_short(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        position, last_flags = 0, None
        while position < size:
            handle.seek(position)
            header = handle.read(27)
            if len(header) < 27 or header[:4] != b"OggS":
                return f"the Ogg page at byte {position} is cut off or damaged (file ends at byte {size})"
            segments = handle.read(header[26])
            if len(segments) < header[26]:
                return f"the Ogg page at byte {position} is cut off (file ends at byte {size})"
            end = position + 27 + header[26] + sum(segments)
            if end > size:
                return f"the last Ogg page (byte {position}) runs to byte {end}, past the file's end at byte {size}"
            position, last_flags = end, header[5]
    if last_flags is not None and not last_flags & 0x04:
        return "the last Ogg page does not end the stream (no end-of-stream flag): the file stops mid-stream"
    return None
