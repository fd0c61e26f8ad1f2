"""Six statistics per feature and a linear readout, "summary" in the registry.

The oldest model of clinical time series: each feature of a stay reduced to its mean,
standard deviation, minimum, maximum, last value and least-squares slope per step over
the patient's real steps, and one linear logit over those 6 x C numbers. As a network it
is a 1D-CNN of kernel size 1 whose global pooling is these six statistics. It sees
levels and trends, where a convolution sees shapes; on cohorts whose outcome follows a
level or a drift (the synthetic ICU cohort: a drift of the vitals after an onset) it is
the strongest member of the ensemble, and elsewhere the blend gives it no weight
(docs/DEFAULTS.md).

It is the model of the report's two baselines too (``report.baselines``: the same
statistics under a logistic regression and gradient boosting), so "one definition of the
statistics" holds: ``statistics`` here is what both use.

Like ``rocket`` it is fitted in closed form, as a partner of the trained networks
(``patientcnn.partner``): ``fit_biases`` has nothing to fit, ``features`` gives the
statistics (the static covariates, if any, join them in the readout), ``set_readout``
takes the ridge readout (``patientcnn.models.closed_form``). Padded steps never count.
"""

from __future__ import annotations

import torch
from torch import nn

from patientcnn.models.closed_form import ClosedFormNetwork
from patientcnn.models.layers import static_width, valid_interval
from patientcnn.models.registry import register

STATISTICS = ("mean", "std", "min", "max", "last", "slope")


def statistics(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N, C, L) values and (N, L) real steps -> (N, C * 6), channel-major: channel 0's
    mean, std, min, max, last value and slope per step, then channel 1's, ...

    A patient with a single real step gets std and slope 0; one with none gets zeros."""
    mask = valid.unsqueeze(1)
    weight = mask.to(x.dtype)
    count = weight.sum(dim=2).clamp(min=1.0)
    mean = (x * weight).sum(dim=2) / count
    centred = (x - mean.unsqueeze(2)) * weight
    variance = (centred * centred).sum(dim=2) / count
    # 0 for a constant series, with a gradient of 0 there rather than sqrt's infinite one
    # (integrated gradients run through this; the values are those of .sqrt())
    std = torch.where(variance > 0, variance.clamp(min=1e-30).sqrt(), torch.zeros_like(variance))
    low = x.masked_fill(~mask, float("inf")).amin(dim=2)
    high = x.masked_fill(~mask, float("-inf")).amax(dim=2)
    _, end = valid_interval(valid)
    last_step = (end - 1).clamp(min=0)[:, None, None].expand(-1, x.shape[1], 1)
    last = x.gather(2, last_step).squeeze(2) * valid.any(dim=1, keepdim=True).to(x.dtype)
    steps = torch.arange(x.shape[2], dtype=x.dtype, device=x.device)
    step_mean = (weight * steps).sum(dim=2) / count
    step_dev = (steps - step_mean.unsqueeze(2)) * weight
    spread = (step_dev * step_dev).sum(dim=2)
    slope = (step_dev * centred).sum(dim=2) / spread.clamp(min=1e-12)
    stats = torch.stack([mean, std, low, high, last, slope], dim=2)
    return torch.where(torch.isfinite(stats), stats, torch.zeros_like(stats)).flatten(1)


@register("summary")
class SummaryStatistics(ClosedFormNetwork):
    differentiable = True  # every statistic has a gradient (min/max/last: of one step)

    def __init__(self, in_channels: int, seq_len: int, static_features: int = 0) -> None:
        super().__init__()
        self.in_channels, self.seq_len = in_channels, seq_len
        self.n_features = len(STATISTICS) * in_channels
        self.static_features = static_width(static_features)
        self.readout = nn.Linear(self.n_features + self.static_features, 1)

    def features(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return statistics(x, valid)

    def shape_table(self) -> list[dict]:
        kernel = f"{self.n_features} ({'/'.join(STATISTICS)})"
        return [self.readout_row("statistics+linear", self.in_channels, kernel, self.seq_len)]
