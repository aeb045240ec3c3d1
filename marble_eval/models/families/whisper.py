"""Whisper's encoder (openai/whisper-*) and Qwen2-Audio's audio tower (Qwen/Qwen2-Audio-7B), stock classes.

Both take a 30-s log-mel (WhisperFeatureExtractor: 16 kHz, hop 160, 80 or 128 bands, every input
padded to 30 s) through two convolutions (the second of stride 2: 50 Hz) and a transformer.
Only the encoder's tensors are read from the checkpoint (``model.encoder.*`` of a Whisper model,
``audio_tower.*`` of Qwen2-Audio): the decoder and the 7B language model are never loaded, and of a
sharded Qwen2-Audio checkpoint only the shards that hold the tower are downloaded and fingerprinted.

Padding: the encoder always sees 30 s, mostly silence for a short window, so only the frames that
hold real audio are pooled (``ceil(ceil(n / 160) / 2)`` of the 1,500). Qwen2-Audio also masks the
padded frames in attention, as Qwen2-Audio itself calls its tower; Whisper's encoder has no mask.
Windows over 30 s are cut into 30-s pieces whose real frames are pooled together.

Hidden states: the input embeddings with positions, each layer's output, and for the last layer the
encoder's final output (Whisper: after its LayerNorm; Qwen2-Audio: after its 2x average pooling and
LayerNorm, 25 Hz), replacing the raw last layer output.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
from torch import nn
from transformers import Qwen2AudioEncoder, Qwen2AudioEncoderConfig, WhisperConfig, WhisperFeatureExtractor
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from marble_eval.errors import MarbleEvalError
from marble_eval.models.base import AudioEncoder
from marble_eval.models.hub import ResolvedModel
from marble_eval.models.loading import (
    BOOKKEEPING_FIELDS,
    build_config,
    load_state_strict,
    model_info,
    preprocessor_config,
    read_safetensors,
)

SAMPLE_RATE = 16000
HOP_LENGTH = 160
CHUNK_SECONDS = 30.0
CHUNK_SAMPLES = int(CHUNK_SECONDS * SAMPLE_RATE)
POOLING_NOTE = "mean over the frames holding real audio (inputs are padded to 30 s)"
# checkpoint key prefix of the encoder, by family (the first one present is used)
PREFIXES = {"whisper": ("model.encoder.", "encoder."), "qwen2-audio": ("audio_tower.", "model.audio_tower.", "")}


def real_frames(n_samples: int) -> int:
    """Encoder frames (50 Hz) that hold audio of an ``n_samples`` input: mel frames ceil(n / 160), halved up."""
    return math.ceil(math.ceil(n_samples / HOP_LENGTH) / 2)


class AudioTower(nn.Module):
    """A Whisper-style encoder plus its feature extractor; hidden states over real frames."""

    def __init__(self, encoder: nn.Module, extractor: WhisperFeatureExtractor, masked: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.extractor = extractor
        self.masked = masked

    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """[B, n <= 30 s] -> log-mel [B, bands, 3000], padded as WhisperFeatureExtractor pads."""
        arrays = [row for row in waves.float().cpu().numpy().astype(np.float32)]
        out = self.extractor(arrays, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding="max_length")
        return out["input_features"].to(waves.device)

    def hidden_states(self, waves: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
        """Every hidden state [B, frames, dim] of a <= 30-s batch, and each state's count of real frames."""
        encoder = self.encoder
        x = nn.functional.gelu(encoder.conv1(self.features(waves)))
        x = nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
        x = x + encoder.embed_positions.weight[:x.shape[1]]
        length = real_frames(waves.shape[1])
        mask = None
        if self.masked:
            keep = (torch.arange(x.shape[1], device=x.device) < length).long().expand(x.shape[0], -1)
            mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=x, attention_mask=keep)
        states = []
        for layer in encoder.layers:
            states.append(x)
            x = layer(x, mask)
            x = x[0] if isinstance(x, tuple) else x
        if hasattr(encoder, "avg_pooler"):
            x = encoder.avg_pooler(x.permute(0, 2, 1)).permute(0, 2, 1)
            last_length = (length - 2) // 2 + 1
        else:
            last_length = length
        states.append(encoder.layer_norm(x))
        return states, [length] * (len(states) - 1) + [max(last_length, 1)]


class AudioTowerEncoder(AudioEncoder):
    """Whisper / Qwen2-Audio encoder as an AudioEncoder: real frames pooled, 30-s pieces for longer windows."""

    def pooled_states(self, batch: torch.Tensor) -> torch.Tensor:
        sums, total = None, 0
        for start in range(0, batch.shape[1], CHUNK_SAMPLES):
            states, lengths = self.module.hidden_states(batch[:, start:start + CHUNK_SAMPLES])
            chunk = torch.stack([state[:, :n].float().sum(dim=1) for state, n in zip(states, lengths)], dim=1)
            counts = torch.tensor(lengths, dtype=torch.float32, device=chunk.device)[None, :, None]
            sums = chunk if sums is None else sums + chunk
            total = counts if isinstance(total, int) else total + counts
        return sums / total

    def n_frames(self, n_samples: int) -> int:
        whole, rest = divmod(n_samples, CHUNK_SAMPLES)
        return whole * real_frames(CHUNK_SAMPLES) + (real_frames(rest) if rest else 0)


def _extractor(model: ResolvedModel, bands: int) -> WhisperFeatureExtractor:
    raw = preprocessor_config(model) or {}
    kind = raw.get("feature_extractor_type", "WhisperFeatureExtractor")
    if kind != "WhisperFeatureExtractor":
        raise MarbleEvalError(f"{model.directory / 'preprocessor_config.json'}: feature_extractor_type {kind!r} is not "
                              f"WhisperFeatureExtractor")
    fields = {key: raw[key] for key in ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft",
                                        "padding_value") if key in raw}
    fields.setdefault("feature_size", bands)
    extractor = WhisperFeatureExtractor(**fields)
    if extractor.sampling_rate != SAMPLE_RATE or extractor.hop_length != HOP_LENGTH or extractor.chunk_length != 30:
        raise MarbleEvalError(f"{model.directory / 'preprocessor_config.json'}: a Whisper-style front end of 16 kHz, "
                              f"hop 160 and 30-s chunks is expected")
    if extractor.feature_size != bands:
        raise MarbleEvalError(f"{model.directory / 'preprocessor_config.json'}: feature_size {extractor.feature_size} "
                              f"but the encoder takes {bands} mel bands")
    return extractor


def _tower_state(model: ResolvedModel, family: str) -> tuple[dict[str, torch.Tensor], str]:
    files = [path for path in model.weight_files() if path.suffix == ".safetensors"]
    if not files:
        raise MarbleEvalError(f"{model.directory}: {family} weights are read from *.safetensors only")
    prefixes = PREFIXES[family]
    state = read_safetensors(files, keep=tuple(f"{prefix}*" for prefix in prefixes if prefix))
    prefix = next((p for p in prefixes if p and any(key.startswith(p) for key in state)), "")
    if not prefix:
        state = read_safetensors(files)
    source = str(files[0]) if len(files) == 1 else f"{model.directory} ({len(files)} weight files)"
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}, source


def load_whisper(model: ResolvedModel, family: str = "whisper") -> AudioTowerEncoder:
    """Whisper's encoder from any openai/whisper-* layout checkpoint (WhisperModel / ...ForConditionalGeneration)."""
    config = build_config(WhisperConfig, model.config())
    encoder = WhisperEncoder(config).eval()
    state, source = _tower_state(model, family)
    load_state_strict(encoder, state, source, family)
    return _encoder(model, encoder, family, masked=False, bands=config.num_mel_bins, layers=config.encoder_layers,
                    dim=config.d_model)


def load_qwen2_audio(model: ResolvedModel, family: str = "qwen2-audio") -> AudioTowerEncoder:
    """Qwen2-Audio's audio tower alone (Qwen2AudioEncoder), from the full checkpoint or the tower's own."""
    raw = model.config()
    tower = raw.get("audio_config", raw) if raw.get("model_type") == "qwen2_audio" else raw
    if not isinstance(tower, dict):
        raise MarbleEvalError(f"{model.directory / 'config.json'}: audio_config is missing")
    fields = {key: value for key, value in tower.items() if key not in BOOKKEEPING_FIELDS}
    config = Qwen2AudioEncoderConfig(**fields)
    if raw.get("model_type") == "qwen2_audio":  # read and fingerprint only the shards that hold the tower
        model = replace(model, weight_prefix="audio_tower.")
    encoder = Qwen2AudioEncoder(config).eval()
    state, source = _tower_state(model, family)
    load_state_strict(encoder, state, source, family)
    return _encoder(model, encoder, family, masked=True, bands=config.num_mel_bins, layers=config.encoder_layers,
                    dim=config.d_model)


def _encoder(model: ResolvedModel, encoder: nn.Module, family: str, masked: bool, bands: int, layers: int,
             dim: int) -> AudioTowerEncoder:
    module = AudioTower(encoder, _extractor(model, bands), masked).eval()
    info = model_info(model, module, family, sample_rate=SAMPLE_RATE, dim=dim, n_hidden_states=layers + 1,
                      native_window_seconds=CHUNK_SECONDS,
                      extra={"front_end": f"WhisperFeatureExtractor, {bands} mel bands, padded to 30 s",
                             "frame_pooling": POOLING_NOTE, "attention_mask": "padding masked" if masked else "none",
                             "frame_rate": 50.0, "transformers_class": type(encoder).__name__})
    return AudioTowerEncoder(module, info)
