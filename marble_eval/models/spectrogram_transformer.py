"""Fixed-input-length spectrogram transformers (AST, MAEST): model-length windows, short clips, token pooling.

These models accept exactly ``max_length`` spectrogram frames. A window is embedded as
consecutive model-length segments (one segment when the caller cuts windows of
ModelInfo.fixed_window_seconds). A segment shorter than the model's input has its
spectrogram zero-padded to ``max_length`` frames by the front-end, as the model's own
feature extractor does. Segment states are averaged weighted by their real (unpadded) frames.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch

from marble_eval.models.base import AudioEncoder, ModelInfo
from marble_eval.models.token_pooling import POOLINGS, check_pooling, pool_tokens

HIDDEN_STATE_LAYOUT = ("transformers ASTModel: embeddings, then each block's output; the last is before the "
                       "final LayerNorm")
# The classification head of ASTForAudioClassification checkpoints, which ASTModel does not have.
HEAD_KEYS = ("classifier.*",)
SHORT_CLIPS = "zero-pad"
SHORT_CLIPS_DESCRIPTION = ("a segment shorter than the model input has its spectrogram zero-padded to the "
                           "model's frames, as the model's own feature extractor does")


def options_record(pooling: str, max_length: int, window_samples: int) -> dict[str, Any]:
    """The pooling, short-clip and window settings, for ModelInfo.extra (and so the cache key)."""
    return {"pooling": check_pooling(pooling), "pooling_description": POOLINGS[pooling][0],
            "short_clips": SHORT_CLIPS, "short_clips_description": SHORT_CLIPS_DESCRIPTION,
            "max_length": max_length, "window_samples": window_samples}


class SpectrogramTransformerEncoder(AudioEncoder):
    """An ASTModel-style encoder fed fixed-length spectrograms; subclasses supply the front-end."""

    def __init__(self, module: torch.nn.Module, info: ModelInfo, window_samples: int, max_length: int,
                 pooling: str) -> None:
        super().__init__(module, info)
        self.window_samples = window_samples
        self.max_length = max_length
        self.pooling = check_pooling(pooling)

    @abstractmethod
    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """[B, n] float32 waves -> [B, max_length, mel bins] model input, padded/truncated like the model's own."""

    @abstractmethod
    def spectrogram_frames(self, n_samples: int) -> int:
        """Spectrogram frames the front-end computes for ``n_samples`` before padding."""

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
            with torch.autocast(device_type=batch.device.type, enabled=False):
                inputs = self.features(batch[:, start:stop].float())
            hidden = self.module(inputs, output_hidden_states=True).hidden_states
            states.append(torch.stack([pool_tokens(h, self.pooling) for h in hidden], dim=1))
            weights.append(self.segment_weight(stop - start))
        if len(states) == 1:
            return states[0]
        weight = torch.tensor(weights, dtype=torch.float32, device=batch.device) / sum(weights)
        return torch.einsum("s,sbld->bld", weight, torch.stack(states))
