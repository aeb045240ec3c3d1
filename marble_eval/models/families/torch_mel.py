"""torchaudio's MelSpectrogram and AmplitudeToDB, written in torch (torchaudio has no build for this torch).

The same operations in the same order and dtype as torchaudio.transforms.MelSpectrogram (power 2,
HTK mel scale, no filter normalisation, periodic Hann window, centred reflect-padded STFT) and
AmplitudeToDB (power, amin 1e-10, ref 1.0), so that MuQ, MusicFM and Dasheng see the very features
their own code computes. Used by marble_eval.models.families.mel_conformer and .dasheng.
"""

from __future__ import annotations

import math

import torch


def _hz_to_mel(frequency: float) -> float:
    return 2595.0 * math.log10(1.0 + frequency / 700.0)


def _mel_to_hz(mels: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


def mel_filters(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """[n_freqs, n_mels] triangular HTK filters, float32, as torchaudio's melscale_fbanks(norm=None) builds them."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    points = _mel_to_hz(torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    widths = points[1:] - points[:-1]
    slopes = points.unsqueeze(0) - all_freqs.unsqueeze(1)
    rising = (-1.0 * slopes[:, :-2]) / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    return torch.max(torch.zeros(1), torch.min(rising, falling))


class MelPower(torch.nn.Module):
    """Waves [B, n] -> mel power [B, n_mels, 1 + n // hop] (torchaudio MelSpectrogram with power 2)."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, win_length: int | None = None,
                 f_min: float = 0.0, f_max: float | None = None) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.win_length = win_length or n_fft
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        filters = mel_filters(n_fft // 2 + 1, f_min, f_max or float(sample_rate // 2), n_mels, sample_rate)
        self.register_buffer("filters", filters, persistent=False)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=waves.device.type, enabled=False):  # the front end stays float32
            return self._mel(waves)

    def _mel(self, waves: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(waves.float(), n_fft=self.n_fft, hop_length=self.hop_length,
                              win_length=self.win_length, window=self.window, center=True, pad_mode="reflect",
                              normalized=False, onesided=True, return_complex=True)
        power = spectrum.abs().pow(2.0)
        return torch.matmul(power.transpose(-1, -2), self.filters).transpose(-1, -2)


def power_to_db(power: torch.Tensor, top_db: float | None = None) -> torch.Tensor:
    """10 log10(max(x, 1e-10)); with ``top_db``, floored at each input's maximum minus top_db.

    torchaudio floors a 3-D batch at the maximum over the whole batch; here each input has its
    own floor, which is what torchaudio gives an input processed alone (as the models' code feeds it).
    """
    decibels = 10.0 * torch.log10(torch.clamp(power, min=1e-10))
    if top_db is not None:
        floor = decibels.amax(dim=tuple(range(1, decibels.dim())), keepdim=True) - top_db
        decibels = torch.max(decibels, floor)
    return decibels
