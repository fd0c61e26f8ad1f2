"""The summary partner: six statistics per feature over the real steps, and a readout."""

from __future__ import annotations

import numpy as np
import torch

from patientcnn.models.layers import format_shape_table
from patientcnn.models.registry import create_network
from patientcnn.models.summary import STATISTICS, statistics
from patientcnn.report.baselines import summary_statistics


def test_statistics_of_one_stay_are_the_textbook_ones():
    x = torch.tensor([[[1.0, 3.0, 2.0, 6.0, 99.0]]])  # the last step is padding
    valid = torch.tensor([[True, True, True, True, False]])
    mean, std, low, high, last, slope = statistics(x, valid)[0].tolist()
    real = np.array([1.0, 3.0, 2.0, 6.0])
    assert mean == 3.0 and low == 1.0 and high == 6.0 and last == 6.0
    assert np.isclose(std, real.std()) and np.isclose(slope, np.polyfit(np.arange(4), real, 1)[0])


def test_padding_never_changes_the_statistics_or_the_logit():
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(1, 3, 9, generator=generator)
    garbage = torch.randn(1, 3, 5, generator=generator) * 10
    after = torch.arange(14)[None, :] < 9
    net = create_network("summary", 3, 14)
    net.fit(
        torch.randn(20, 3, 14, generator=generator),
        torch.ones(20, 14, dtype=torch.bool),
        np.arange(20) % 2,
    )
    with torch.no_grad():
        alone = statistics(real, torch.ones(1, 9, dtype=torch.bool))
        torch.testing.assert_close(statistics(torch.cat([real, garbage], 2), after), alone)
        torch.testing.assert_close(statistics(torch.cat([garbage, real], 2), after.flip(1)), alone)
        z = net(torch.cat([real, garbage], 2), after)
        torch.testing.assert_close(net(torch.cat([garbage, real], 2), after.flip(1)), z)
    # a stay of one step: std and slope 0; of none: zeros, never NaN
    one = statistics(real[:, :, :1], torch.ones(1, 1, dtype=torch.bool)).view(3, 6)
    assert torch.all(one[:, 1] == 0) and torch.all(one[:, 5] == 0)
    assert torch.all(statistics(real, torch.zeros(1, 9, dtype=torch.bool)) == 0)


def test_a_cohort_told_apart_by_its_trend_is_learned():
    """Positives drift upward, negatives do not; each patient has a random level, so the
    mean alone says little and the slope says it all."""
    generator = torch.Generator().manual_seed(1)
    n, length = 80, 24
    y = np.arange(n) % 2
    level = torch.randn(n, 1, 1, generator=generator) * 3
    drift = torch.from_numpy(y).float()[:, None, None] * torch.linspace(0, 2, length)
    x = level + drift + 0.5 * torch.randn(n, 1, length, generator=generator)
    valid = torch.ones(n, length, dtype=torch.bool)
    net = create_network("summary", 1, length)
    net.fit(x[:60], valid[:60], y[:60])
    with torch.no_grad():
        z = net(x[60:], valid[60:]).numpy()
    assert ((z > 0) == y[60:]).mean() >= 0.9


def test_the_report_baselines_use_the_same_statistics():
    x = torch.randn(5, 2, 7, generator=torch.Generator().manual_seed(2))
    valid = torch.arange(7)[None, :] < torch.tensor([7, 5, 3, 1, 6])[:, None]
    np.testing.assert_allclose(
        summary_statistics(x.numpy(), valid.numpy()),
        statistics(x.double(), valid).numpy(),
    )


def test_shape_table_has_one_row_with_every_parameter():
    net = create_network("summary", 4, 30)
    (row,) = net.shape_table()
    assert row["params"] == len(STATISTICS) * 4 + 1 == sum(p.numel() for p in net.parameters())
    assert "statistics+linear" in format_shape_table([row])
