"""The series itself and a linear readout, "linear" in the registry.

The plainest model of a time series: one weight per feature and time step, the logistic
regression on the flattened series that every benchmark lists as its first peer. Where the
outcome is a weighted sum of values at fixed times (a level shift in an EEG window, an
absorbance band of a spectrum, a vital sign at admission) it needs no kernels and no
statistics, and on a few dozen patients it can beat both. As a network it is a 1D-CNN
whose single kernel spans the whole series.

Each patient's first real step is read as step 0 (padding before it is dropped), padded
steps are zero, and a series longer than ``max_features / C`` steps is read as means of
``pool`` consecutive steps, so that the readout never has more than ``max_features``
weights.

Like ``rocket`` and ``summary`` it is fitted in closed form, as a partner of the trained
networks (``patientcnn.partner``): ``fit_biases`` has nothing to fit, ``features`` gives
the (pooled) values, ``set_readout`` takes the ridge readout
(``patientcnn.models.closed_form``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from patientcnn.models.closed_form import ClosedFormNetwork
from patientcnn.models.layers import positive_int, static_width, valid_interval
from patientcnn.models.registry import register


@register("linear")
class FlattenedSeries(ClosedFormNetwork):
    differentiable = True

    def __init__(
        self,
        in_channels: int,
        seq_len: int,
        max_features: int = 10000,
        static_features: int = 0,
    ) -> None:
        super().__init__()
        self.in_channels, self.seq_len = in_channels, seq_len
        self.max_features = positive_int("partner.linear.max_features", max_features)
        self.pool = max(1, math.ceil(in_channels * seq_len / self.max_features))
        self.length = math.ceil(seq_len / self.pool)
        self.n_features = in_channels * self.length
        self.static_features = static_width(static_features)
        self.readout = nn.Linear(self.n_features + self.static_features, 1)

    def features(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # each patient's real steps from step 0, wherever the padding put them
        start, _ = valid_interval(valid)
        index = start[:, None] + torch.arange(valid.shape[1], device=valid.device)[None]
        inside = index < valid.shape[1]
        index = index.clamp(max=valid.shape[1] - 1)
        real = valid.gather(1, index) & inside
        values = x.gather(2, index[:, None].expand_as(x)) * real.unsqueeze(1).to(x.dtype)
        if self.pool > 1:  # means of `pool` steps (the last window: of the steps it has)
            values = F.avg_pool1d(values, self.pool, ceil_mode=True, count_include_pad=True)
        return values.flatten(1)

    def shape_table(self) -> list[dict]:
        kernel = f"{self.length} steps" + (f" (means of {self.pool})" if self.pool > 1 else "")
        return [self.readout_row("series+linear", self.in_channels, kernel, self.seq_len)]
