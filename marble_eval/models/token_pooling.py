"""Pool the token sequence of an AST-style transformer (CLS, DIST, then patches) to one vector.

AST and MAEST prepend two special tokens to the patch tokens. Every hidden state of the
per-layer cache is pooled the same way; the choice is ``load_model(..., pooling=NAME)``
and is recorded in ModelInfo.extra (and ModelInfo.dim), hence in every cache key.
"""

from __future__ import annotations

import torch

from marble_eval.errors import MarbleEvalError

N_SPECIAL_TOKENS = 2  # CLS at index 0, DIST at index 1
DEFAULT_POOLING = "patch-mean"
# name -> (what it is, output width as a multiple of the hidden size)
POOLINGS: dict[str, tuple[str, int]] = {
    "patch-mean": ("mean of the patch tokens (special tokens excluded)", 1),
    "cls": ("the CLS token", 1),
    "dist": ("the DIST (distillation) token", 1),
    "cls-dist-mean": ("mean of the CLS and DIST tokens", 1),
    "cls-dist-patch-mean": ("CLS, DIST and mean of patch tokens concatenated (MAEST paper embedding)", 3),
}


def check_pooling(pooling: str) -> str:
    """Return ``pooling`` if known, else a one-line MarbleEvalError listing the known ones."""
    if pooling not in POOLINGS:
        raise MarbleEvalError(f"unknown pooling {pooling!r}; known: {', '.join(POOLINGS)} "
                              f"(default {DEFAULT_POOLING})")
    return pooling


def pooled_width(hidden_size: int, pooling: str) -> int:
    """Output width of ``pooling`` for a model of ``hidden_size``."""
    return hidden_size * POOLINGS[check_pooling(pooling)][1]


def pool_tokens(hidden: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, 2 + patches, D] hidden state -> [B, D] (or [B, 3D] for cls-dist-patch-mean), float32."""
    hidden = hidden.float()
    cls, dist = hidden[:, 0], hidden[:, 1]
    if pooling == "cls":
        return cls
    if pooling == "dist":
        return dist
    if pooling == "cls-dist-mean":
        return (cls + dist) / 2
    patches = hidden[:, N_SPECIAL_TOKENS:].mean(dim=1)
    if pooling == "patch-mean":
        return patches
    if pooling == "cls-dist-patch-mean":
        return torch.cat([cls, dist, patches], dim=-1)
    raise ValueError(f"unknown token pooling {pooling!r}; known: {', '.join(POOLINGS)}")
