"""Subgroup figures: per-group metrics with intervals, gaps, flags; read, reported, refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import QUICK, run_cli

from patientcnn.errors import UserError
from patientcnn.metrics import point_metrics
from patientcnn.report.subgroups import MISSING, read_subgroups, subgroup_figures


def test_each_group_gets_its_own_figures_and_the_gap_between_them():
    rng = np.random.default_rng(0)
    y = np.arange(400) % 2
    group = np.where(np.arange(400) < 300, "F", "M")
    noise = np.where(group == "F", 0.5, 2.0)  # the model is sharper for F than for M
    prob = 1 / (1 + np.exp(-((2 * y - 1) + noise * rng.normal(size=400))))
    prob[-8:] = rng.uniform(size=8)
    group[-8:] = "X"  # a tiny group: flagged, still shown
    y[-8:] = [0, 1, 0, 0, 0, 0, 0, 0]
    figures = subgroup_figures(y, prob, {"sex": group}, 0.5, 100, 0, 0.95)["sex"]
    rows = figures["groups"]
    assert list(rows) == ["F", "M", "X"]
    for name, row in rows.items():
        member = group == name
        expected = point_metrics(y[member], prob[member], 0.5)
        assert row["patients"] == member.sum()
        assert row["prevalence"] == pytest.approx(y[member].mean())
        assert row["auroc"]["value"] == pytest.approx(expected["auroc"])
        assert row["sensitivity"]["value"] == pytest.approx(expected["sensitivity"])
        low, high = row["auroc"]["low"], row["auroc"]["high"]
        assert low <= row["auroc"]["value"] <= high
    assert rows["F"]["auroc"]["value"] > rows["M"]["auroc"]["value"] + 0.1
    assert [rows[g]["small"] for g in ("F", "M", "X")] == [False, False, True]
    aurocs = [r["auroc"]["value"] for r in rows.values()]
    assert figures["largest_gap"]["auroc"] == pytest.approx(max(aurocs) - min(aurocs))
    slope = rows["F"]["calibration_slope"]
    assert slope["low"] <= slope["value"] <= slope["high"]


def test_subgroups_are_read_per_patient_with_missing_values_named(tmp_path):
    table = tmp_path / "labels.csv"
    pd.DataFrame(
        {"patient_id": ["007", "1", "2"], "label": [1, 0, 1], "sex": ["F", None, "M"]}
    ).to_csv(table, index=False)
    groups = read_subgroups(table, "patient_id", ["sex"], np.array(["2", "007", "1"]))
    assert groups["sex"].tolist() == ["M", "F", MISSING]
    with pytest.raises(UserError, match=r"labels.csv.*'age_band'"):
        read_subgroups(table, "patient_id", ["age_band"], np.array(["1"]))
    clash = tmp_path / "clash.csv"
    pd.DataFrame({"patient_id": ["1", "1"], "sex": ["F", "M"]}).to_csv(clash, index=False)
    with pytest.raises(UserError, match="more than one value for patient 1"):
        read_subgroups(clash, "patient_id", ["sex"], np.array(["1"]))


def with_sex_column(small_cohort, tmp_path):
    labels = pd.read_csv(small_cohort / "labels.csv", dtype={"patient_id": str})
    labels["sex"] = np.where(np.arange(len(labels)) % 3 == 0, "M", "F")
    path = tmp_path / "labels_sex.csv"
    labels.to_csv(path, index=False)
    return path


def train_with_subgroups(small_cohort, tmp_path, *overrides):
    out = tmp_path / "run"
    proc = run_cli(
        "train.py",
        "data=table",
        f"data.measurements={small_cohort / 'measurements.csv'}",
        f"data.labels={with_sex_column(small_cohort, tmp_path)}",
        f"hydra.run.dir={out}",
        *QUICK,
        "logger=none",
        "trainer.enable_progress_bar=false",
        "partner.nets=[]",
        "report.resamples=50",
        "report.importance=false",
        "report.baselines=false",
        *overrides,
    )
    return proc, out


@pytest.fixture(scope="module")
def run_with_subgroups(small_cohort, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("subgroups")
    proc, out = train_with_subgroups(small_cohort, tmp_path, "report.subgroups=[sex]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, tmp_path / "labels_sex.csv"


def test_training_reports_subgroups_of_the_test_patients(run_with_subgroups):
    out, _ = run_with_subgroups
    record = json.loads((out / "metrics.json").read_text())
    groups = record["subgroups"]["sex"]["groups"]
    assert set(groups) == {"F", "M"}
    assert sum(g["patients"] for g in groups.values()) == record["cohort"]["test_patients"]
    assert "largest_gap" in record["subgroups"]["sex"]
    report = (out / "report" / "report.md").read_text()
    assert "### By sex" in report and "largest gap" in report


def test_evaluate_reports_subgroups_of_an_external_cohort(
    run_with_subgroups, small_cohort, tmp_path
):
    out, labels = run_with_subgroups
    proc = run_cli(
        "scripts/evaluate.py",
        f"checkpoint={out / 'checkpoints' / 'best.ckpt'}",
        f"data.measurements={small_cohort / 'measurements.csv'}",
        f"data.labels={labels}",
        "report.resamples=20",
        "report.subgroups=[sex]",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    groups = record["subgroups"]["sex"]["groups"]
    assert sum(g["patients"] for g in groups.values()) == record["cohort"]["patients"] == 300
    assert groups["M"]["patients"] == 100


def test_a_misspelt_subgroup_column_stops_the_run_before_training(small_cohort, tmp_path):
    proc, out = train_with_subgroups(small_cohort, tmp_path, "report.subgroups=[sexx]")
    assert proc.returncode == 2
    assert "labels_sex.csv" in proc.stderr and "'sexx'" in proc.stderr
    assert "report.subgroups takes per-patient columns" in proc.stderr
    assert "data.subgroup" not in proc.stderr  # no config key that does not exist
    assert not (out / "checkpoints").exists() and not (out / "metrics.json").exists()
