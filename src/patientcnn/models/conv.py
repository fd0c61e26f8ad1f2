"""The 1D-CNN and the arithmetic that says what each layer does to the tensor shape.

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

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU}
NORMS = ("batch", "layer", "none")
POOLINGS = ("avg", "max", "avgmax")


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
        total = dilation * (kernel_size - 1)
        return total // 2, total - total // 2
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


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels at each time step, so padding never enters the statistics."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


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
        self.norm = {
            "batch": lambda: nn.BatchNorm1d(spec.out_channels),
            "layer": lambda: ChannelLayerNorm(spec.out_channels),
            "none": nn.Identity,
        }[norm]()
        self.act = ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, start: torch.Tensor, end: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, C, L); ``[start, end)`` per patient are the real steps, the rest padding.

        The output interval is what the same layer would produce on the patient's steps
        alone (the length formula applied to each end), so outputs that would not exist
        without the padding are zeroed, and the next layer sees zeros there, just as it
        would see its own zero padding.
        """
        spec = self.spec
        x = F.pad(x, (spec.pad_left, spec.pad_right))
        x = self.drop(self.act(self.norm(self.conv(x))))
        span = spec.dilation * (spec.kernel_size - 1) + 1
        start = torch.div(start + spec.stride - 1, spec.stride, rounding_mode="floor")
        end = (
            torch.div(
                end + spec.pad_left + spec.pad_right - span, spec.stride, rounding_mode="floor"
            )
            + 1
        )
        return x * steps_mask(start, end, x.shape[2]).to(x.dtype), start, end


def steps_mask(start: torch.Tensor, end: torch.Tensor, length: int) -> torch.Tensor:
    """(N,) intervals -> (N, 1, length) bool mask of the steps inside them."""
    steps = torch.arange(length, device=start.device)
    return ((steps >= start[:, None]) & (steps < end[:, None])).unsqueeze(1)


class ConvNet(nn.Module):
    """Conv blocks -> masked global pooling over time -> one logit per patient."""

    def __init__(
        self,
        in_channels: int,
        seq_len: int,
        channels: list[int],
        kernel_size: int | list[int] = 5,
        stride: int | list[int] = 1,
        dilation: int | list[int] = 1,
        padding: int | str | list[int | str] = "same",
        groups: int | list[int] = 1,
        norm: str = "batch",
        activation: str = "relu",
        dropout: float = 0.1,
        pooling: str = "avgmax",
    ) -> None:
        super().__init__()
        _check_choice("norm", norm, NORMS)
        _check_choice("activation", activation, tuple(ACTIVATIONS))
        _check_choice("pooling", pooling, POOLINGS)
        self.specs = layer_specs(
            in_channels, list(channels), kernel_size, stride, dilation, padding, groups
        )
        self.lengths = check_fits(self.specs, seq_len)
        self.blocks = nn.ModuleList(ConvBlock(s, norm, activation, dropout) for s in self.specs)
        self.pooling = pooling
        width = self.specs[-1].out_channels * (2 if pooling == "avgmax" else 1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x: (N, C, L) float, valid: (N, L) bool, one contiguous run per patient -> logits (N,)."""
        start = valid.int().argmax(dim=1)
        end = valid.shape[1] - valid.flip(1).int().argmax(dim=1)
        end = torch.where(valid.any(dim=1), end, start)
        for block in self.blocks:
            x, start, end = block(x, start, end)
        mask = steps_mask(start, end, x.shape[2]).to(x.dtype)
        return self.head(masked_pool(x, mask, self.pooling)).squeeze(1)

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
                    "params": sum(p.numel() for p in block.parameters()),
                }
            )
        return rows


def masked_pool(x: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Average and/or max over the valid time steps only: (N, C, L) -> (N, C or 2C)."""
    count = mask.sum(dim=2).clamp(min=1.0)
    parts = []
    if pooling in ("avg", "avgmax"):
        parts.append((x * mask).sum(dim=2) / count)
    if pooling in ("max", "avgmax"):
        peak = x.masked_fill(mask == 0, float("-inf")).amax(dim=2)
        parts.append(torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak)))
    return torch.cat(parts, dim=1)


def format_shape_table(rows: list[dict], batch: str = "N") -> str:
    """The shape table as aligned text, with the tensor shape after each layer."""
    headers = [
        "layer",
        "in_ch",
        "out_ch (filters)",
        "kernel",
        "stride",
        "dilation",
        "padding",
        "groups",
        "L_in",
        "L_out",
        "receptive field",
        "params",
        "output shape",
    ]
    body = [
        [
            str(r["layer"]),
            str(r["in_channels"]),
            str(r["out_channels"]),
            str(r["kernel"]),
            str(r["stride"]),
            str(r["dilation"]),
            r["padding"],
            str(r["groups"]),
            str(r["length_in"]),
            str(r["length_out"]),
            f"{r['receptive_field']} steps",
            f"{r['params']:,}",
            f"({batch}, {r['out_channels']}, {r['length_out']})",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(lines)


def _per_layer(value: object, depth: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != depth:
            raise UserError(
                f"model.{name} lists {len(value)} values but model.channels has {depth} layers"
            )
        return list(value)
    return [value] * depth


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"model.{name} must be one of {', '.join(choices)}; got {value!r}")
