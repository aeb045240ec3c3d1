"""Known model ids: the benchmark's models, with what they are (no download needed), and the built-in ones."""

from __future__ import annotations

from dataclasses import dataclass

CC_BY_NC = "CC BY-NC 4.0"
BUILT_IN_LICENCE = "none (random weights, built in)"


@dataclass(frozen=True)
class CatalogEntry:
    """One known checkpoint on the Hugging Face hub, or a built-in model name."""

    model_id: str
    family: str
    sample_rate: int
    n_hidden_states: int            # L, including state 0
    dim: int                        # D with the family's default pooling
    window_seconds: float | None    # fixed input length (AST-style models), None = any length
    description: str
    frame_rate: float | None = None  # hidden-state frames per second (tokens for patch models)
    licence: str | None = None      # licence of the weights as the model card states it (None: not recorded)
    native_window_seconds: float | None = None  # the context the model was trained on


def _mert(model_id: str, description: str, layers: int = 12, dim: int = 768) -> CatalogEntry:
    return CatalogEntry(model_id, "mert", 24000, layers + 1, dim, None, description, 75.0, CC_BY_NC)


def _maest(name: str, seconds: float, description: str) -> CatalogEntry:
    return CatalogEntry(f"mtg-upf/{name}", "maest", 16000, 13, 768, seconds, description, None, None, seconds)


def _dasheng(size: str, layers: int, dim: int) -> CatalogEntry:
    return CatalogEntry(f"mispeech/dasheng-{size}", "dasheng", 16000, layers + 1, dim, None,
                        f"Dasheng {size}: masked audio modelling on 272k hours of general audio", 25.0, "Apache-2.0",
                        10.08)


def _whisper(size: str, layers: int, dim: int) -> CatalogEntry:
    return CatalogEntry(f"openai/whisper-{size}", "whisper", 16000, layers + 1, dim, None,
                        f"Whisper {size} encoder only (speech recognition model; real frames pooled)", 50.0,
                        "Apache-2.0", 30.0)


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
    CatalogEntry("OpenMuQ/MuQ-large-msd-iter", "muq", 24000, 13, 1024, None,
                 "MuQ large: Mel-RVQ targets, iterated, Million Song Dataset", 25.0, CC_BY_NC, 30.0),
    _dasheng("base", 12, 768),
    _dasheng("0.6B", 32, 1280),
    _dasheng("1.2B", 40, 1536),
    CatalogEntry("minzwon/MusicFM", "musicfm", 24000, 13, 1024, None,
                 "MusicFM 25 Hz, the MSD checkpoint (pretrained_msd.pt with msd_stats.json)", 25.0, "MIT", 30.0),
    _whisper("tiny", 4, 384),
    _whisper("base", 6, 512),
    _whisper("small", 12, 768),
    _whisper("medium", 24, 1024),
    _whisper("large-v3", 32, 1280),
    CatalogEntry("Qwen/Qwen2-Audio-7B", "qwen2-audio", 16000, 33, 1280, None,
                 "Qwen2-Audio's audio tower alone (Whisper-large-v3 style, the 7B LM never loaded)", 50.0,
                 "Apache-2.0", 30.0),
    CatalogEntry("fixture", "mert", 24000, 5, 32, None, "tiny random MERT (post-LN, 4 x 32), built in, for tests",
                 75.0, BUILT_IN_LICENCE),
    CatalogEntry("fixture-pre-ln", "mert", 24000, 5, 32, None,
                 "tiny random MERT-v1-330M layout (pre-LN, 4 x 32), built in, for tests", 75.0, BUILT_IN_LICENCE),
)


def catalog_entry(model_id: str) -> CatalogEntry | None:
    """The catalog entry of a hub id (revision suffix "@..." ignored) or built-in name, or None."""
    bare = model_id.partition("@")[0]
    return next((entry for entry in CATALOG if entry.model_id == bare), None)
