"""The adapter contract every model family implements (HEAR-like: load, then embed).

An adapter turns a batch of equal-length, already-resampled mono windows into one
time-averaged vector per hidden state: ``pooled_states(batch[B, T]) -> [B, L, D]``.
Everything model-specific (input normalisation, front-end, pooling of special tokens)
lives behind that call, so extraction, caching and probing never look inside a model.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from marble_eval.errors import MarbleEvalError

# Compute precisions of the forward pass. fp32 is strict fp32 (TF32 off on CUDA); tf32 lets CUDA matmuls and
# convolutions use TF32 (opt-in, recorded in the cache key like the others). "auto" is an alias of fp32.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
PRECISION_ALIASES = {"auto": "fp32"}
PRECISION_CHOICES = (*PRECISIONS, *PRECISION_ALIASES)


def normalise_precision(value: str | None, default: str | None = "fp32") -> str | None:
    """The one place a precision is resolved: None -> ``default``, an alias -> its precision; else refused."""
    if value is None:
        return default
    value = PRECISION_ALIASES.get(value, value)
    if value not in PRECISIONS:
        raise MarbleEvalError(f"--precision {value}: use one of {', '.join(PRECISION_CHOICES)}")
    return value


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is: recorded in every cache key and result."""

    model_id: str          # what the user typed (hub id or directory)
    family: str            # adapter name, e.g. "mert", "maest", "hubert"
    sample_rate: int       # Hz the model expects
    n_hidden_states: int   # L, including the input-projection state 0
    dim: int               # D
    n_parameters: int
    fingerprint: str       # sha256 over weights files and config (see models.hub)
    revision: str | None = None  # hub commit when resolved from the hub
    fixed_window_seconds: float | None = None  # models that accept exactly one input length (AST)
    native_window_seconds: float | None = None  # the context the family was trained on (its natural window)
    licence: str | None = None  # licence of the weights, when the hub id is a known one (catalog)
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific recorded settings


class AudioEncoder(ABC):
    """A frozen audio model that maps mono windows to per-layer time-averaged states."""

    info: ModelInfo

    def __init__(self, module: torch.nn.Module, info: ModelInfo) -> None:
        self.module = module.eval().requires_grad_(False)
        self.info = info
        self.device = torch.device("cpu")
        self.precision = "fp32"

    def to(self, device: str | torch.device = "cpu", precision: str = "fp32") -> "AudioEncoder":
        """Move to ``device``; ``precision`` selects autocast for the forward (weights stay fp32)."""
        precision = normalise_precision(precision)
        self.device = torch.device(device)
        self.precision = precision
        self.module.to(self.device)
        return self

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the chosen precision (no-op for fp32 and tf32)."""
        if self.precision in ("fp32", "tf32"):
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def preprocess(self, wave: np.ndarray) -> np.ndarray:
        """Per-input normalisation applied to one window before batching (default: none)."""
        return wave.astype(np.float32, copy=False)

    @abstractmethod
    def pooled_states(self, batch: torch.Tensor) -> torch.Tensor:
        """[B, T] preprocessed equal-length windows -> [B, L, D] float32 time means."""

    @abstractmethod
    def n_frames(self, n_samples: int) -> int:
        """Frames the model produces for a window of ``n_samples`` (weights whole-file means)."""

    @torch.inference_mode()
    def embed_windows(self, windows: list[np.ndarray], batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Embed a list of windows (any lengths): returns ([N, L, D] float32, [N] frame counts).

        Windows of equal length are batched together; order is preserved.
        """
        out = np.zeros((len(windows), self.info.n_hidden_states, self.info.dim), dtype=np.float32)
        frames = np.array([self.n_frames(len(w)) for w in windows], dtype=np.int64)
        by_length: dict[int, list[int]] = {}
        for index, window in enumerate(windows):
            by_length.setdefault(len(window), []).append(index)
        for indices in by_length.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                batch = torch.from_numpy(np.stack([self.preprocess(windows[i]) for i in chunk])).to(self.device)
                with self.autocast():
                    states = self.pooled_states(batch)
                out[chunk] = states.float().cpu().numpy()
        return out, frames
