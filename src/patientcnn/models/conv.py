"""The plain 1D-CNN ("cnn") and the arithmetic that says what each layer does to the tensor shape.

Input is PyTorch's Conv1d layout (N, C, L): N patients, C features (the in_channels of
the first layer), L time steps. Each layer has out_channels filters, each spanning
in_channels/groups channels and kernel_size steps spaced by dilation; it moves stride
steps at a time over the zero-padded sequence, so its output length is

    L_out = floor((L + pad_left + pad_right - dilation * (kernel_size - 1) - 1) / stride) + 1

(the PyTorch formula, with 2 * padding split into a left and a right part so that
'same' also works for even kernels). Padding steps of short stays are zeroed after every
block and left out of the global pooling, so a patient's prediction does not depend on
how much padding surrounds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from patientcnn.errors import UserError
from patientcnn.models.layers import (
    PooledHead,
    make_activation,
    make_norm,
    param_count,
    same_padding,
    steps_mask,
    valid_interval,
)
from patientcnn.models.registry import register


@dataclass(frozen=True)
class LayerSpec:
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    dilation: int
    pad_left: int
    pad_right: int
    groups: int

    def output_length(self, length: int) -> int:
        span = self.dilation * (self.kernel_size - 1) + 1
        return (length + self.pad_left + self.pad_right - span) // self.stride + 1


def resolve_padding(padding: int | str, kernel_size: int, dilation: int) -> tuple[int, int]:
    """'same' pads d*(k-1) in total (left gets the smaller half), 'valid' none, an int p both."""
    if padding == "same":
        return same_padding(kernel_size, dilation)
    if padding == "valid":
        return 0, 0
    if isinstance(padding, int) and padding >= 0:
        return padding, padding
    raise UserError(
        f"model.padding must be a non-negative integer, 'same' or 'valid', got {padding!r}"
    )


def layer_specs(
    in_channels: int,
    channels: list[int],
    kernel_size: int | list[int] = 5,
    stride: int | list[int] = 1,
    dilation: int | list[int] = 1,
    padding: int | str | list[int | str] = "same",
    groups: int | list[int] = 1,
) -> list[LayerSpec]:
    """One LayerSpec per conv layer; every argument but ``channels`` may be one value or a list."""
    depth = len(channels)
    if depth == 0:
        raise UserError("model.channels must list at least one layer width, e.g. [32, 64]")
    per_layer = {
        name: _per_layer(value, depth, name)
        for name, value in (
            ("kernel_size", kernel_size),
            ("stride", stride),
            ("dilation", dilation),
            ("padding", padding),
            ("groups", groups),
        )
    }
    specs, c_in = [], in_channels
    for i, c_out in enumerate(channels):
        k, s, d, p, g = (
            per_layer[n][i] for n in ("kernel_size", "stride", "dilation", "padding", "groups")
        )
        for name, value in (
            ("channels", c_out),
            ("kernel_size", k),
            ("stride", s),
            ("dilation", d),
            ("groups", g),
        ):
            if not isinstance(value, int) or value < 1:
                raise UserError(
                    f"layer {i + 1}: model.{name} must be a positive integer, got {value!r}"
                )
        if c_in % g or c_out % g:
            raise UserError(
                f"layer {i + 1}: groups={g} must divide both in_channels={c_in} and "
                f"out_channels={c_out}; e.g. groups={c_in} with out_channels a multiple of {c_in} "
                "is a depthwise convolution"
            )
        specs.append(LayerSpec(c_in, c_out, k, s, d, *resolve_padding(p, k, d), g))
        c_in = c_out
    return specs


def check_fits(specs: list[LayerSpec], seq_len: int) -> list[int]:
    """Lengths after each layer; a layer that would get an empty output is a UserError."""
    lengths = [seq_len]
    for i, spec in enumerate(specs):
        out = spec.output_length(lengths[-1])
        if out < 1:
            span = spec.dilation * (spec.kernel_size - 1) + 1
            trail = " -> ".join(map(str, lengths))
            raise UserError(
                f"layer {i + 1} (kernel_size={spec.kernel_size}, dilation={spec.dilation}, "
                f"stride={spec.stride}, padding=({spec.pad_left}, {spec.pad_right})) spans {span} "
                f"steps but receives only {lengths[-1]} (sequence length {trail}); use a smaller "
                "kernel, dilation or stride, 'same' padding, or fewer layers"
            )
        lengths.append(out)
    return lengths


def layer_widths(channels: list[int] | None, depth: int | None, width: int | None) -> list[int]:
    """``channels``, or ``[width] * depth`` when it is null: two numbers a sweep can search."""
    if channels is not None:
        if depth is not None or width is not None:
            raise UserError(
                "set either model.channels or model.depth and model.width "
                "(with model.channels=null), not both"
            )
        return list(channels)
    if not (isinstance(depth, int) and isinstance(width, int) and depth >= 1 and width >= 1):
        raise UserError(
            f"with model.channels=null, model.depth and model.width must be positive integers, "
            f"got depth={depth!r}, width={width!r}"
        )
    return [width] * depth


@register("cnn")
class ConvNet(nn.Module):
    """The plain 1D-CNN: conv blocks -> masked global pooling over time -> one logit.

    Every setting but ``channels`` takes one value (all layers) or a list (one per
    layer); ``channels`` (or ``depth`` x ``width``) is the number of filters per layer.
    """

    def __init__(
        self,
        in_channels: int,
        seq_len: int,
        channels: list[int] | None = (32, 64, 64),
        kernel_size: int | list[int] = 5,
        stride: int | list[int] = 1,
        dilation: int | list[int] = 1,
        padding: int | str | list[int | str] = "same",
        groups: int | list[int] = 1,
        norm: str = "batch",
        activation: str = "relu",
        dropout: float = 0.1,
        pooling: str = "avgmax",
        depth: int | None = None,
        width: int | None = None,
        static_features: int = 0,
    ) -> None:
        super().__init__()
        self.specs = layer_specs(
            in_channels,
            layer_widths(channels, depth, width),
            kernel_size,
            stride,
            dilation,
            padding,
            groups,
        )
        self.lengths = check_fits(self.specs, seq_len)
        self.blocks = nn.ModuleList(ConvBlock(s, norm, activation, dropout) for s in self.specs)
        self.head = PooledHead(self.specs[-1].out_channels, pooling, dropout, static_features)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, static: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (N, C, L) float, valid: (N, L) bool, one contiguous run per patient, static:
        (N, S) covariates when the network reads S > 0 of them -> logits (N,)."""
        start, end = valid_interval(valid)
        x = x * valid.unsqueeze(1).to(x.dtype)  # padded steps are zeros, whatever was there
        for block in self.blocks:
            x, start, end = block(x, start, end)
        return self.head(x, steps_mask(start, end, x.shape[2]), static)

    def shape_table(self) -> list[dict]:
        """Per layer: what goes in, what comes out, how far back in time it sees."""
        rows, receptive, jump = [], 1, 1
        for i, (spec, block) in enumerate(zip(self.specs, self.blocks, strict=True)):
            receptive += (spec.kernel_size - 1) * spec.dilation * jump
            jump *= spec.stride
            rows.append(
                {
                    "layer": i + 1,
                    "in_channels": spec.in_channels,
                    "out_channels": spec.out_channels,
                    "kernel": spec.kernel_size,
                    "stride": spec.stride,
                    "dilation": spec.dilation,
                    "padding": f"{spec.pad_left},{spec.pad_right}",
                    "groups": spec.groups,
                    "length_in": self.lengths[i],
                    "length_out": self.lengths[i + 1],
                    "receptive_field": receptive,
                    "params": param_count(block),
                }
            )
        return rows


class ConvBlock(nn.Module):
    """pad -> Conv1d -> norm -> activation -> dropout, then zero the padding steps."""

    def __init__(self, spec: LayerSpec, norm: str, activation: str, dropout: float) -> None:
        super().__init__()
        self.spec = spec
        self.conv = nn.Conv1d(
            spec.in_channels,
            spec.out_channels,
            spec.kernel_size,
            stride=spec.stride,
            dilation=spec.dilation,
            groups=spec.groups,
            bias=norm == "none",
        )
        self.norm = make_norm(norm, spec.out_channels)
        self.act = make_activation(activation)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, start: torch.Tensor, end: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, C, L); ``[start, end)`` per patient are the real steps, the rest padding.

        The output interval is what the same layer would produce on the patient's steps
        alone (the length formula applied to each end), so outputs that would not exist
        without the padding are zeroed (and left out of the norm's statistics), and the
        next layer sees zeros there, just as it would see its own zero padding.
        """
        spec = self.spec
        x = self.conv(F.pad(x, (spec.pad_left, spec.pad_right)))
        span = spec.dilation * (spec.kernel_size - 1) + 1
        start = torch.div(start + spec.stride - 1, spec.stride, rounding_mode="floor")
        end = (
            torch.div(
                end + spec.pad_left + spec.pad_right - span, spec.stride, rounding_mode="floor"
            )
            + 1
        )
        mask = steps_mask(start, end, x.shape[2])
        x = self.drop(self.act(self.norm(x, mask)))
        return x * mask.to(x.dtype), start, end


def _per_layer(value: object, depth: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != depth:
            raise UserError(
                f"model.{name} lists {len(value)} values but model.channels has {depth} layers"
            )
        return list(value)
    return [value] * depth
