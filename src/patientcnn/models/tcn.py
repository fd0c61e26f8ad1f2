"""A temporal convolutional network (Bai, Kolter and Koltun 2018), "tcn" in the registry.

Residual blocks of two dilated causal convolutions: step t sees only steps up to t, and
block i dilates by 2**i, so the receptive field doubles with every block (printed in
the shape table). Each convolution is followed by a norm, ReLU and dropout; a 1x1
convolution matches the residual's channels. Masked global pooling over the real
steps and one linear logit follow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from patientcnn.models.layers import (
    MaskedStack,
    PooledHead,
    make_activation,
    make_norm,
    param_count,
    positive_int,
)
from patientcnn.models.registry import register


@register("tcn")
class TCN(MaskedStack):
    def __init__(
        self,
        in_channels: int,
        seq_len: int,
        depth: int = 6,
        width: int = 64,
        kernel_size: int = 5,
        dilation_base: int = 2,
        groups: int = 1,
        norm: str = "batch",
        activation: str = "relu",
        dropout: float = 0.1,
        pooling: str = "avgmax",
        static_features: int = 0,
    ) -> None:
        super().__init__()
        positive_int("depth", depth)
        positive_int("width", width)
        positive_int("kernel_size", kernel_size)
        positive_int("dilation_base", dilation_base)
        self.seq_len = seq_len
        blocks, c_in = [], in_channels
        for i in range(depth):
            blocks.append(
                CausalBlock(
                    c_in, width, kernel_size, dilation_base**i, groups, norm, activation, dropout
                )
            )
            c_in = width
        self.blocks = nn.ModuleList(blocks)
        self.head = PooledHead(width, pooling, dropout, static_features)

    def shape_table(self) -> list[dict]:
        rows, receptive = [], 1
        for i, block in enumerate(self.blocks):
            receptive += 2 * (block.kernel_size - 1) * block.dilation
            rows.append(
                {
                    "layer": f"tcn{i + 1}",
                    "in_channels": block.conv1.in_channels,
                    "out_channels": block.conv2.out_channels,
                    "kernel": f"{block.kernel_size}x2",
                    "stride": 1,
                    "dilation": block.dilation,
                    "padding": f"{block.left},0",
                    "groups": block.conv2.groups,
                    "length_in": self.seq_len,
                    "length_out": self.seq_len,
                    "receptive_field": receptive,
                    "params": param_count(block),
                }
            )
        return rows


class CausalBlock(nn.Module):
    def __init__(self, c_in, c_out, kernel_size, dilation, groups, norm, activation, dropout):
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.left = (kernel_size - 1) * dilation  # causal: all padding on the past side
        first_groups = groups if c_in % groups == 0 else 1
        self.conv1 = nn.Conv1d(
            c_in, c_out, kernel_size, dilation=dilation, groups=first_groups, bias=False
        )
        self.conv2 = nn.Conv1d(
            c_out, c_out, kernel_size, dilation=dilation, groups=groups, bias=False
        )
        self.norm1, self.norm2 = make_norm(norm, c_out), make_norm(norm, c_out)
        self.act = make_activation(activation)
        self.drop = nn.Dropout(dropout)
        self.shortcut = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.to(x.dtype)
        out = self.drop(self.act(self.norm1(self.conv1(F.pad(x, (self.left, 0))), mask))) * keep
        out = self.drop(self.act(self.norm2(self.conv2(F.pad(out, (self.left, 0))), mask)))
        residual = x if self.shortcut is None else self.shortcut(x)
        return self.act(out + residual) * keep
