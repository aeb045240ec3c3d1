"""Fixed-input-length spectrogram transformers (AST, MAEST): model-length windows, short clips, token pooling.

These models accept exactly ``max_length`` spectrogram frames. A window is embedded as
consecutive model-length segments (one segment when the caller cuts windows of
ModelInfo.fixed_window_seconds); a segment shorter than the model's input follows the
short-clip policy; segment states are averaged weighted by their real (unpadded) frames.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import abstractmethod
from typing import Any

import torch

from marble_eval.models.base import AudioEncoder, ModelInfo
from marble_eval.models.token_pooling import DEFAULT_POOLING, POOLINGS, check_pooling, pool_tokens, pooled_width

DEFAULT_SHORT_CLIPS = "repeat"
SHORT_CLIP_POLICIES: dict[str, str] = {
    "repeat": "a segment shorter than the model input is tiled from its start to the full input length",
    "pad": "a short segment's spectrogram is zero-padded to the model's frames, as the model's own "
           "feature extractor does (padding frames then take part in attention and patch pooling)",
}


def family_name(base: str, pooling: str) -> str:
    """The family name that selects ``pooling``: ``base`` for the default, else ``base-<pooling>``."""
    return base if pooling == DEFAULT_POOLING else f"{base}-{pooling}"


def pooling_of(family: str, base: str) -> str:
    """The pooling a family name selects (inverse of family_name)."""
    if family == base:
        return DEFAULT_POOLING
    prefix = base + "-"
    return check_pooling(family[len(prefix):] if family.startswith(prefix) else family)


def check_short_clips(policy: str) -> str:
    """Return ``policy`` if known, else raise ValueError listing the known ones."""
    if policy not in SHORT_CLIP_POLICIES:
        raise ValueError(f"unknown short-clip policy {policy!r}; known: {', '.join(SHORT_CLIP_POLICIES)}")
    return policy


def repeat_to(segment: torch.Tensor, n_samples: int) -> torch.Tensor:
    """[B, n] -> [B, n_samples] by tiling along time from the start."""
    repeats = -(-n_samples // segment.shape[1])
    return segment.repeat(1, repeats)[:, :n_samples]


class SpectrogramTransformerEncoder(AudioEncoder):
    """An ASTModel-style encoder fed fixed-length spectrograms; subclasses supply the front-end."""

    base_family = "ast"

    def __init__(self, module: torch.nn.Module, info: ModelInfo, window_samples: int, max_length: int,
                 pooling: str = DEFAULT_POOLING, short_clips: str = DEFAULT_SHORT_CLIPS) -> None:
        super().__init__(module, info)
        self.window_samples = window_samples
        self.max_length = max_length
        self.pooling = check_pooling(pooling)
        self.short_clips = check_short_clips(short_clips)

    @abstractmethod
    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """[B, n] float32 waves -> [B, max_length, mel bins] model input, padded/truncated like the model's own."""

    @abstractmethod
    def spectrogram_frames(self, n_samples: int) -> int:
        """Spectrogram frames the front-end computes for ``n_samples`` before padding."""

    def options_record(self) -> dict[str, Any]:
        """The window, pooling and short-clip settings, for ModelInfo.extra."""
        return {"pooling": self.pooling, "pooling_description": POOLINGS[self.pooling][0],
                "short_clips": self.short_clips, "short_clips_description": SHORT_CLIP_POLICIES[self.short_clips],
                "max_length": self.max_length, "window_samples": self.window_samples}

    def with_options(self, pooling: str | None = None,
                     short_clips: str | None = None) -> "SpectrogramTransformerEncoder":
        """A copy sharing the weights with another pooling and/or short-clip policy (ModelInfo updated)."""
        clone = copy.copy(self)
        clone.pooling = check_pooling(pooling or self.pooling)
        clone.short_clips = check_short_clips(short_clips or self.short_clips)
        clone.info = dataclasses.replace(
            self.info, family=family_name(self.base_family, clone.pooling),
            dim=pooled_width(self.module.config.hidden_size, clone.pooling),
            extra={**self.info.extra, **clone.options_record()})
        return clone

    def segments(self, n_samples: int) -> list[tuple[int, int]]:
        """(start, stop) sample ranges of the model-length segments covering a window."""
        if n_samples <= 0:
            raise ValueError("cannot embed an empty window")
        return [(start, min(start + self.window_samples, n_samples))
                for start in range(0, n_samples, self.window_samples)]

    def segment_weight(self, n_samples: int) -> int:
        """Real (unpadded) spectrogram frames of a segment, at least 1."""
        return max(1, min(self.spectrogram_frames(n_samples), self.max_length))

    def n_frames(self, n_samples: int) -> int:
        return sum(self.segment_weight(stop - start) for start, stop in self.segments(n_samples))

    def pooled_states(self, batch: torch.Tensor) -> torch.Tensor:
        states, weights = [], []
        for start, stop in self.segments(batch.shape[1]):
            segment = batch[:, start:stop]
            if stop - start < self.window_samples and self.short_clips == "repeat":
                segment = repeat_to(segment, self.window_samples)
            with torch.autocast(device_type=batch.device.type, enabled=False):
                inputs = self.features(segment.float())
            hidden = self.module(inputs, output_hidden_states=True).hidden_states
            states.append(torch.stack([pool_tokens(h, self.pooling) for h in hidden], dim=1))
            weights.append(self.segment_weight(stop - start))
        if len(states) == 1:
            return states[0]
        weight = torch.tensor(weights, dtype=torch.float32, device=batch.device) / sum(weights)
        return torch.einsum("s,sbld->bld", weight, torch.stack(states))
