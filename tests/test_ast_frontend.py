"""AST's filterbank runs in torch on the model's device and equals ASTFeatureExtractor's (issue #24)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import ASTFeatureExtractor

from marble_eval.models.families.ast import AstFrontEnd


@pytest.mark.parametrize("max_length,n_samples", [(64, 16000), (128, 8000), (32, 300)])
def test_the_torch_filterbank_equals_the_extractor(max_length, n_samples) -> None:
    extractor = ASTFeatureExtractor(num_mel_bins=32, max_length=max_length)
    rng = np.random.default_rng(max_length)
    waves = (0.3 * rng.standard_normal((3, n_samples))).astype(np.float32)
    waves[1] *= 1e-4  # quiet audio: the log floor matters
    expected = extractor(list(waves), sampling_rate=16000, return_tensors="np")["input_values"]
    got = AstFrontEnd(extractor)(torch.from_numpy(waves))
    assert got.dtype == torch.float32 and tuple(got.shape) == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=2e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (this machine has no GPU or a CPU torch)")
def test_the_filterbank_stays_on_the_gpu() -> None:
    extractor = ASTFeatureExtractor(num_mel_bins=32, max_length=64)
    waves = torch.randn(2, 16000, device="cuda")
    got = AstFrontEnd(extractor)(waves)
    assert got.device.type == "cuda"
    np.testing.assert_allclose(got.cpu().numpy(), AstFrontEnd(extractor)(waves.cpu()).numpy(), rtol=0, atol=1e-3)
