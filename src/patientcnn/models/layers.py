"""Building blocks every network family shares: masks, masked normalisation and pooling.

A batch holds patients of different lengths, padded to one length L. ``valid`` (N, L)
marks each patient's real steps. Three things would let the padding leak into a
patient's prediction, and each has its answer here:

- a convolution reads the padded steps next to a patient's last real step: every
  block multiplies its output by the mask, so a layer sees zeros there, exactly what
  its own zero padding would give on the unpadded sequence;
- BatchNorm's batch statistics would count padded steps: ``MaskedBatchNorm1d``
  averages over real steps only;
- global pooling would average padded steps in: ``masked_pool`` pools real steps only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from patientcnn.errors import UserError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU}
NORMS = ("batch", "layer", "none")
POOLINGS = ("avg", "max", "avgmax")
# Static covariates enter the head multiplied by this: Adam moves every weight by about the
# learning rate per step, so a covariate worth one logit per standard deviation would need
# ~1000 steps at lr 1e-3 from its zero start; times 10 it needs ~100, as the convolutional
# features (products of several layers' weights) do. Stored with the weights (a buffer).
STATIC_GAIN = 10.0


def steps_mask(start: torch.Tensor, end: torch.Tensor, length: int) -> torch.Tensor:
    """(N,) intervals -> (N, 1, length) bool mask of the steps inside them."""
    steps = torch.arange(length, device=start.device)
    return ((steps >= start[:, None]) & (steps < end[:, None])).unsqueeze(1)


def valid_interval(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) bool with one contiguous run of real steps per patient -> its [start, end)."""
    start = valid.int().argmax(dim=1)
    end = valid.shape[1] - valid.flip(1).int().argmax(dim=1)
    return start, torch.where(valid.any(dim=1), end, start)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics count only the real (unpadded) steps.

    In evaluation it is an ordinary BatchNorm1d (running statistics), so exported graphs
    and TorchScript see the standard operator. When no step of the batch is padding the
    standard kernel runs, which gives the same numbers faster.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or mask is None or bool(mask.all()):
            return super().forward(x)
        weights = mask.to(x.dtype)
        count = weights.sum().clamp(min=2.0)
        mean = (x * weights).sum(dim=(0, 2)) / count
        centred = (x - mean[None, :, None]) * weights
        var = (centred * centred).sum(dim=(0, 2)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                # momentum None: the cumulative mean over batches, as nn.BatchNorm1d keeps it
                m = self.momentum
                if m is None:
                    m = 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * count / (count - 1), m)
        out = (x - mean[None, :, None]) * torch.rsqrt(var + self.eps)[None, :, None]
        if self.affine:
            out = out * self.weight[None, :, None] + self.bias[None, :, None]
        return out


@torch.no_grad()
def precise_norm_statistics(
    net: torch.nn.Module,
    x,
    valid,
    static=None,
    device: torch.device | str = "cpu",
    max_patients: int = 512,
    batch_size: int = 64,
) -> None:
    """Recompute every BatchNorm's running mean and variance for the network's current
    weights: the plain average of the batch statistics over up to ``max_patients``
    training patients (evenly spaced among them), in batches of ``batch_size``, with the
    network as it predicts (dropout off); every module's mode is restored after.

    In training BatchNorm keeps a moving average of past batches' statistics, each taken
    under older weights; with batches of 8-16 patients and a learning rate still high
    (the step that validation keeps is often mid-schedule) that average is off for the
    weights being validated. Recomputing it is the "precise BatchNorm" of Wu and Johnson
    (2021, "Rethinking 'Batch' in BatchNorm"); ``torch.optim.swa_utils.update_bn`` does
    the same after weight averaging. Only the statistics change: no weight, and no
    random draw, so training goes on exactly as it would have without.
    """
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or len(x) == 0:
        return
    modes = [(m, m.training) for m in net.modules()]
    momenta = [(m, m.momentum) for m in norms]
    net.eval()  # the network as it predicts: no dropout
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # the cumulative average of the batches below
        m.train()
    n = len(x)
    rows = np.unique(np.linspace(0, n - 1, min(n, max_patients)).round().astype(np.int64))
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            inputs = (x[chunk].to(device), valid[chunk].to(device))
            net(*inputs, static[chunk].to(device) if static is not None else None)
    finally:
        for m, momentum in momenta:
            m.momentum = momentum
        for m, training in modes:
            m.training = training


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels at each time step, so padding never enters the statistics."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class NoNorm(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x


def make_norm(norm: str, channels: int) -> nn.Module:
    """A normalisation layer called as ``norm(x, mask)``; padding never enters its statistics."""
    check_choice("norm", norm, NORMS)
    if norm == "batch":
        return MaskedBatchNorm1d(channels)
    if norm == "layer":
        return ChannelLayerNorm(channels)
    return NoNorm()


def make_activation(activation: str) -> nn.Module:
    check_choice("activation", activation, tuple(ACTIVATIONS))
    return ACTIVATIONS[activation]()


def masked_pool(x: torch.Tensor, mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """Average and/or max over the valid time steps only: (N, C, L) -> (N, C or 2C).
    ``mask`` None: every step is real."""
    if mask is None:
        parts = [x.mean(dim=2)] if pooling in ("avg", "avgmax") else []
        return torch.cat(parts + ([x.amax(dim=2)] if pooling in ("max", "avgmax") else []), 1)
    mask = mask.to(x.dtype)
    count = mask.sum(dim=2).clamp(min=1.0)
    parts = []
    if pooling in ("avg", "avgmax"):
        parts.append((x * mask).sum(dim=2) / count)
    if pooling in ("max", "avgmax"):
        peak = x.masked_fill(mask == 0, float("-inf")).amax(dim=2)
        parts.append(torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak)))
    return torch.cat(parts, dim=1)


def masked_max_pool(
    x: torch.Tensor, mask: torch.Tensor | None, kernel_size: int = 3, training: bool = False
) -> torch.Tensor:
    """Max over a sliding window of real steps (padding counts as -inf, as on the edges).

    ``mask`` None means no step is padding. While ``training``, the 3-step window (the
    Inception module's) uses ``MaxPool3``, which computes the same values and gradients
    several times faster than ``max_pool1d`` on a CPU; exported graphs see ``max_pool1d``.
    """
    filled = x if mask is None else x.masked_fill(~mask, float("-inf"))
    if training and kernel_size == 3:
        out = MaxPool3.apply(filled)
    else:
        out = F.max_pool1d(filled, kernel_size, stride=1, padding=kernel_size // 2)
    return out if mask is None else out.masked_fill(~mask, 0.0)


class MaxPool3(torch.autograd.Function):
    """``max_pool1d(x, 3, stride=1, padding=1)`` by three shifted maxima, keeping which
    neighbour won (first of equals, as max_pool1d) instead of int64 indices."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (1, 1), value=float("-inf"))
        left, mid, right = padded[..., :-2], padded[..., 1:-1], padded[..., 2:]
        out = torch.maximum(torch.maximum(left, mid), right)
        from_left = left == out
        ctx.save_for_backward(from_left, (mid == out) & ~from_left)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        from_left, from_mid = ctx.saved_tensors
        to_left = grad_out * from_left
        grad = grad_out * from_mid
        to_right = grad_out - to_left - grad
        grad[..., :-1] += to_left[..., 1:]
        grad[..., 1:] += to_right[..., :-1]
        return grad


class PooledHead(nn.Module):
    """Masked global pooling over time, the static covariates joined, dropout, one linear
    logit per patient.

    ``static_features`` > 0: the (N, S) static covariates (age, sex...; encoded by
    ``patientcnn.data.static``) are concatenated to the pooled convolutional features, so
    the linear layer reads ``width = pooled + S`` inputs. Their weights start at 0 (a
    covariate has no effect until training finds one) and they enter scaled by
    ``STATIC_GAIN`` (see there), so that they are learned in as many steps as the series.
    """

    def __init__(
        self, channels: int, pooling: str, dropout: float, static_features: int = 0
    ) -> None:
        super().__init__()
        check_choice("pooling", pooling, POOLINGS)
        self.pooling = pooling
        self.pooled = channels * (2 if pooling == "avgmax" else 1)
        self.static_features = static_width(static_features)
        self.width = self.pooled + self.static_features
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(self.width, 1)
        with torch.no_grad():  # a covariate starts with no effect, so its weight moves from 0
            self.linear.weight[:, self.pooled :] = 0.0  # in the direction of its gradient
        if self.static_features:
            self.register_buffer("static_gain", torch.tensor(STATIC_GAIN))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, static: torch.Tensor | None = None
    ) -> torch.Tensor:
        features = masked_pool(x, mask, self.pooling)
        if self.static_features:
            if static is None:
                raise ValueError(
                    f"this network was trained with {self.static_features} static covariates; "
                    "pass them as forward(x, valid, static)"
                )
            features = torch.cat([features, static.to(features.dtype) * self.static_gain], dim=1)
        return self.linear(self.drop(features)).squeeze(1)

    def describe(self, static_names: list[str] | None = None) -> str:
        """One line: what the linear layer reads (the head's input), and its output."""
        pooled = {"avg": "average", "max": "maximum", "avgmax": "average and maximum"}
        text = f"head: (N, {self.pooled}) pooled features ({pooled[self.pooling]} over real steps)"
        if self.static_features:
            names = f": {', '.join(static_names)}" if static_names else ""
            text += f" + (N, {self.static_features}) static covariates{names}"
            text += f" = (N, {self.width})"
        return text + f" -> Linear ({self.width + 1:,} params) -> (N,) logits"


def describe_head(net: nn.Module, static_names: list[str] | None = None) -> str | None:
    """The head line of a network built with a ``PooledHead``; None for one without."""
    head = next((m for m in net.modules() if isinstance(m, PooledHead)), None)
    return head.describe(static_names) if head is not None else None


class MaskedStack(nn.Module):
    """A network of ``self.blocks`` (each called as ``block(x, mask)`` and keeping the
    length) and ``self.head``: the forward pass the stride-1 families share."""

    blocks: nn.ModuleList
    head: PooledHead

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, static: torch.Tensor | None = None
    ) -> torch.Tensor:
        mask = valid.unsqueeze(1)
        x = x * mask.to(x.dtype)  # padded steps are zeros, whatever was there
        for block in self.blocks:
            x = block(x, mask)
        return self.head(x, mask, static)


def align_start(x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each patient's series shifted so that its first real step is step 0, padding zeroed;
    and the (N, L) 0/1 weights of the real steps after the shift."""
    n, c, length = x.shape
    start, end = valid_interval(valid)
    steps = torch.arange(length, device=x.device)
    index = (start[:, None] + steps).clamp(max=length - 1)
    keep = (steps < (end - start)[:, None]).to(x.dtype)
    return x.gather(2, index[:, None, :].expand(n, c, length)) * keep[:, None, :], keep


def window_means(
    x: torch.Tensor, keep: torch.Tensor, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of the real steps in windows of ``factor`` steps of start-aligned ``x``:
    (N, C, ceil(L / factor)) means and (N, ceil(L / factor)) real-step counts."""
    n, c, length = x.shape
    extra = (factor - length % factor) % factor
    total = F.pad(x, (0, extra)).reshape(n, c, -1, factor).sum(dim=3)
    count = F.pad(keep, (0, extra)).reshape(n, -1, factor).sum(dim=2)
    return total / count.clamp(min=1.0)[:, None, :], count


class Downsampled(nn.Module):
    """A network that sees each patient's series averaged over windows of ``factor`` steps.

    Long series cost a convolutional network in proportion to their length; on a CPU
    budget that means few epochs (``patientcnn.recipe`` picks the factor by rule). Each
    patient's series is first shifted so that its first real step is step 0, then every
    ``factor`` consecutive real steps are averaged (a window with at least one real step
    is real): the windows never depend on how much padding surrounds a patient.
    """

    def __init__(self, net: nn.Module, factor: int, seq_len: int) -> None:
        super().__init__()
        self.net = net
        self.factor = positive_int("downsample", factor)
        self.seq_len = seq_len

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, static: torch.Tensor | None = None
    ) -> torch.Tensor:
        means, count = window_means(*align_start(x, valid), self.factor)
        return self.net(means, count > 0, static)

    def shape_table(self) -> list[dict]:
        rows = self.net.shape_table()
        first = rows[0]
        pool = {
            "layer": "downsample",
            "in_channels": first["in_channels"],
            "out_channels": first["in_channels"],
            "kernel": f"avg{self.factor}",
            "stride": self.factor,
            "dilation": 1,
            "padding": "0",
            "groups": first["in_channels"],
            "length_in": self.seq_len,
            "length_out": first["length_in"],
            "receptive_field": self.factor,
            "params": 0,
        }
        for row in rows:  # receptive fields in the caller's steps
            row["receptive_field"] = row["receptive_field"] * self.factor
        return [pool, *rows]


def same_padding(kernel_size: int, dilation: int) -> tuple[int, int]:
    """'same' pads d*(k-1) in total; the left side gets the smaller half (even kernels too)."""
    total = dilation * (kernel_size - 1)
    return total // 2, total - total // 2


# The most taps one convolution applies while a CPU trains. oneDNN's backward pass (the
# weights' and the input's gradients) takes ~2.5x as long for a kernel of 15 taps or more
# as for one of 13 on the 2-core Xeon of docs/DEFAULTS.md's fifteenth round (16 -> 16
# channels, batch 64: 9 ms against 22-25 ms for 13 and 19 taps), so a longer kernel is
# applied in pieces of at most this many taps whose outputs add up: the same sums in
# another order. With 16 or more input channels (per group) that made a 19-tap
# convolution's forward and backward pass 1.3-2x faster, and InceptionTime's training
# steps at batch 64 x 250 steps 1.16x (at batch 8-16 x 84-512 no faster, no slower
# within the noise); with 1 to 12 channels it was up to 2x slower, so narrower inputs
# take the one convolution.
PIECE_TAPS = 13
PIECE_MIN_CHANNELS = 16


class SameConv1d(nn.Conv1d):
    """Conv1d with 'same' zero padding for any kernel (odd or even) and dilation.

    While training on a CPU, a kernel longer than ``PIECE_TAPS`` that reads at least
    ``PIECE_MIN_CHANNELS`` channels runs as pieces of at most that many taps (see there);
    evaluation, exported graphs and GPUs take the one convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, **kwargs) -> None:
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        self.pads = same_padding(kernel_size, self.dilation[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.pads)
        taps = self.kernel_size[0]
        wide = self.in_channels // self.groups >= PIECE_MIN_CHANNELS
        pieces = self.training and x.device.type == "cpu" and not torch.jit.is_tracing()
        if taps <= PIECE_TAPS or not (wide and pieces):
            return super().forward(x)
        (stride,), (dilation,) = self.stride, self.dilation
        steps = (x.shape[2] - dilation * (taps - 1) - 1) // stride + 1
        out = None
        for first in range(0, taps, PIECE_TAPS):
            last = min(taps, first + PIECE_TAPS)  # taps first..last-1, read from step first*d
            reach = (steps - 1) * stride + dilation * (last - first - 1) + 1
            piece = x[..., first * dilation : first * dilation + reach]
            part = F.conv1d(
                piece, self.weight[..., first:last], None, stride, 0, dilation, self.groups
            )
            out = part if out is None else out + part
        return out if self.bias is None else out + self.bias[:, None]


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"model.{name} must be one of {', '.join(choices)}; got {value!r}")


def positive_int(name: str, value: object) -> int:
    """``value``, checked; ``name`` is a model setting, or a dotted config path
    (``partner.rocket.features``) for the settings of the closed-form partners."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        setting = name if "." in name else f"model.{name}"
        raise UserError(f"{setting} must be a positive integer, got {value!r}")
    return value


def true_or_false(name: str, value: object) -> bool:
    """``value``, checked to be a boolean; ``name`` as in ``positive_int``."""
    if not isinstance(value, bool):
        setting = name if "." in name else f"model.{name}"
        raise UserError(f"{setting} must be true or false, got {value!r}")
    return value


def static_width(value: object) -> int:
    """The number of static covariates a network reads beside the series (0: none)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"model.static_features must be a whole number >= 0, got {value!r}")
    return value


def receptive_field(kernel_sizes: list[int], dilations: list[int]) -> int:
    """Steps one output sees through stride-1 convolutions in sequence."""
    return 1 + sum((k - 1) * d for k, d in zip(kernel_sizes, dilations, strict=True))


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


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
