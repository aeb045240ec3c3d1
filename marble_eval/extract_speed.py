"""CPU kernels swapped into a model for the duration of a reduced-precision extraction (same math).

On CPU, oneDNN's bf16 ``conv1d`` reorders its activations to a blocked layout and back, which
makes the wav2vec2/HuBERT/MERT conv front end ~60% of a bf16 forward. A convolution without
padding, dilation or groups is one matrix product over an overlapping strided view of the
channels-last input, which runs at matmul (AMX/AVX-512 bf16) speed. Autocast also casts every
Linear weight to bf16 on every forward (~10% of a 30 s forward); a copy cast once does the same.
fp32 runs keep the native kernels, so the fp32 reference numerics never change.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class StridedConv1d(nn.Module):
    """``conv`` (no padding, dilation 1, one group) computed as one matmul over a strided view."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's conv1d does this already; rewritten because its bf16 CPU path spends most time reordering
        conv = self.conv
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        steps = (x.shape[-1] - kernel) // stride + 1
        if x.dim() != 3 or steps <= 0:
            return conv(x)  # unbatched or too short: let torch handle (and word) it
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        rows = x.transpose(1, 2).to(dtype).contiguous()  # [B, L, C]: no copy when already channels-last
        batch, _, channels = rows.shape
        frames = rows.as_strided((batch, steps, kernel * channels), (rows.stride(0), stride * channels, 1))
        weight = conv.weight.permute(2, 1, 0).reshape(kernel * channels, conv.out_channels).to(dtype)
        bias = None if conv.bias is None else conv.bias.to(dtype)
        if channels == 1:
            # a first layer (raw audio in) feeds a norm that wants [B, C_out, T] contiguous: compute it so
            out = weight.t() @ frames.transpose(1, 2)
            return out if bias is None else out + bias[:, None]
        out = frames @ weight
        if bias is not None:
            out = out + bias
        return out.transpose(1, 2)  # [B, C_out, T] with channels-last strides: the next layer reads it as is


class PrecastLinear(nn.Module):
    """``linear`` with its weights cast to ``dtype`` once (autocast would cast them on every call)."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype) -> None:
        super().__init__()
        self.linear = linear
        self.dtype = dtype
        self.weight = linear.weight.detach().to(dtype)
        self.bias = None if linear.bias is None else linear.bias.detach().to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled("cpu") or torch.get_autocast_dtype("cpu") != self.dtype:
            return self.linear(x)
        return nn.functional.linear(x.to(self.dtype), self.weight, self.bias)


def _faster(module: nn.Module, dtype: torch.dtype) -> nn.Module | None:
    """The stand-in for ``module``, or None when it has none."""
    if (type(module) is nn.Conv1d and module.padding == (0,) and module.dilation == (1,) and module.groups == 1
            and module.padding_mode == "zeros"):
        return StridedConv1d(module)
    if type(module) is nn.Linear:
        return PrecastLinear(module, dtype)
    return None


@contextlib.contextmanager
def fast_cpu_kernels(module: nn.Module, device: torch.device | str, precision: str) -> Iterator[int]:
    """Swap plain Conv1d and Linear layers of ``module`` for the stand-ins above while inside; yields how many.

    Only for reduced precision on CPU; the original layers are put back on exit.
    """
    if torch.device(device).type != "cpu" or precision == "fp32":
        yield 0
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            stand_in = _faster(child, dtype)
            if stand_in is not None:
                setattr(parent, name, stand_in)
                swapped.append((parent, name, child))
    try:
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
