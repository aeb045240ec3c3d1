"""MAEST's mel front-end (the hub's feature extractor is remote code, so it is implemented here).

16 kHz mono; STFT with n_fft 512, hop 256, periodic Hann window, frames centred on
multiples of the hop with zero padding at both ends (1 + n // 256 frames); power
spectrum; 96 Slaney mel bands (Slaney area norm) from 0 to 8 kHz; log10(1 + 10000 x);
frames zero-padded (or truncated) to the model's max_length; then
(x - 2.06755686098554) / (2 * 1.268292820667291). Output [B, max_length, 96].
"""

from __future__ import annotations

import torch
from transformers.audio_utils import mel_filter_bank

SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
LOG_SCALE = 10000.0
MEAN = 2.06755686098554
STD = 1.268292820667291
# max_length (frames) of the released models -> nominal window seconds (5 s: 313 frames + 3 padding).
WINDOW_SECONDS = {316: 5.0, 626: 10.0, 1256: 20.0, 1876: 30.0}


def window_samples(max_length: int) -> int:
    """Samples of one model input: the nominal length of a released model, else exactly max_length frames."""
    if max_length in WINDOW_SECONDS:
        return int(WINDOW_SECONDS[max_length] * SAMPLE_RATE)
    return (max_length - 1) * HOP_LENGTH


def spectrogram_frames(n_samples: int) -> int:
    """Frames of the centred STFT of ``n_samples``."""
    return 1 + n_samples // HOP_LENGTH


class MaestFrontEnd:
    """Waves [B, n] at 16 kHz -> normalised log-mel [B, max_length, 96], in float32 on the waves' device."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self.window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float32)
        filters = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=N_MELS, min_frequency=0.0,
                                  max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm="slaney",
                                  mel_scale="slaney")
        self.filters = torch.from_numpy(filters).float()  # [257, 96]

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """[B, n] -> [B, 1 + n // 256, 96] log10(1 + 10000 * mel power), unpadded and unnormalised."""
        waves = waves.float()
        spectrum = torch.stft(waves, n_fft=N_FFT, hop_length=HOP_LENGTH, window=self.window.to(waves.device),
                              center=True, pad_mode="constant", return_complex=True)
        power = spectrum.real.square() + spectrum.imag.square()  # [B, 257, frames]
        mel = power.transpose(1, 2) @ self.filters.to(waves.device)  # [B, frames, 96]
        return torch.log10(1.0 + LOG_SCALE * mel)

    def __call__(self, waves: torch.Tensor) -> torch.Tensor:
        features = self.log_mel(waves)[:, :self.max_length]
        features = torch.nn.functional.pad(features, (0, 0, 0, self.max_length - features.shape[1]))
        return (features - MEAN) / (2 * STD)
