"""The random-kernel partner: its kernels, dilations, padding invariance and fitting
(the blend, bundle and export of every partner: tests/test_partners.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patientcnn.errors import UserError
from patientcnn.models.closed_form import ridge_readout
from patientcnn.models.layers import format_shape_table
from patientcnn.models.registry import create_network
from patientcnn.models.rocket import KERNELS, kernel_bank, plan_dilations

SMALL = {"features": 840, "max_dilations": 4}


def toy_cohort(n: int = 40, channels: int = 2, length: int = 30, seed: int = 0):
    """Positives carry a fast oscillation in channel 0, negatives a slow one; random lengths."""
    generator = torch.Generator().manual_seed(seed)
    y = np.arange(n) % 2
    t = torch.arange(length, dtype=torch.float32)
    period = torch.where(torch.from_numpy(y) == 1, 3.0, 12.0)[:, None]
    x = 0.3 * torch.randn(n, channels, length, generator=generator)
    x[:, 0] += torch.sin(2 * torch.pi * t / period)
    valid = torch.ones(n, length, dtype=torch.bool)
    ends = torch.randint(length // 2, length + 1, (n,), generator=generator)
    valid &= t[None, :] < ends[:, None]
    return x, valid, y


def test_the_kernel_bank_is_the_84_zero_sum_kernels():
    bank = kernel_bank()
    assert bank.shape == (KERNELS, 9)
    assert torch.all(bank.sum(dim=1) == 0) and len({tuple(k.tolist()) for k in bank}) == 84


def test_dilations_span_the_series_and_biases_add_up():
    dilations, biases = plan_dilations(720, 10000, 32)
    assert dilations[0] == 1 and 8 * dilations[-1] <= 719 < 8 * 2 * dilations[-1]
    assert sum(biases) == 10000 // 84 and all(b >= 1 for b in biases)
    assert plan_dilations(5, 10000, 32)[0] == [1]  # shorter than one kernel: no dilation


@pytest.mark.parametrize("first_difference", [False, True])
def test_fitted_partner_separates_a_learnable_cohort_and_is_deterministic(first_difference):
    x, valid, y = toy_cohort()
    nets = []
    for _ in range(2):
        net = create_network("rocket", 2, 30, **SMALL, first_difference=first_difference)
        net.fit(x[:30], valid[:30], y[:30], seed=3)
        nets.append(net.eval())
    with torch.no_grad():
        z = nets[0](x[30:], valid[30:]).numpy()
        torch.testing.assert_close(nets[1](x[30:], valid[30:]).numpy(), z)
    assert ((z > 0) == y[30:]).mean() >= 0.9


@pytest.mark.parametrize(
    ("first_difference", "max_pool"), [(False, False), (True, False), (True, True)]
)
def test_padding_never_changes_a_partner_logit(first_difference, max_pool):
    """A patient's stay padded after (garbage in the padded steps) or before, or alone at
    its own length, gives the same logit; the step-to-step changes and the peaks too."""
    x, valid, y = toy_cohort()
    net = create_network(
        "rocket", 2, 30, **SMALL, first_difference=first_difference, max_pool=max_pool
    )
    net.fit(x, valid, y, seed=0)
    n_real = int(valid[1].sum())
    assert n_real < 30
    real = x[1:2, :, :n_real]
    garbage = torch.randn(1, 2, 30 - n_real) * 5
    after = torch.arange(30)[None, :] < n_real
    with torch.no_grad():
        a = net(x[1:2], valid[1:2])
        torch.testing.assert_close(net(torch.cat([real, garbage], 2), after), a)
        torch.testing.assert_close(net(torch.cat([garbage, real], 2), after.flip(1)), a)
        torch.testing.assert_close(net(real, torch.ones(1, n_real, dtype=torch.bool)), a)
        torch.testing.assert_close(net(x, valid)[1:2], a)  # batched or alone
        assert net(x, valid).std() > 0.1  # the patients really differ


@pytest.mark.parametrize("max_pool", [False, True])
def test_the_fast_eager_features_equal_the_exported_graphs_operators(max_pool):
    """Eager calls mask each half of the kernels through a strided view; traced and
    exported graphs build the (N, 84, L) mask of counted steps. Same numbers, padding
    before, after or none; the peaks are the highest counted outputs."""
    x, valid, y = toy_cohort(n=12)
    valid[3] = torch.arange(30) >= 7  # padding before the stay
    valid[4] = True
    net = create_network("rocket", 2, 30, **SMALL, first_difference=True, max_pool=max_pool)
    net.fit_biases(x, valid, seed=0)
    expected = []
    for series, steps, bias in net.representations(x, valid):
        for i in range(len(net.dilations)):
            out, counted = net.kernel_outputs(i, series, steps)
            count = counted.sum(dim=2).clamp(min=1).float()
            for j in range(net.biases_per[i]):
                above = (out > bias[i, :, j, None]) & counted
                expected.append(above.sum(dim=2).float() / count)
            if max_pool:  # the highest counted output; 0 where no step counts
                pairs = zip(out.flatten(0, 1), counted.flatten(0, 1), strict=True)
                peaks = [o[c].max() if c.any() else o.new_zeros(()) for o, c in pairs]
                expected.append(torch.stack(peaks).view(out.shape[:2]))
    with torch.no_grad():
        features = net.features(x, valid)
        assert features.shape[1] == net.n_features
        torch.testing.assert_close(features, torch.cat(expected, dim=1))
        traced = torch.jit.trace(lambda a, b: net.features(a, b), (x, valid), check_trace=False)
        torch.testing.assert_close(traced(x, valid), features)


def test_first_difference_reads_the_changes_with_biases_of_their_own():
    """Half the summaries come from the step-to-step changes, with biases fitted on them:
    those alone separate a learnable cohort, and they ignore the series' level."""
    x, valid, y = toy_cohort(n=60)
    net = create_network("rocket", 2, 30, features=840, first_difference=True)
    assert net.n_features == 2 * KERNELS * sum(net.biases_per)
    net.fit_biases(x[:40], valid[:40], seed=0)
    assert not torch.equal(net.bias, net.diff_bias)
    with torch.no_grad():
        changes = net.features(x, valid)[:, net.n_features // 2 :].double().numpy()
        shifted = net.features(x + 3.0, valid)[:, net.n_features // 2 :].double().numpy()
    assert np.abs(shifted - changes).mean() < 1e-3  # the same but for rounding at a bias
    weight, intercept = ridge_readout(changes[:40], y[:40])
    assert (((changes[40:] @ weight + intercept) > 0) == y[40:]).mean() >= 0.9
    with pytest.raises(UserError, match="first_difference"):
        create_network("rocket", 2, 30, first_difference="yes")


def test_shape_table_lists_each_dilation_and_the_readout():
    net = create_network("rocket", 3, 40, **SMALL)
    rows = net.shape_table()
    assert [r["dilation"] for r in rows[:-1]] == net.dilations
    assert rows[-1]["params"] == net.n_features + 1 == sum(p.numel() for p in net.parameters())
    assert "kernels_d1" in format_shape_table(rows)
    changes = create_network("rocket", 3, 40, **SMALL, first_difference=True).shape_table()
    assert [r["layer"] for r in changes[-2:]] == [f"changes_d1-{net.dilations[-1]}", "ppv+linear"]
    assert changes[-1]["in_channels"] == 2 * 84 * len(net.dilations)
    assert "changes_d1-" in format_shape_table(changes)
    peaks = create_network("rocket", 3, 40, **SMALL, max_pool=True)
    assert peaks.n_features == KERNELS * (sum(peaks.biases_per) + len(peaks.dilations))
    assert peaks.shape_table()[-1]["layer"] == "ppv+max+linear"
    with pytest.raises(UserError, match="max_pool"):
        create_network("rocket", 2, 30, max_pool=1)


def test_max_pool_sees_one_short_spike_that_the_shares_barely_notice():
    """A one-step spike moves each share above a bias by at most 9 steps' worth (< 1),
    but the peaks of the kernels that read it by about the spike's size."""
    x, valid, y = toy_cohort(n=12)
    net = create_network("rocket", 2, 30, **SMALL, max_pool=True)
    net.fit_biases(x, valid, seed=0)
    spiked = x.clone()
    spiked[0, 0, 5] += 10.0
    with torch.no_grad():
        change = (net.features(spiked, valid) - net.features(x, valid)).abs()
    assert change[1:].max() == 0  # the other patients are untouched
    assert int((change[0] > 1.0).sum()) >= KERNELS
