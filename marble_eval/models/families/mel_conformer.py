"""The MusicFM / MuQ encoder: 128-band log-mel, two residual conv blocks, a wav2vec2-Conformer.

Both families share this network (MuQ grew out of MusicFM): 24 kHz waves -> mel power (n_fft 2048,
hop 240) -> dB -> the last frame dropped -> (x - mean) / std from the checkpoint's statistics ->
Conv2dSubsampling (two residual 3x3 conv blocks with BatchNorm, each halving frequency and time,
then a Linear over channels x bands) -> transformers' Wav2Vec2ConformerEncoder. 25 Hz.

Hidden states are those transformers 4.x returned for the encoder, which both projects were written
against: the encoder input, each layer's output, and for the last layer its output after the
encoder's final LayerNorm (replacing the raw one). transformers 5 returns none from a bare encoder,
so the layers are run here one by one (eval mode: dropout and layer drop are off).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Wav2Vec2ConformerConfig
from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import Wav2Vec2ConformerEncoder

from marble_eval.models.base import AudioEncoder, ModelInfo
from marble_eval.models.families.torch_mel import MelPower, power_to_db

SAMPLE_RATE = 24000
N_FFT = 2048
HOP_LENGTH = 240
FRAME_RATE = 25.0
# Weights the released checkpoints carry for pre-training only: the random-projection quantiser, the
# token classifier, the [CLS] embedding, and the convolutional positions (unused with rotary positions).
TRAINING_ONLY = ("quantizer_*", "linear.*", "cls_token", "conformer.pos_conv_embed.*", "recon_proj.*", "rvq.*")
# The convolutional positions are never used by the Conformer encoder; older saves name them weight_g / weight_v.
UNUSED_MISSING = ("conformer.pos_conv_embed.*",)


class ResidualConvBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a strided conv3x3-BN shortcut, then ReLU (key names as released)."""

    def __init__(self, channels_in: int, channels_out: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.relu = nn.ReLU()
        self.has_shortcut = channels_in != channels_out or stride[0] > 1
        if self.has_shortcut:
            self.conv3 = nn.Conv2d(channels_in, channels_out, 3, padding=1, stride=stride)
            self.bn3 = nn.BatchNorm2d(channels_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn3(self.conv3(x)) if self.has_shortcut else x
        return self.relu(residual + self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class ConvSubsampling(nn.Module):
    """[B, bands, T] -> [B, T / 4 (time strides 2, 2), dim]: two residual blocks then a Linear."""

    def __init__(self, channels: int, dim: int, n_bands: int, time_strides: tuple[int, int] = (2, 2)) -> None:
        super().__init__()
        self.conv = nn.Sequential(ResidualConvBlock(1, channels, (2, time_strides[0])),
                                  ResidualConvBlock(channels, channels, (2, time_strides[1])))
        self.linear = nn.Linear(channels * n_bands // 2 // 2, dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv(mel.unsqueeze(1))  # [B, C, F', T']
        batch, channels, bands, frames = x.shape
        return self.linear(x.permute(0, 3, 1, 2).reshape(batch, frames, channels * bands))


class MelConformer(nn.Module):
    """The network under the checkpoint's prefix: ``conv`` and ``conformer`` (training-only parts absent)."""

    def __init__(self, config: Wav2Vec2ConformerConfig, conv_dim: int, n_mels: int, mean: float, std: float,
                 time_strides: tuple[int, int] = (2, 2)) -> None:
        super().__init__()
        self.mel = MelPower(SAMPLE_RATE, N_FFT, HOP_LENGTH, n_mels)
        self.mean, self.std = float(mean), float(std)
        self.conv = ConvSubsampling(conv_dim, config.hidden_size, n_mels, time_strides)
        self.conformer = Wav2Vec2ConformerEncoder(config)

    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel [B, n_mels, n // 240] (the STFT's last frame dropped, as both codes do)."""
        decibels = power_to_db(self.mel(waves.float()))[..., :-1]
        return (decibels - self.mean) / self.std

    def hidden_states(self, waves: torch.Tensor) -> list[torch.Tensor]:
        """Every hidden state [B, frames, dim] as transformers 4.x returned them (see the module docstring)."""
        encoder = self.conformer
        x = encoder.dropout(self.conv(self.features(waves)))
        positions = encoder.embed_positions(x) if encoder.embed_positions is not None else None
        states = []
        for layer in encoder.layers:
            states.append(x)
            x = layer(x, attention_mask=None, relative_position_embeddings=positions)
        states.append(encoder.layer_norm(x))
        return states


def conformer_frames(n_samples: int) -> int:
    """Frames for ``n_samples`` at 24 kHz: n // 240 mel frames, then two stride-2 convs (padding 1)."""
    frames = n_samples // HOP_LENGTH
    for _ in range(2):
        frames = (frames - 1) // 2 + 1 if frames > 0 else 0
    return frames


class MelConformerEncoder(AudioEncoder):
    """MuQ / MusicFM as an AudioEncoder: every hidden state mean-pooled over time (no input normalisation)."""

    def __init__(self, module: MelConformer, info: ModelInfo) -> None:
        super().__init__(module, info)

    def pooled_states(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([state.float().mean(dim=1) for state in self.module.hidden_states(batch)], dim=1)

    def n_frames(self, n_samples: int) -> int:
        return conformer_frames(n_samples)
