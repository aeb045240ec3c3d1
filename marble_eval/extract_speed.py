"""CPU kernels swapped into a model for the duration of a reduced-precision extraction (same math).

On CPU, oneDNN's bf16 ``conv1d`` reorders its activations to a blocked layout and back, which
makes the wav2vec2/HuBERT/MERT conv front end ~60% of a bf16 forward. A convolution without
padding, dilation or groups is one matrix product over an overlapping strided view of the
channels-last input, which runs at matmul (AMX/AVX-512 bf16) speed. Autocast also casts every
Linear weight to bf16 on every forward (~10% of a 30 s forward); a copy cast once does the same.
The conv layers of a feature encoder are replaced whole (``ConvLayer``): the first layer's
per-channel GroupNorm is folded into its convolution, activations run in place and outputs go
to reused buffers (a fresh 300 MB tensor costs ~150 ms of page faults on first touch).
fp32 runs keep the native kernels, so the fp32 reference numerics never change.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

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


def _in_place_activation(activation: object) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """An in-place kernel computing exactly ``activation`` (checked on a probe), or None."""
    candidates = (lambda t: torch.ops.aten.gelu_(t), lambda t: torch.ops.aten.gelu_(t, approximate="tanh"),
                  torch.relu_, lambda t: torch.ops.aten.silu_(t))
    probe = torch.linspace(-8.0, 8.0, 2001)
    try:
        with torch.no_grad():
            expected = activation(probe)
            for kernel in candidates:
                if torch.equal(kernel(probe.clone()), expected):
                    return kernel
    except Exception:  # an activation that refuses the probe is simply called out of place
        pass
    return None


def is_conv_layer(module: nn.Module) -> bool:
    """A feature-encoder conv layer, by structure: children ``conv`` (Conv1d), ``activation``, maybe ``layer_norm``."""
    children = dict(module.named_children())
    return (isinstance(children.get("conv"), nn.Conv1d) and hasattr(module, "activation")
            and set(children) <= {"conv", "activation", "layer_norm"})


def _groupnorm_per_channel(norm: object, channels: int) -> bool:
    return (type(norm) is nn.GroupNorm and norm.num_groups == norm.num_channels == channels)


def folded_first_layer(conv: nn.Conv1d, norm: nn.GroupNorm, x: torch.Tensor, dtype: torch.dtype,
                       frames: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``norm(conv(x))`` for a one-channel ``x`` [B, 1, L] and a per-channel GroupNorm, as one matmul in ``dtype``.

    The frame statistics are exact (float64): with per-example frame mean mu and biased covariance S,
    channel c's output variance is w_c^T S w_c, so the normalised output is (F - mu) . W' + beta with
    W'[:, c] = gamma_c w_c / sqrt(var_c + eps) (the conv bias cancels). The frames are centred before
    the cast (less cancellation than F . W' + beta - mu . W'), and a column of ones carries beta, so the
    matmul writes the normalised output directly. Returns [B, T, C] contiguous (``out`` when given);
    ``frames`` is an optional [B, T, K + 1] scratch buffer of ``dtype``.
    """
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    batch, steps = x.shape[0], (x.shape[-1] - kernel) // stride + 1
    with torch.autocast("cpu", enabled=False):
        wave = x[:, 0].to(torch.float64).contiguous()
        view = wave.as_strided((batch, steps, kernel), (wave.stride(0), stride, 1))
        centred = view - view.mean(dim=1, keepdim=True)
        covariance = centred.transpose(1, 2) @ centred / steps  # [B, K, K]
        weight = conv.weight.detach().to(torch.float64).reshape(conv.out_channels, kernel).t()  # [K, C]
        variance = ((covariance @ weight) * weight).sum(dim=1)  # [B, C]
        scale = norm.weight.detach().to(torch.float64) / torch.sqrt(variance + norm.eps)
        folded = torch.empty(batch, kernel + 1, conv.out_channels, dtype=dtype)
        folded[:, :kernel] = weight * scale[:, None, :]
        folded[:, kernel] = norm.bias.detach().to(dtype)
        if frames is None:
            frames = torch.empty(batch, steps, kernel + 1, dtype=dtype)
        frames[..., :kernel] = centred
        frames[..., kernel] = 1
        return torch.bmm(frames, folded, out=out)


class ConvLayer(nn.Module):
    """A feature-encoder conv layer (``conv`` -> [per-channel GroupNorm] -> ``activation``) for CPU autocast.

    A first layer (one input channel) with a per-channel GroupNorm runs ``folded_first_layer``; other
    layers are the strided-view matmul of ``StridedConv1d`` with the overlapping frames copied into a
    buffer. Either way the matmul writes channels-last [B, T, C] into a buffer, the activation runs in
    place, and the [B, C, T] transposed view is returned (the next layer reads it without a copy).
    Buffers live in the stand-in, one shape each (the latest), so memory stays bounded; the encoder's last
    layer allocates fresh each call since its output leaves the encoder (e.g. wav2vec2's extract_features).
    Anything else (not autocast, fp32, unbatched, too short, gradients) runs the original ``layer``.
    One forward at a time: calls share the buffers.
    """

    def __init__(self, layer: nn.Module, last: bool) -> None:
        super().__init__()
        self.layer = layer
        self.last = last
        self.fold = getattr(layer, "layer_norm", None) is not None
        self.activate_in_place = _in_place_activation(layer.activation)
        self.weights: dict[torch.dtype, torch.Tensor] = {}
        self.scratch: dict[str, torch.Tensor] = {}

    @staticmethod
    def wrap(layer: nn.Module, last: bool) -> ConvLayer | None:
        """The stand-in for ``layer``, or None when it is not a conv layer this can compute."""
        if not is_conv_layer(layer):
            return None
        conv, norm = layer.conv, getattr(layer, "layer_norm", None)
        plain = (type(conv) is nn.Conv1d and conv.padding == (0,) and conv.dilation == (1,) and conv.groups == 1
                 and conv.padding_mode == "zeros")
        foldable = norm is None or (conv.in_channels == 1 and _groupnorm_per_channel(norm, conv.out_channels))
        return ConvLayer(layer, last) if plain and foldable else None

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A scratch tensor (contents undefined): reused while the shape holds, fresh for the last layer."""
        if self.last:
            return torch.empty(shape, dtype=dtype)
        buffer = self.scratch.get(name)
        if (buffer is None or buffer.shape != shape or buffer.dtype != dtype
                or buffer.is_inference() != torch.is_inference_mode_enabled()):
            self.scratch.pop(name, None)  # free the old one before allocating its replacement
            buffer = self.scratch[name] = torch.empty(shape, dtype=dtype)
        return buffer

    def _weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The conv weight as [K * C_in, C_out] (row k * C_in + i: tap k, input channel i), cast once."""
        if dtype not in self.weights:
            conv = self.layer.conv
            self.weights[dtype] = (conv.weight.detach().permute(2, 1, 0)
                                   .reshape(-1, conv.out_channels).to(dtype).contiguous())
        return self.weights[dtype]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.layer.conv
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        steps = (x.shape[-1] - kernel) // stride + 1
        if (not torch.is_autocast_enabled("cpu") or x.dim() != 3 or steps <= 0 or x.device.type != "cpu"
                or x.shape[1] != conv.in_channels or not x.is_floating_point()
                or torch.get_autocast_dtype("cpu") not in (torch.bfloat16, torch.float16)
                or (torch.is_grad_enabled() and (x.requires_grad
                                                 or any(p.requires_grad for p in self.layer.parameters())))):
            return self.layer(x)
        dtype = torch.get_autocast_dtype("cpu")
        batch = x.shape[0]
        with torch.autocast("cpu", enabled=False):
            out = self._buffer("out", (batch, steps, conv.out_channels), dtype)
            if self.fold:
                frames = self._buffer("frames", (batch, steps, kernel + 1), dtype)
                folded_first_layer(conv, self.layer.layer_norm, x, dtype, frames=frames, out=out)
            else:
                rows = x.transpose(1, 2).to(dtype).contiguous()  # [B, L, C]: no copy when already channels-last
                channels = rows.shape[-1]
                view = rows.as_strided((batch, steps, kernel * channels), (rows.stride(0), stride * channels, 1))
                if view.is_contiguous():  # kernel == stride and nothing left over: the frames are the rows
                    frames = view
                else:  # overlapping frames: matmul would copy them anyway, into a fresh tensor
                    frames = self._buffer("frames", tuple(view.shape), dtype)
                    frames.copy_(view)
                flat_frames, flat_out = frames.view(-1, kernel * channels), out.view(-1, conv.out_channels)
                if conv.bias is None:
                    torch.mm(flat_frames, self._weight(dtype), out=flat_out)
                else:
                    torch.addmm(conv.bias.detach().to(dtype), flat_frames, self._weight(dtype), out=flat_out)
            if self.activate_in_place is not None:
                self.activate_in_place(out)
            else:
                out = self.layer.activation(out)
        return out.transpose(1, 2)


def _faster(module: nn.Module, dtype: torch.dtype) -> nn.Module | None:
    """The stand-in for ``module``, or None when it has none."""
    if (type(module) is nn.Conv1d and module.padding == (0,) and module.dilation == (1,) and module.groups == 1
            and module.padding_mode == "zeros"):
        return StridedConv1d(module)
    if type(module) is nn.Linear:
        return PrecastLinear(module, dtype)
    return None


def _swap_in(parent: nn.Module, dtype: torch.dtype, swapped: list[tuple[nn.Module, str, nn.Module]]) -> None:
    """Replace the children of ``parent`` that have a stand-in, and recurse into the others."""
    children = list(parent.named_children())
    layers = [name for name, child in children if is_conv_layer(child)]
    for name, child in children:
        stand_in = ConvLayer.wrap(child, last=name == layers[-1]) if name in layers else None
        if stand_in is None:
            stand_in = _faster(child, dtype)
        if stand_in is None:
            _swap_in(child, dtype, swapped)
        else:
            setattr(parent, name, stand_in)
            swapped.append((parent, name, child))


@contextlib.contextmanager
def fast_cpu_kernels(module: nn.Module, device: torch.device | str, precision: str) -> Iterator[int]:
    """Swap the conv layers of feature encoders, and the other plain Conv1d and Linear layers of ``module``,
    for the stand-ins above while inside; yields how many.

    Only for reduced precision on CPU; the original layers are put back on exit.
    """
    if torch.device(device).type != "cpu" or precision == "fp32":
        yield 0
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    _swap_in(module, dtype, swapped)
    try:
        yield len(swapped)
    finally:
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)
