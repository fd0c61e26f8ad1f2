"""The partners of the trained networks: settings, the blend grid, bundle and export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_export import assert_both_exports_give, inputs, make_checkpoint, reference

from patientcnn.checkpoint import load_bundle, save_bundle
from patientcnn.errors import UserError
from patientcnn.models.classifier import Classifier
from patientcnn.models.registry import create_network
from patientcnn.partner import blended, capped, choose_blend, partner_settings, weight_grid

ROCKET = {"features": 840, "max_dilations": 4, "first_difference": True}


def test_a_closed_form_family_is_refused_as_the_trained_network():
    for family in ("rocket", "summary", "linear"):
        with pytest.raises(UserError, match=f"partner.nets=\\[{family}"):
            Classifier(in_channels=2, seq_len=30, net=family)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"nets": ["inceptiontime"]}, "fitted in closed form"),
        ({"nets": ["rocket", "rocket"]}, "twice"),
        ({"nets": ["rocket"], "weight": [0.5, 0.6]}, "partner.weight"),
        ({"nets": ["rocket"], "weight": [0.25, 0.25, 0.5]}, "partner.weight"),
        ({"nets": ["rocket"], "weight": 0.5}, "partner.weight"),
        ({"nets": ["rocket"], "max_patients": 1}, "partner.max_patients"),
        ({"nets": ["rocket"], "features": 100}, "unknown partner setting"),
        ({"nets": ["rocket"], "rocket": 3}, "partner.rocket must hold"),
    ],
)
def test_bad_partner_settings_are_one_clear_error(settings, message):
    with pytest.raises(UserError, match=message):
        partner_settings(settings)


def test_partner_settings_read_each_familys_own():
    assert partner_settings({"nets": [], "rocket": ROCKET}) is None  # trained networks alone
    assert partner_settings(None) is None
    chosen = partner_settings({"nets": ["summary", "rocket"], "rocket": ROCKET, "summary": {}})
    assert list(chosen.nets) == ["summary", "rocket"] and chosen.nets["rocket"] == ROCKET
    assert chosen.weights == "auto" and chosen.max_patients == 4096
    fixed = partner_settings({"nets": ["rocket"], "weight": [0.25, 0.75]})
    assert fixed.weights == [0.25, 0.75] and fixed.nets == {"rocket": {}}


def test_a_partner_fits_on_at_most_max_patients():
    patients = np.arange(3, 103)
    assert capped(patients, 200, 0) is patients
    subset = capped(patients, 10, seed=1)
    assert len(subset) == 10 and np.all(np.diff(subset) > 0) and set(subset) <= set(patients)
    np.testing.assert_array_equal(subset, capped(patients, 10, seed=1))  # seeded


def test_the_weight_grid_covers_the_simplex_in_quarters():
    assert weight_grid(2) == [(1.0, 0.0), (0.75, 0.25), (0.5, 0.5), (0.25, 0.75), (0.0, 1.0)]
    three = weight_grid(3)
    assert len(three) == 15 and all(abs(sum(w) - 1) < 1e-12 for w in three)
    assert three[0] == (1.0, 0.0, 0.0) and (0.25, 0.25, 0.5) in three


def test_the_blend_weighs_the_informative_sides_and_drops_the_useless():
    rng = np.random.default_rng(0)
    y = np.arange(400) % 2
    signal = 2 * y - 1
    strong = 1.5 * signal + rng.normal(size=400)
    other = 1.5 * signal + rng.normal(size=400)  # as good, with errors of its own
    noise = rng.normal(size=400)
    names = ["trained networks", "rocket", "summary"]
    blend = choose_blend([strong, other, noise], y, "auto", names)
    assert blend["sides"] == names and blend["weights"][2] == 0.0  # noise gets nothing
    assert blend["weights"][0] > 0 and blend["weights"][1] > 0  # two good sides are averaged
    assert blend["val_log_loss"] < min(blend["val_log_loss_alone"])
    fixed = choose_blend([strong, other, noise], y, [0.5, 0.0, 0.5], names)
    assert fixed["weights"] == [0.5, 0.0, 0.5]  # a user's weights are kept
    (a, b), (c, d), _ = blend["platt"]
    np.testing.assert_allclose(
        blended([strong, other, noise], blend | {"weights": [0.5, 0.5, 0.0]}),
        0.5 * (a * strong + b) + 0.5 * (c * other + d),
        atol=1e-12,
    )


def fitted_families(bundle, seeds=(0, 1), rocket=ROCKET):
    """A rocket family of two members, a summary and a linear family, fitted on random
    patients."""
    train_x, train_valid = inputs(24, channels=bundle.in_channels, seed=5)
    families = []
    for name, config, members in (
        ("rocket", rocket, seeds),
        ("summary", {}, (0,)),
        ("linear", {}, (0,)),
    ):
        nets = []
        for seed in members:
            net = create_network(name, bundle.in_channels, bundle.seq_len, **config)
            net.fit(train_x, train_valid, np.arange(24) % 2, seed=seed)
            nets.append(net.eval())
        families.append((name, config, nets))
    return families


@pytest.mark.parametrize("rocket", [ROCKET, {**ROCKET, "max_pool": True}])
def test_bundle_with_partners_predicts_the_blend_and_exports(tmp_path, rocket):
    """The ensemble rebuilt from a bundle computes sum_i w_i (a_i z_i + b_i) over the sides
    before its calibration, and both exported graphs give the same probabilities."""
    ckpt = make_checkpoint(tmp_path, "cnn")
    bundle = load_bundle(ckpt)
    x, valid = inputs(6, channels=bundle.in_channels)
    families = fitted_families(bundle, rocket=rocket)
    blend = {
        "sides": ["trained networks", "rocket", "summary", "linear"],
        "weights": [0.25, 0.25, 0.25, 0.25],
        "platt": [[0.8, 0.1], [1.5, -0.3], [0.7, 0.2], [1.2, 0.05]],
    }
    bundle.partners = {
        "families": [
            {
                "name": n,
                "config": c,
                "members": [{k: v.clone() for k, v in m.state_dict().items()} for m in nets],
            }
            for n, c, nets in families
        ],
        "blend": blend,
    }
    with torch.no_grad():
        sides = [load_bundle(ckpt).build_model().member_logits(x, valid).double().numpy()]
        for _, _, nets in families:
            sides.append(torch.stack([m(x, valid) for m in nets]).mean(0).double().numpy())
    combined = save_bundle(tmp_path / "partnered.ckpt", bundle)
    expected = reference(combined, x, valid)
    cal = bundle.calibration
    z = blended(sides, blend)
    np.testing.assert_allclose(
        expected, 1 / (1 + np.exp(-(cal["scale"] * z + cal["shift"]))), atol=1e-5
    )
    assert_both_exports_give(expected, combined, x, valid, tmp_path)
    sidecar = json.loads((tmp_path / "m.onnx.json").read_text())
    assert [f["name"] for f in sidecar["partners"]["families"]] == ["rocket", "summary", "linear"]
    assert sidecar["partners"]["families"][0]["members"] == 2


def test_a_version_2_bundle_with_one_partner_still_predicts_the_same(tmp_path):
    """Bundles written before several partners existed stored one family under 'partner'
    with a two-sided blend: they load, and predict w (a z + b) + (1 - w)(c z' + d)."""
    ckpt = make_checkpoint(tmp_path, "cnn")
    bundle = load_bundle(ckpt)
    x, valid = inputs(6, channels=bundle.in_channels)
    (_, _, rockets), *_ = fitted_families(bundle)
    old = bundle.to_dict() | {"version": 2}
    old.pop("partners")
    old["partner"] = {
        "name": "rocket",
        "config": ROCKET,
        "members": [m.state_dict() for m in rockets],
        "blend": {"weight": 0.25, "networks": [0.8, 0.1], "partners": [1.5, -0.3]},
    }
    path = tmp_path / "v2.ckpt"
    torch.save({"patientcnn": old}, path)
    with torch.no_grad():
        z_networks = load_bundle(ckpt).build_model().member_logits(x, valid).double().numpy()
        z_rocket = torch.stack([m(x, valid) for m in rockets]).mean(0).double().numpy()
    z = 0.25 * (0.8 * z_networks + 0.1) + 0.75 * (1.5 * z_rocket - 0.3)
    cal = bundle.calibration
    np.testing.assert_allclose(
        reference(path, x, valid), 1 / (1 + np.exp(-(cal["scale"] * z + cal["shift"]))), atol=1e-5
    )
    old["partner"].pop("blend")
    torch.save({"patientcnn": old}, path)
    with pytest.raises(UserError, match="no blend"):
        load_bundle(path)


def test_partners_without_a_blend_of_every_side_are_refused(tmp_path):
    bundle = load_bundle(make_checkpoint(tmp_path, "cnn"))
    bundle.partners = {
        "families": [{"name": "summary", "config": {}, "members": [{}]}],
        "blend": {"weights": [1.0], "platt": [[1.0, 0.0]]},
    }
    broken = save_bundle(tmp_path / "broken.ckpt", bundle)
    with pytest.raises(UserError, match="blend of every side"):
        load_bundle(broken)
