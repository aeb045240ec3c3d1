"""MERT family (MERT-v1-95M/330M, CultureMERT-95M, CultureMERT-TA-95M): HuBERT specialised.

MERT's hub code is never run: its config is HuBERT plus a few fields, so we build a
HubertConfig from it (PROTOCOL 1) and load the weights through the shared loader, which
refuses any missing or unexpected weight (HubertModel renames the legacy weight-norm keys
itself, so they are neither). The encoder is the wav2vec2-style one, always normalising.
"""

from __future__ import annotations

from typing import Any

from transformers import HubertConfig, HubertModel

from marble_eval.errors import MarbleEvalError
from marble_eval.models.families.wav2vec2 import ALLOWED_MISSING, NORMALIZED, Wav2Vec2StyleEncoder
from marble_eval.models.hub import ResolvedModel
from marble_eval.models.loading import build_config, load_pretrained, model_info

# MERT-only fields that HubertConfig must not see (bookkeeping fields go in build_config).
MERT_FIELDS = ("deepnorm", "attention_relax", "feature_extractor_cqt", "feature_extractor_cqt_bins", "sample_rate")
# Fields that change the math of a forward pass; no public checkpoint sets them.
REFUSED_FIELDS = ("deepnorm", "feature_extractor_cqt")
DEFAULT_RATE = 24000


def hubert_config(config: dict[str, Any], source: str) -> HubertConfig:
    """The HubertConfig equivalent of a MERT config.json (refuses deepnorm / CQT front-ends)."""
    for field_name in REFUSED_FIELDS:
        if config.get(field_name):
            raise MarbleEvalError(f"{source}: `{field_name}: true` changes the model's math and is not supported; "
                                  f"no public MERT checkpoint uses it")
    kept = {key: value for key, value in config.items() if key not in MERT_FIELDS}
    return build_config(HubertConfig, kept, tie_last_hidden_states=True)


def load_mert(model: ResolvedModel, family: str = "mert") -> Wav2Vec2StyleEncoder:
    """Load a MERT-layout checkpoint in float32 without any remote code: 24 kHz, normalised per window."""
    raw = model.config()
    config = hubert_config(raw, str(model.directory / "config.json"))
    module = load_pretrained(HubertModel, model, config, family, allowed_missing=ALLOWED_MISSING)
    info = model_info(model, module, family, sample_rate=raw.get("sample_rate", DEFAULT_RATE),
                      extra={"normalize": NORMALIZED, "pre_layer_norm": bool(config.do_stable_layer_norm)})
    return Wav2Vec2StyleEncoder(module, info, do_normalize=True)
