"""The time-series ResNet of Wang, Yan and Oates (2017), "resnet" in the registry.

Residual blocks of three 'same' convolutions (kernels 8, 5 and 3 by default), each
followed by BatchNorm and ReLU; a 1x1 convolution matches the shortcut's channels. The
blocks keep the sequence length (stride 1), so a shortcut adds step to step; masked
global pooling over time feeds one linear logit. The paper's widths are 64, 128, 128.
"""

from __future__ import annotations

import torch
from torch import nn

from patientcnn.errors import UserError
from patientcnn.models.layers import (
    MaskedStack,
    PooledHead,
    SameConv1d,
    make_activation,
    make_norm,
    param_count,
    positive_int,
)
from patientcnn.models.registry import register


@register("resnet")
class ResNet(MaskedStack):
    def __init__(
        self,
        in_channels: int,
        seq_len: int,
        channels: list[int] = (64, 128, 128),
        kernel_size: list[int] = (8, 5, 3),
        dilation: int = 1,
        groups: int = 1,
        norm: str = "batch",
        activation: str = "relu",
        dropout: float = 0.0,
        pooling: str = "avg",
        static_features: int = 0,
    ) -> None:
        super().__init__()
        kernels = [positive_int("kernel_size", k) for k in _as_list(kernel_size)]
        widths = [positive_int("channels", c) for c in _as_list(channels)]
        positive_int("dilation", dilation)
        positive_int("groups", groups)
        if not widths:
            raise UserError("model.channels must list at least one block width, e.g. [64, 128]")
        self.seq_len = seq_len
        blocks, c_in = [], in_channels
        for width in widths:
            blocks.append(ResidualBlock(c_in, width, kernels, dilation, groups, norm, activation))
            c_in = width
        self.blocks = nn.ModuleList(blocks)
        self.head = PooledHead(c_in, pooling, dropout, static_features)

    def shape_table(self) -> list[dict]:
        rows, receptive = [], 1
        for i, block in enumerate(self.blocks):
            receptive += sum((conv.kernel_size[0] - 1) * conv.dilation[0] for conv in block.convs)
            rows.append(
                {
                    "layer": f"res{i + 1}",
                    "in_channels": block.convs[0].in_channels,
                    "out_channels": block.convs[-1].out_channels,
                    "kernel": "/".join(str(c.kernel_size[0]) for c in block.convs),
                    "stride": 1,
                    "dilation": block.convs[0].dilation[0],
                    "padding": "same",
                    "groups": block.convs[-1].groups,
                    "length_in": self.seq_len,
                    "length_out": self.seq_len,
                    "receptive_field": receptive,
                    "params": param_count(block),
                }
            )
        return rows


class ResidualBlock(nn.Module):
    """conv-norm-act x len(kernels), plus the (1x1-projected) input, then act."""

    def __init__(self, c_in, c_out, kernels, dilation, groups, norm, activation) -> None:
        super().__init__()
        first_groups = groups if c_in % groups == 0 and c_out % groups == 0 else 1
        self.convs = nn.ModuleList(
            SameConv1d(
                c_in if i == 0 else c_out,
                c_out,
                k,
                dilation=dilation,
                groups=first_groups if i == 0 else groups,
                bias=False,
            )
            for i, k in enumerate(kernels)
        )
        if c_out % groups:
            raise UserError(f"model.groups={groups} must divide every block width, got {c_out}")
        self.norms = nn.ModuleList(make_norm(norm, c_out) for _ in kernels)
        self.act = make_activation(activation)
        self.shortcut = nn.Conv1d(c_in, c_out, 1, bias=False) if c_in != c_out else None
        self.shortcut_norm = make_norm(norm, c_out) if c_in != c_out else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.to(x.dtype)
        residual = x
        if self.shortcut is not None:
            residual = self.shortcut_norm(self.shortcut(x), mask)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = norm(conv(x), mask)
            if i < len(self.convs) - 1:
                x = self.act(x) * keep
        return self.act(x + residual) * keep


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]
