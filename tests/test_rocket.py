"""The random-kernel partner: padding invariance, fitting, the blend, bundle and export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_export import assert_both_exports_give, inputs, make_checkpoint, reference

from patientcnn.checkpoint import load_bundle, save_bundle
from patientcnn.errors import UserError
from patientcnn.models.classifier import Classifier
from patientcnn.models.layers import format_shape_table
from patientcnn.models.registry import closed_form_names, create_network
from patientcnn.models.rocket import KERNELS, kernel_bank, plan_dilations
from patientcnn.partner import blended, capped, choose_blend, partner_settings

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


def test_fitted_partner_separates_a_learnable_cohort_and_is_deterministic():
    x, valid, y = toy_cohort()
    nets = []
    for _ in range(2):
        net = create_network("rocket", 2, 30, **SMALL)
        net.fit(x[:30], valid[:30], y[:30], seed=3)
        nets.append(net.eval())
    with torch.no_grad():
        z = nets[0](x[30:], valid[30:]).numpy()
        torch.testing.assert_close(nets[1](x[30:], valid[30:]).numpy(), z)
    assert ((z > 0) == y[30:]).mean() >= 0.9


def test_padding_never_changes_a_partner_logit():
    """A patient's stay padded after (garbage in the padded steps) or before, or alone at
    its own length, gives the same logit."""
    x, valid, y = toy_cohort()
    net = create_network("rocket", 2, 30, **SMALL)
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


def test_shape_table_lists_each_dilation_and_the_readout():
    net = create_network("rocket", 3, 40, **SMALL)
    rows = net.shape_table()
    assert [r["dilation"] for r in rows[:-1]] == net.dilations
    assert rows[-1]["params"] == net.n_features + 1 == sum(p.numel() for p in net.parameters())
    assert "kernels_d1" in format_shape_table(rows)


def test_a_closed_form_family_is_refused_as_the_trained_network():
    assert "rocket" in closed_form_names()
    with pytest.raises(UserError, match="partner.net=rocket"):
        Classifier(in_channels=2, seq_len=30, net="rocket")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"net": "inceptiontime"}, "fitted in closed form"),
        ({"net": "rocket", "weight": 1.5}, "partner.weight"),
        ({"net": "rocket", "weight": True}, "partner.weight"),
        ({"net": "rocket", "max_patients": 1}, "partner.max_patients"),
    ],
)
def test_bad_partner_settings_are_one_clear_error(settings, message):
    with pytest.raises(UserError, match=message):
        partner_settings(settings)


def test_a_partner_fits_on_at_most_max_patients():
    patients = np.arange(3, 103)
    assert capped(patients, 200, 0) is patients
    subset = capped(patients, 10, seed=1)
    assert len(subset) == 10 and np.all(np.diff(subset) > 0) and set(subset) <= set(patients)
    np.testing.assert_array_equal(subset, capped(patients, 10, seed=1))  # seeded


def test_no_partner_and_the_blend_rule():
    assert partner_settings({"net": None, "features": 100}) is None
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    useful = (2 * y - 1) * 1.5 + rng.normal(size=200)
    noise = rng.normal(size=200)
    blend = choose_blend(useful, noise, y, "auto")
    assert blend["weight"] == 0.75  # the informative side gets the largest share offered
    assert blend["val_log_loss"] <= blend["val_log_loss_partners"]
    assert choose_blend(useful, noise, y, 0.4)["weight"] == 0.4  # a user's number is kept
    a, b = blend["networks"]
    np.testing.assert_allclose(
        blended(useful, noise, blend | {"weight": 1.0}), a * useful + b, atol=1e-12
    )


def test_bundle_with_partner_predicts_the_blend_and_exports(tmp_path):
    """The ensemble rebuilt from a bundle computes w (a z + b) + (1 - w)(c z' + d) before its
    calibration, and both exported graphs give the same probabilities."""
    ckpt = make_checkpoint(tmp_path, "cnn")
    bundle = load_bundle(ckpt)
    x, valid = inputs(6, channels=bundle.in_channels)
    train_x, train_valid = inputs(24, channels=bundle.in_channels, seed=5)
    partners = []
    for seed in range(2):
        net = create_network("rocket", bundle.in_channels, bundle.seq_len, **SMALL)
        net.fit(train_x, train_valid, np.arange(24) % 2, seed=seed)
        partners.append(net.eval())
    blend = {"weight": 0.25, "networks": [0.8, 0.1], "partners": [1.5, -0.3]}
    bundle.partner = {
        "name": "rocket",
        "config": SMALL,
        "members": [{k: v.clone() for k, v in p.state_dict().items()} for p in partners],
        "blend": blend,
    }
    with torch.no_grad():
        plain = load_bundle(ckpt).build_model()
        z_networks = plain.member_logits(x, valid).double().numpy()
        z_partners = torch.stack([p(x, valid) for p in partners]).mean(0).double().numpy()
    combined = save_bundle(tmp_path / "partnered.ckpt", bundle)
    expected = reference(combined, x, valid)
    cal = bundle.calibration
    z = blended(z_networks, z_partners, blend)
    np.testing.assert_allclose(
        expected, 1 / (1 + np.exp(-(cal["scale"] * z + cal["shift"]))), atol=1e-5
    )
    assert_both_exports_give(expected, combined, x, valid, tmp_path)
    sidecar = json.loads((tmp_path / "m.onnx.json").read_text())
    assert sidecar["partner"]["name"] == "rocket" and sidecar["partner"]["members"] == 2


def test_a_partner_without_a_blend_is_refused(tmp_path):
    bundle = load_bundle(make_checkpoint(tmp_path, "cnn"))
    bundle.partner = {"name": "rocket", "config": SMALL, "members": [{}]}
    broken = save_bundle(tmp_path / "broken.ckpt", bundle)
    with pytest.raises(UserError, match="no blend"):
        load_bundle(broken)
