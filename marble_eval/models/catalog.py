"""Known model ids: the seed models of the benchmark, with what they are (no download needed)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogEntry:
    """One known checkpoint on the Hugging Face hub."""

    model_id: str
    family: str
    sample_rate: int
    n_hidden_states: int            # L, including state 0
    dim: int                        # D with the family's default pooling
    window_seconds: float | None    # fixed input length (AST-style models), None = any length
    description: str


def _mert(model_id: str, description: str, layers: int = 12, dim: int = 768) -> CatalogEntry:
    return CatalogEntry(model_id, "mert", 24000, layers + 1, dim, None, description)


def _maest(name: str, seconds: float, description: str) -> CatalogEntry:
    return CatalogEntry(f"mtg-upf/{name}", "maest", 16000, 13, 768, seconds, description)


CATALOG: tuple[CatalogEntry, ...] = (
    _mert("m-a-p/MERT-v1-95M", "MERT v1, 95M parameters, music pre-training"),
    _mert("m-a-p/MERT-v1-330M", "MERT v1, 330M parameters, pre-LayerNorm", layers=24, dim=1024),
    _mert("ntua-slp/CultureMERT-95M", "MERT-v1-95M continually pre-trained on multi-cultural music"),
    _mert("ntua-slp/CultureMERT-TA-95M", "task arithmetic of single-culture MERT-95M models, lambda 0.2"),
    _maest("discogs-maest-5s-pw-129e", 5.0, "MAEST 5 s, PaSST-weights init, 129 epochs, Discogs 400 styles"),
    _maest("discogs-maest-10s-fs-129e", 10.0, "MAEST 10 s, from scratch, 129 epochs"),
    _maest("discogs-maest-10s-pw-129e", 10.0, "MAEST 10 s, PaSST-weights init, 129 epochs"),
    _maest("discogs-maest-10s-dw-75e", 10.0, "MAEST 10 s, DeiT-weights init, 75 epochs"),
    _maest("discogs-maest-20s-pw-129e", 20.0, "MAEST 20 s, PaSST-weights init, 129 epochs"),
    _maest("discogs-maest-30s-pw-129e", 30.0, "MAEST 30 s, PaSST-weights init, 129 epochs"),
    _maest("discogs-maest-30s-pw-73e-ts", 30.0, "MAEST 30 s, teacher-student, 73 epochs"),
    _maest("discogs-maest-30s-pw-129e-519l", 30.0, "MAEST 30 s, PaSST-weights init, 519 Discogs styles"),
)


def catalog_entry(model_id: str) -> CatalogEntry | None:
    """The catalog entry of a hub id (revision suffix "@..." ignored), or None."""
    bare = model_id.partition("@")[0]
    return next((entry for entry in CATALOG if entry.model_id == bare), None)
