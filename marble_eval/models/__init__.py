"""Model adapters: one module per family behind the AudioEncoder contract."""

from marble_eval.models.base import AudioEncoder, ModelInfo
from marble_eval.models.registry import load_model, load_model_like

__all__ = ["AudioEncoder", "ModelInfo", "load_model", "load_model_like"]
