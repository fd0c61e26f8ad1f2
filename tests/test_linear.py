"""The linear partner: the series itself (from each patient's first real step) and a readout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patientcnn.errors import UserError
from patientcnn.models.layers import format_shape_table
from patientcnn.models.registry import create_network


def fitted_linear(channels: int, length: int, **config):
    generator = torch.Generator().manual_seed(0)
    net = create_network("linear", channels, length, **config)
    net.fit(
        torch.randn(20, channels, length, generator=generator),
        torch.ones(20, length, dtype=torch.bool),
        np.arange(20) % 2,
    )
    return net


def test_padding_before_or_after_the_real_steps_never_changes_the_logit():
    generator = torch.Generator().manual_seed(1)
    real = torch.randn(1, 3, 9, generator=generator)
    garbage = torch.randn(1, 3, 5, generator=generator) * 10
    after = torch.arange(14)[None, :] < 9
    net = fitted_linear(3, 14)
    with torch.no_grad():
        padded_after = net(torch.cat([real, garbage], 2), after)
        padded_before = net(torch.cat([garbage, real], 2), after.flip(1))
        zeros_after = net(torch.cat([real, torch.zeros_like(garbage)], 2), after)
    torch.testing.assert_close(padded_before, padded_after)
    torch.testing.assert_close(zeros_after, padded_after)


def test_a_long_series_is_read_as_means_of_consecutive_steps_within_max_features():
    net = create_network("linear", 2, 1000, max_features=300)
    assert net.pool == 7 and net.length == 143 and net.readout.in_features == 286
    x = torch.arange(1000.0).repeat(1, 2, 1)
    features = net.features(x, torch.ones(1, 1000, dtype=torch.bool))
    assert features.shape == (1, 286)
    assert features[0, 0].item() == pytest.approx(3.0)  # the mean of steps 0-6
    assert "143 steps (means of 7)" in format_shape_table(net.shape_table())
    with pytest.raises(UserError, match="partner.linear.max_features must be"):
        create_network("linear", 2, 1000, max_features=0)


def test_a_cohort_told_apart_by_its_value_at_one_time_is_learned():
    """Positives are higher at steps 10-12 only; the series are otherwise noise, so no
    statistic of the whole series (mean, extremes, slope) says much, the values there do."""
    generator = torch.Generator().manual_seed(2)
    n, length = 80, 40
    y = np.arange(n) % 2
    x = torch.randn(n, 1, length, generator=generator)
    x[:, 0, 10:13] += torch.from_numpy(y).float()[:, None] * 1.5
    valid = torch.ones(n, length, dtype=torch.bool)
    net = create_network("linear", 1, length)
    net.fit(x[:60], valid[:60], y[:60])
    with torch.no_grad():
        z = net(x[60:], valid[60:]).numpy()
    assert ((z > 0) == y[60:]).mean() >= 0.9
