"""Dasheng (mispeech/dasheng-base, -0.6B, -1.2B) in its Hugging Face layout, without remote code.

config.json (model_type "dasheng") carries ``encoder_kwargs`` (embed_dim, depth, num_heads,
patch_size, patch_stride, target_length); preprocessor_config.json the mel settings (16 kHz, n_fft
512, hop 160, 64 bands up to 8 kHz); model.safetensors the weights under ``encoder.``.

Forward, as the port (jimbozhang/hf_transformers_custom_model_dasheng) computes it: mel power ->
dB with a 120 dB floor -> BatchNorm over mel bands -> segments of ``target_length`` frames (1,008 =
10.08 s), the last one zero-padded -> 64 x 4 patches + time and frequency position embeddings ->
pre-LN ViT blocks -> LayerNorm; segment outputs are concatenated and cut back to the input's frames.
Hidden states: the patch embeddings with positions, each block's output, and for the last block the
encoder's normalised output (replacing its raw output). 25 Hz tokens.

Two deliberate differences, both where the port's behaviour is a batching artefact: each input is
its own batch (the port's 120-dB floor and its segment reshape mix the items of a batch), and an
input of exactly k x 1,008 frames keeps its last segment (the port drops it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from marble_eval.errors import MarbleEvalError
from marble_eval.models.base import AudioEncoder
from marble_eval.models.families.torch_mel import MelPower, power_to_db
from marble_eval.models.hub import ResolvedModel
from marble_eval.models.loading import load_state_strict, model_info, preprocessor_config, read_safetensors

TOP_DB = 120.0
# encoder_kwargs this implementation follows; other values of these change the network and are refused.
FIXED_KWARGS = {"pooling": "mean", "init_values": None, "block_type": "Block", "attention_type": "Attention",
                "init_bn": True, "pad_last": True, "n_mels": 64, "mlp_ratio": 4.0, "qkv_bias": True}
FRONT_END_DEFAULTS = {"sampling_rate": 16000, "n_fft": 512, "win_size": 512, "hop_size": 160, "feature_size": 64,
                      "f_min": 0, "f_max": 8000, "center": True}
# The port's classification head (a fine-tuned checkpoint) is not part of the encoder.
HEAD_KEYS = ("outputlayer.*",)


class DashengBlock(nn.Module):
    """Pre-LN transformer block (key names as the released weights)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, dim * 3)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.mlp.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.attn.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        weights = ((q @ k.transpose(-2, -1)) * (dim // self.heads) ** -0.5).softmax(dim=-1)
        return self.attn.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp.fc2(nn.functional.gelu(self.mlp.fc1(self.norm2(x))))


class DashengEncoder(nn.Module):
    """Mel front end and the encoder (under ``encoder.``, as in the checkpoint)."""

    def __init__(self, kwargs: dict[str, Any], front_end: dict[str, Any]) -> None:
        super().__init__()
        self.mel = MelPower(front_end["sampling_rate"], front_end["n_fft"], front_end["hop_size"],
                            front_end["feature_size"], win_length=front_end["win_size"],
                            f_min=front_end["f_min"], f_max=front_end["f_max"])
        self.hop = int(front_end["hop_size"])
        dim, n_mels = int(kwargs["embed_dim"]), int(kwargs.get("n_mels", 64))
        self.target_length = int(kwargs["target_length"])
        self.patch, self.stride = tuple(kwargs["patch_size"]), tuple(kwargs["patch_stride"])
        encoder = nn.Module()
        encoder.init_bn = nn.Sequential(nn.Identity(), nn.BatchNorm2d(n_mels, momentum=0.01), nn.Identity())
        encoder.patch_embed = nn.Module()
        encoder.patch_embed.proj = nn.Conv2d(1, dim, kernel_size=self.patch, stride=self.stride)
        grid = (n_mels // self.stride[0], self.target_length // self.stride[1])
        encoder.time_pos_embed = nn.Parameter(torch.zeros(1, dim, 1, grid[1]))
        encoder.freq_pos_embed = nn.Parameter(torch.zeros(1, dim, grid[0], 1))
        encoder.blocks = nn.ModuleList(DashengBlock(dim, int(kwargs["num_heads"]), float(kwargs.get("mlp_ratio", 4.0)))
                                       for _ in range(int(kwargs["depth"])))
        encoder.norm = nn.LayerNorm(dim, eps=1e-6)
        self.encoder = encoder

    def normalised_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """[B, n] -> [B, 1, bands, frames]: dB mel with the 120-dB floor, BatchNorm over bands."""
        decibels = power_to_db(self.mel(waves.float()), top_db=TOP_DB)  # [B, bands, frames]
        return self.encoder.init_bn[1](decibels.unsqueeze(2)).squeeze(2).unsqueeze(1)

    def segment_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states [N, tokens, dim] of segments [N, 1, bands, frames <= target_length]."""
        encoder = self.encoder
        x = encoder.patch_embed.proj(x)
        x = x + encoder.time_pos_embed[:, :, :, :x.shape[-1]] + encoder.freq_pos_embed
        x = x.flatten(2, 3).permute(0, 2, 1)
        states = []
        for block in encoder.blocks:
            states.append(x)
            x = block(x)
        states.append(encoder.norm(x))
        return states

    def hidden_states(self, waves: torch.Tensor) -> list[torch.Tensor]:
        """Every hidden state [B, tokens, dim] of whole inputs (segmented as the original does)."""
        x = self.normalised_mel(waves)
        frames = x.shape[-1]
        if frames <= self.target_length:
            return self.segment_states(x)
        segments = list(x.split(self.target_length, dim=-1))
        segments[-1] = nn.functional.pad(segments[-1], (0, self.target_length - segments[-1].shape[-1]))
        count, batch = len(segments), x.shape[0]
        states = self.segment_states(torch.cat(segments, dim=0))  # segment-major: [(S B), tokens, dim]
        keep = frames // self.stride[1]
        return [state.reshape(count, batch, *state.shape[1:]).transpose(0, 1).flatten(1, 2)[:, :keep]
                for state in states]


class DashengAudioEncoder(AudioEncoder):
    """Dasheng as an AudioEncoder: every hidden state mean-pooled over its tokens, each input alone."""

    def pooled_states(self, batch: torch.Tensor) -> torch.Tensor:
        rows = [torch.stack([state.float().mean(dim=1) for state in self.module.hidden_states(wave[None])], dim=1)
                for wave in batch]
        return torch.cat(rows, dim=0)

    def n_frames(self, n_samples: int) -> int:
        return (1 + n_samples // self.module.hop) // self.module.stride[1]


def dasheng_settings(model: ResolvedModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """encoder_kwargs and front-end settings of a Dasheng checkpoint (refusing a different network)."""
    source = model.directory / "config.json"
    kwargs = model.config().get("encoder_kwargs")
    if not isinstance(kwargs, dict):
        raise MarbleEvalError(f"{source}: no encoder_kwargs; not a Dasheng checkpoint in the Hugging Face layout")
    for name in ("embed_dim", "depth", "num_heads", "patch_size", "patch_stride", "target_length"):
        if name not in kwargs:
            raise MarbleEvalError(f"{source}: encoder_kwargs.{name} is missing")
    for name, value in FIXED_KWARGS.items():
        if name in kwargs and kwargs[name] != value:
            raise MarbleEvalError(f"{source}: encoder_kwargs.{name} is {kwargs[name]!r}; marble-eval supports "
                                  f"Dasheng with {value!r} (the released models' setting)")
    front_end = {**FRONT_END_DEFAULTS, **{key: value for key, value in (preprocessor_config(model) or {}).items()
                                          if key in FRONT_END_DEFAULTS}}
    if front_end["center"] is not True:
        raise MarbleEvalError(f"{model.directory / 'preprocessor_config.json'}: center must be true for Dasheng")
    return kwargs, front_end


def load_dasheng(model: ResolvedModel, family: str = "dasheng") -> DashengAudioEncoder:
    """Load a Dasheng checkpoint in float32: every weight of the encoder, a classification head allowed."""
    kwargs, front_end = dasheng_settings(model)
    module = DashengEncoder(kwargs, front_end).eval()
    files = [path for path in model.weight_files() if path.suffix == ".safetensors"]
    if not files:
        raise MarbleEvalError(f"{model.directory}: Dasheng weights are read from model.safetensors only")
    load_state_strict(module, read_safetensors(files), str(files[0]), family, allowed_unexpected=HEAD_KEYS)
    rate, hop = int(front_end["sampling_rate"]), int(front_end["hop_size"])
    info = model_info(model, module, family, sample_rate=rate, dim=int(kwargs["embed_dim"]),
                      n_hidden_states=int(kwargs["depth"]) + 1,
                      native_window_seconds=module.target_length * hop / rate,
                      extra={"front_end": f"log-mel {front_end['feature_size']} (n_fft {front_end['n_fft']}, hop "
                                          f"{hop}), 120 dB floor, BatchNorm",
                             "segment_frames": module.target_length, "frame_rate": rate / hop / module.stride[1],
                             "hidden_state_layout": "patch embeddings, blocks, last after LayerNorm"})
    return DashengAudioEncoder(module, info)
