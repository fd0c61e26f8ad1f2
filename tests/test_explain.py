"""Integrated gradients: complete, blind to padding, in predict and in the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from conftest import run_cli
from test_export import SMALL, make_checkpoint

from patientcnn.checkpoint import load_bundle
from patientcnn.explain import (
    AttributedLogit,
    attributed_sides,
    attribution_summary,
    integrated_gradients,
    top_contributions,
    what_is_attributed,
)
from patientcnn.models.ensemble import EnsembleNet
from patientcnn.models.registry import create_network


def inputs(channels: int, n: int = 5, length: int = 16):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(n, channels, length, generator=generator)
    valid = torch.ones(n, length, dtype=torch.bool)
    valid[0, 10:] = False  # a short stay
    return x, valid


def test_attributions_add_up_to_the_logit_change_and_ignore_padding(tmp_path):
    for family in ("cnn", "inceptiontime"):
        ensemble = load_bundle(make_checkpoint(tmp_path, family)).build_model()
        x, valid = inputs(ensemble.members[0].shape_table()[0]["in_channels"])
        attributions, deltas = integrated_gradients(ensemble, x, valid)
        target = AttributedLogit(ensemble)
        with torch.no_grad():
            change = target(x * valid[:, None], valid) - target(torch.zeros_like(x), valid)
        np.testing.assert_allclose(attributions.sum(axis=(1, 2)), change.numpy(), atol=2e-2)
        assert np.abs(deltas).max() < 2e-2
        assert (attributions[0, :, 10:] == 0).all()  # padded steps get nothing
        assert np.abs(attributions[0, :, :10]).sum() > 0


def test_a_partner_is_left_out_of_what_is_attributed():
    torch.manual_seed(0)
    net = create_network("cnn", 3, 16, **SMALL["cnn"]).eval()
    partner = create_network("rocket", 3, 16, features=168, max_dilations=2)
    blend = {"weights": [0.25, 0.75], "platt": [[2.0, 1.0], [1.0, 0.0]]}
    ensemble = EnsembleNet([net], None, [[partner]], blend).eval()
    x, valid = inputs(3)
    with torch.no_grad():
        np.testing.assert_allclose(
            AttributedLogit(ensemble)(x, valid).numpy(),
            (0.25 * 2.0 * net(x, valid)).numpy(),
            rtol=1e-6,
        )
    assert attributed_sides(ensemble) == (["trained networks"], ["rocket"])
    assert "rocket (no gradient" in what_is_attributed(ensemble)


def fitted_summary(channels: int, length: int = 16):
    """A summary partner with a readout fitted on random patients."""
    summary = create_network("summary", channels, length)
    x, valid = inputs(channels, n=40, length=length)
    y = (x[:, 0].mean(dim=1) > 0).long().numpy()
    summary.fit(x, valid, y, seed=0)
    return summary


def test_the_summary_partner_is_attributed_and_the_attributions_stay_complete():
    torch.manual_seed(0)
    net = create_network("cnn", 3, 16, **SMALL["cnn"]).eval()
    rocket = create_network("rocket", 3, 16, features=168, max_dilations=2)
    summary = fitted_summary(3)
    blend = {"weights": [0.25, 0.25, 0.5], "platt": [[2.0, 1.0], [1.0, 0.0], [1.5, -0.3]]}
    ensemble = EnsembleNet([net], None, [[rocket], [summary]], blend).eval()
    assert attributed_sides(ensemble) == (["trained networks", "summary"], ["rocket"])
    x, valid = inputs(3)
    x[1] = 0.7  # a constant series: the std's gradient must stay finite
    with torch.no_grad():
        expected = 0.25 * 2.0 * net(x, valid) + 0.5 * 1.5 * summary(x, valid)
        np.testing.assert_allclose(AttributedLogit(ensemble)(x, valid), expected, rtol=1e-5)
    attributions, deltas = integrated_gradients(ensemble, x, valid)
    assert np.isfinite(attributions).all()
    target = AttributedLogit(ensemble)
    with torch.no_grad():
        change = target(x * valid[:, None], valid) - target(torch.zeros_like(x), valid)
    np.testing.assert_allclose(attributions.sum(axis=(1, 2)), change.numpy(), atol=2e-2)
    assert (attributions[0, :, 10:] == 0).all()
    # the summary side alone is attributed too (the blend gave the networks nothing)
    alone = {"weights": [0.0, 0.0, 1.0], "platt": [[1.0, 0.0]] * 3}
    summary_only = EnsembleNet([net], None, [[rocket], [summary]], alone).eval()
    attributions, _ = integrated_gradients(summary_only, x, valid)
    assert np.abs(attributions).sum() > 0


def test_a_blend_with_nothing_to_attribute_says_so_instead_of_writing_zeros():
    net = create_network("cnn", 3, 16, **SMALL["cnn"]).eval()
    rocket = create_network("rocket", 3, 16, features=168, max_dilations=2)
    blend = {"weights": [0.0, 1.0], "platt": [[1.0, 0.0], [1.0, 0.0]]}
    ensemble = EnsembleNet([net], None, [[rocket]], blend).eval()
    assert attributed_sides(ensemble) == ([], ["rocket"])
    x, valid = inputs(3)
    summary = attribution_summary(
        ensemble,
        x.numpy(),
        valid.numpy(),
        np.array([0, 1, 0, 1, 1]),
        np.linspace(0.1, 0.9, 5),
        0.5,
        ["a", "b", "c"],
        np.array(list("vwxyz")),
    )
    assert summary == {"unavailable": what_is_attributed(ensemble)}
    assert "nothing to attribute" in summary["unavailable"]


def test_top_contributions_name_features_with_their_derived_channels():
    attributions = np.zeros((2, 3, 12))
    attributions[0, 0, :6] = 1.0  # hr, early
    attributions[0, 1, 6:] = -0.5  # hr__observed counts for hr
    attributions[1, 2, 6:] = -2.0  # map, late
    features, windows = top_contributions(
        attributions, ["hr", "hr__observed", "map"], n_blocks=2, top=1
    )
    assert features == ["hr (+3.000)", "map (-12.000)"]
    assert windows == ["steps 0-5 (+6.000)", "steps 6-11 (-12.000)"]


def test_predict_explains_each_patient_on_request(small_cohort, tmp_path):
    from conftest import train_run

    proc, run = train_run(tmp_path, "report.enabled=false", "partner.nets=[]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "explained.csv"
    proc = run_cli(
        "scripts/predict.py",
        f"checkpoint={run / 'checkpoints' / 'best.ckpt'}",
        f"input={small_cohort / 'measurements.csv'}",
        f"output={out}",
        "explain=true",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(out)
    assert len(table) == 300
    assert table["top_features"].str.count(r"\(").eq(3).all()  # three features each
    assert table["top_time_windows"].str.startswith("steps ").all()
