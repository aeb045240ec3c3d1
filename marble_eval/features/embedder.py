"""Batches of windows -> model outputs, keeping a GPU busy and surviving out-of-memory errors.

The decode workers hand over batches already normalised (``worker_preprocess``) and, on CUDA,
in pinned memory; the batch goes to the device with a non-blocking copy, and its outputs come
back through a non-blocking copy into pinned memory that is read one batch later, so the host
prepares batch k+1 while the device computes batch k. On an out-of-memory error the batch is
split in halves and retried; a single window that still does not fit fails its item, with a
hint, and the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from marble_eval.audio.decode import normalize
from marble_eval.features.windows import WindowBatch
from marble_eval.models.base import AudioEncoder

Preprocess = Callable[[np.ndarray], np.ndarray]


def worker_preprocess(model: Any) -> tuple[Preprocess | None, bool]:
    """(what the decode workers apply to each window, whether the main process must still preprocess).

    A model's ``preprocess`` is matched by what it does to a probe signal: none (identity) or the
    Wav2Vec2 normalisation run in the workers (a plain function, picklable for any start method);
    anything else stays in the main process, as before. Objects that are not AudioEncoders
    preprocess inside their own ``embed_windows``.
    """
    if not isinstance(model, AudioEncoder):
        return None, False
    probe = (0.1 * np.random.default_rng(0).standard_normal(4000) + 0.05).astype(np.float32)
    out = np.asarray(model.preprocess(probe.copy()))
    if out.dtype == np.float32 and np.array_equal(out, probe):
        return None, False
    if out.dtype == np.float32 and np.array_equal(out, normalize(probe)):
        return normalize, False
    return None, True


def oom_hint(seconds: float, device: torch.device) -> str:
    """The failure of one window that does not fit even alone."""
    return (f"one {seconds:.1f} s window does not fit in {device} memory even alone; extract with a shorter "
            f"--window-seconds (or cap clips with --max-seconds)")


@dataclass
class Embedded:
    """One batch's outputs: ``batch`` keeps the rows that were embedded (failed rows moved to its ``failed``)."""

    batch: WindowBatch
    states: np.ndarray   # [B, L, D] float32
    frames: np.ndarray   # [B]


@dataclass
class _Part:
    rows: range
    states: Any = None              # np.ndarray, or a pinned host tensor still being filled
    event: Any = None               # the CUDA event that marks the copy done
    frames: np.ndarray | None = None


@dataclass
class _InFlight:
    batch: WindowBatch
    parts: list[_Part] = field(default_factory=list)
    failed_rows: list[int] = field(default_factory=list)


class BatchEmbedder:
    """Embeds WindowBatches; on CUDA ``submit`` returns the previous batch's outputs (one batch late) and
    ``drain`` the last one's.

    ``forward_hook`` (tests) is called with each forward's input before the model runs.
    """

    def __init__(self, model: Any, batch_size: int, preprocess_in_main: bool = False,
                 forward_hook: Callable[[torch.Tensor], None] | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        self.preprocess_in_main = preprocess_in_main
        self.forward_hook = forward_hook
        self.device = torch.device(getattr(model, "device", "cpu"))
        self.encoder = isinstance(model, AudioEncoder)
        self.cuda = self.device.type == "cuda"
        self.splits = 0        # batches split after an out-of-memory error
        self._pending: _InFlight | None = None

    def submit(self, batch: WindowBatch) -> Embedded | None:
        """Start ``batch``; on CUDA return the outputs of the batch submitted before it (None for the first), so
        the device computes while the caller handles them. Elsewhere the forward is synchronous and there is
        nothing to overlap: the outputs of ``batch`` itself (a stalled next decode never holds them back)."""
        current = self._launch(batch)
        if not self.cuda:
            return self._finish(current)
        previous, self._pending = self._pending, current
        return self._finish(previous) if previous is not None else None

    def drain(self) -> Embedded | None:
        """The outputs of the last submitted batch."""
        previous, self._pending = self._pending, None
        return self._finish(previous) if previous is not None else None

    # -- launching ---------------------------------------------------------------------------
    def _launch(self, batch: WindowBatch) -> _InFlight:
        flight = _InFlight(batch)
        if not batch.keys:
            return flight
        waves = batch.waves
        if self.preprocess_in_main:
            waves = torch.from_numpy(np.stack([self.model.preprocess(row) for row in waves.numpy()]))
        self._launch_rows(waves, range(len(batch.keys)), flight)
        return flight

    def _launch_rows(self, waves: torch.Tensor, rows: range, flight: _InFlight) -> None:
        try:
            flight.parts.append(self._forward(waves[rows.start:rows.stop], rows))
        except torch.OutOfMemoryError:
            self._release()
            if len(rows) == 1:
                flight.failed_rows.append(rows.start)
                return
            self.splits += 1
            middle = len(rows) // 2
            self._launch_rows(waves, rows[:middle], flight)
            self._launch_rows(waves, rows[middle:], flight)

    def _release(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()

    def _forward(self, waves: torch.Tensor, rows: range) -> _Part:
        if self.forward_hook is not None:
            self.forward_hook(waves)
        if not self.encoder:  # wrappers and test doubles: their own embed_windows, one call per batch
            states, frames = self.model.embed_windows(list(waves.numpy()), batch_size=max(self.batch_size, len(rows)))
            return _Part(rows, states, frames=frames)
        frames = np.full(len(rows), self.model.n_frames(waves.shape[1]), dtype=np.int64)
        with torch.inference_mode(), self.model.autocast():
            states = self.model.pooled_states(waves.to(self.device, non_blocking=True))
        states = states.float()
        if not self.cuda:
            return _Part(rows, states.cpu().numpy(), frames=frames)
        host = torch.empty(states.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(states, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return _Part(rows, host, event, frames)

    # -- finishing ---------------------------------------------------------------------------
    def _finish(self, flight: _InFlight) -> Embedded:
        batch = flight.batch
        info = self.model.info
        if not batch.keys:
            return Embedded(batch, np.zeros((0, info.n_hidden_states, info.dim), np.float32), np.zeros(0, np.int64))
        states, frames, kept = [], [], []
        for part in flight.parts:
            if part.event is not None:
                part.event.synchronize()
                part.states = part.states.numpy()
            states.append(part.states)
            frames.append(part.frames)
            kept.extend(part.rows)
        if flight.failed_rows:
            batch = self._without(batch, flight.failed_rows)
        order = np.argsort(kept, kind="stable")
        joined = np.concatenate(states)[order] if states else np.zeros((0, info.n_hidden_states, info.dim),
                                                                       np.float32)
        joined_frames = np.concatenate(frames)[order] if frames else np.zeros(0, np.int64)
        return Embedded(batch, joined.astype(np.float32, copy=False), joined_frames)

    def _without(self, batch: WindowBatch, failed_rows: list[int]) -> WindowBatch:
        """``batch`` less the rows that did not fit; their items fail with the hint."""
        rate = self.model.info.sample_rate
        reason = oom_hint(batch.waves.shape[1] / rate, self.device)
        failed_positions = {batch.keys[row][0] for row in failed_rows}
        keep = [row for row in range(len(batch.keys)) if row not in set(failed_rows)]
        return WindowBatch(batch.waves[keep], [batch.keys[row] for row in keep], list(batch.finished),
                           list(batch.failed) + [(position, reason) for position in sorted(failed_positions)],
                           preprocessed=batch.preprocessed)
