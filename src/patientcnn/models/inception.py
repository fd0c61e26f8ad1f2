"""InceptionTime (Ismail Fawaz et al. 2020), "inceptiontime" in the registry.

Each Inception module squeezes its input through a 1x1 bottleneck, runs three 'same'
convolutions of different lengths on it in parallel (``kernel_size``, half and a
quarter of it, made odd: 39, 19, 9 by default) beside a 3-step max-pool followed by a
1x1 convolution, and concatenates the four branches (4 x ``width`` channels) before
BatchNorm and ReLU. Every third module adds a residual connection from three modules
back. Masked global average pooling (joined by the static covariates, if any) and one
linear logit follow. The paper's network
is 6 modules of width 32; ``InceptionTime`` in that paper is an ensemble of 5 of them
(``model.ensemble=5`` here).
"""

from __future__ import annotations

import torch
from torch import nn

from patientcnn.models.layers import (
    PooledHead,
    SameConv1d,
    make_activation,
    make_norm,
    masked_max_pool,
    param_count,
    positive_int,
)
from patientcnn.models.registry import register


def branch_kernels(kernel_size: int) -> list[int]:
    """The three branch lengths: k, k/2, k/4, each made odd so that padding is symmetric."""
    return [max(1, (kernel_size // 2**i) - (1 - (kernel_size // 2**i) % 2)) for i in range(3)]


@register("inceptiontime")
class InceptionTime(nn.Module):
    def __init__(
        self,
        in_channels: int,
        seq_len: int,
        depth: int = 6,
        width: int = 32,
        kernel_size: int = 40,
        bottleneck: int = 32,
        dilation: int = 1,
        residual: bool = True,
        norm: str = "batch",
        activation: str = "relu",
        dropout: float = 0.0,
        pooling: str = "avg",
        static_features: int = 0,
    ) -> None:
        super().__init__()
        positive_int("depth", depth)
        positive_int("width", width)
        positive_int("kernel_size", kernel_size)
        positive_int("bottleneck", bottleneck)
        positive_int("dilation", dilation)
        self.seq_len = seq_len
        kernels = branch_kernels(kernel_size)
        modules, shortcuts, c_in = [], [], in_channels
        residual_in = in_channels
        for d in range(depth):
            modules.append(
                InceptionModule(c_in, width, kernels, bottleneck, dilation, norm, activation)
            )
            c_in = 4 * width
            if residual and d % 3 == 2:
                shortcuts.append(Shortcut(residual_in, c_in, norm))
                residual_in = c_in
        self.inception = nn.ModuleList(modules)
        self.shortcuts = nn.ModuleList(shortcuts)
        self.residual = bool(residual)
        self.act = make_activation(activation)
        self.head = PooledHead(c_in, pooling, dropout, static_features)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, static: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.training and bool(valid.all()):
            return self._forward(x, None, static)  # no padding in this batch: skip the masking
        return self._forward(x * valid.unsqueeze(1).to(x.dtype), valid.unsqueeze(1), static)

    def _forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, static: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``mask`` (N, 1, L), or None when no step is padding; padded steps of x are 0."""
        residual = x
        for d, module in enumerate(self.inception):
            x = module(x, mask)
            if self.residual and d % 3 == 2:
                x = self.act(x + self.shortcuts[d // 3](residual, mask))
                if mask is not None:
                    x = x * mask.to(x.dtype)
                residual = x
        return self.head(x, mask, static)

    def shape_table(self) -> list[dict]:
        rows, receptive = [], 1
        for d, module in enumerate(self.inception):
            receptive += (module.convs[0].kernel_size[0] - 1) * module.convs[0].dilation[0]
            params = param_count(module)
            if self.residual and d % 3 == 2:
                params += param_count(self.shortcuts[d // 3])
            rows.append(
                {
                    "layer": f"inc{d + 1}" + ("+res" if self.residual and d % 3 == 2 else ""),
                    "in_channels": module.in_channels,
                    "out_channels": module.out_channels,
                    "kernel": "/".join(str(c.kernel_size[0]) for c in module.convs) + "/pool3",
                    "stride": 1,
                    "dilation": module.convs[0].dilation[0],
                    "padding": "same",
                    "groups": 1,
                    "length_in": self.seq_len,
                    "length_out": self.seq_len,
                    "receptive_field": receptive,
                    "params": params,
                }
            )
        return rows


class InceptionModule(nn.Module):
    def __init__(self, c_in, width, kernels, bottleneck, dilation, norm, activation) -> None:
        super().__init__()
        self.in_channels, self.out_channels = c_in, 4 * width
        self.bottleneck = nn.Conv1d(c_in, bottleneck, 1, bias=False) if c_in > 1 else None
        branch_in = bottleneck if c_in > 1 else c_in
        self.convs = nn.ModuleList(
            SameConv1d(branch_in, width, k, dilation=dilation, bias=False) for k in kernels
        )
        self.pool_conv = nn.Conv1d(c_in, width, 1, bias=False)
        self.norm = make_norm(norm, 4 * width)
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        squeezed = self.bottleneck(x) if self.bottleneck is not None else x
        branches = [conv(squeezed) for conv in self.convs]
        branches.append(self.pool_conv(masked_max_pool(x, mask, training=self.training)))
        out = self.act(self.norm(torch.cat(branches, dim=1), mask))
        return out if mask is None else out * mask.to(out.dtype)


class Shortcut(nn.Module):
    """1x1 convolution + norm that brings the residual input to the module's channels."""

    def __init__(self, c_in: int, c_out: int, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, 1, bias=False)
        self.norm = make_norm(norm, c_out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.norm(self.conv(x), mask)
