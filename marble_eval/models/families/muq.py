"""MuQ (OpenMuQ/MuQ-large-msd-iter and checkpoints in its layout), without the muq package.

The hub repo is a PyTorchModelHubMixin save: config.json holds the MuQConfig fields (``stat`` with
the mel statistics, ``w2v2_config`` with the Conformer's fields, ``encoder_dim``, ``encoder_depth``,
``conv_dim``, ``n_mels``, ``hop_length``, ``label_rate``...) and model.safetensors the weights under
``model.``. The network is marble_eval.models.families.mel_conformer; muq 0.1.0's hidden states on
transformers 4.x are reproduced exactly (tests/data/reference_models, scripts/make_model_references.py).
"""

from __future__ import annotations

from typing import Any

from transformers import Wav2Vec2ConformerConfig

from marble_eval.errors import MarbleEvalError
from marble_eval.models.families.mel_conformer import (
    FRAME_RATE,
    HOP_LENGTH,
    SAMPLE_RATE,
    TRAINING_ONLY,
    UNUSED_MISSING,
    MelConformer,
    MelConformerEncoder,
)
from marble_eval.models.hub import ResolvedModel
from marble_eval.models.loading import BOOKKEEPING_FIELDS, load_state_strict, model_info, read_safetensors

FEATURE = "melspec_2048"
PREFIX = "model."
# The training crop of MuQ's pre-training recipe: 30 s at 24 kHz (max_sample_size 720000).
NATIVE_WINDOW_SECONDS = 30.0
# Settings this implementation supports (the released model's); anything else would change the math.
SUPPORTED = {"features": [FEATURE], "hop_length": HOP_LENGTH, "label_rate": 25, "is_flash": False}


def is_muq_config(config: dict[str, Any]) -> bool:
    """A MuQConfig dict (it has no model_type): ``stat`` and ``w2v2_config`` present."""
    return isinstance(config.get("w2v2_config"), dict) and isinstance(config.get("stat"), dict)


def muq_settings(config: dict[str, Any], source: str) -> tuple[Wav2Vec2ConformerConfig, dict[str, Any]]:
    """The Conformer config and the front-end settings of a MuQ config.json (refusing unsupported ones)."""
    if not is_muq_config(config):
        raise MarbleEvalError(f"{source}: not a MuQ config (needs `stat` and `w2v2_config`)")
    for name, value in SUPPORTED.items():
        if name in config and config[name] != value:
            raise MarbleEvalError(f"{source}: {name} is {config[name]!r}; marble-eval supports MuQ with "
                                  f"{name} {value!r} (the released models' setting)")
    stat = config["stat"]
    for name in (f"{FEATURE}_mean", f"{FEATURE}_std"):
        if not isinstance(stat.get(name), (int, float)):
            raise MarbleEvalError(f"{source}: stat.{name} is missing or not a number")
    fields = {key: value for key, value in config["w2v2_config"].items() if key not in BOOKKEEPING_FIELDS}
    fields.update(num_hidden_layers=int(config.get("encoder_depth", 12)),
                  hidden_size=int(config.get("encoder_dim", 1024)))
    conformer = Wav2Vec2ConformerConfig(**fields, attn_implementation="eager")
    settings = {"conv_dim": int(config.get("conv_dim", 512)), "n_mels": int(config.get("n_mels", 128)),
                "mean": float(stat[f"{FEATURE}_mean"]), "std": float(stat[f"{FEATURE}_std"])}
    return conformer, settings


def load_muq(model: ResolvedModel, family: str = "muq") -> MelConformerEncoder:
    """Load a MuQ checkpoint in float32: every weight the network needs, the training-only ones allowed."""
    source = str(model.directory / "config.json")
    conformer, settings = muq_settings(model.config(), source)
    module = MelConformer(conformer, **settings).eval()
    files = [path for path in model.weight_files() if path.suffix == ".safetensors"]
    if not files:
        raise MarbleEvalError(f"{model.directory}: MuQ weights are read from model.safetensors only")
    state = {key[len(PREFIX):] if key.startswith(PREFIX) else key: value
             for key, value in read_safetensors(files).items()}
    load_state_strict(module, state, str(files[0]), family, allowed_missing=UNUSED_MISSING,
                      allowed_unexpected=TRAINING_ONLY)
    info = model_info(model, module, family, sample_rate=SAMPLE_RATE, dim=conformer.hidden_size,
                      n_hidden_states=conformer.num_hidden_layers + 1,
                      native_window_seconds=NATIVE_WINDOW_SECONDS,
                      extra={"front_end": "log-mel 128 (n_fft 2048, hop 240), checkpoint mean/std",
                             "frame_rate": FRAME_RATE, "hidden_state_layout": "input, layers, last after LayerNorm"})
    return MelConformerEncoder(module, info)
