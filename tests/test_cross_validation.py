"""Cross-validation folds (data.cv_folds=K) and the depth/width shorthand that sweeps search."""

import json

import numpy as np
import pytest
from conftest import read_metrics, train_run

from patientcnn.data.split import fold_split, stratified_split
from patientcnn.errors import UserError
from patientcnn.models.classifier import layer_widths


def test_folds_share_the_test_split_and_partition_the_rest():
    y = np.random.default_rng(0).binomial(1, 0.2, size=300)
    fixed = stratified_split(y, val=0.15, test=0.15, seed=3)["test"]
    folds = [fold_split(y, test=0.15, folds=4, fold=i, seed=3) for i in range(4)]
    vals = np.concatenate([f["val"] for f in folds])
    rest = np.setdiff1d(np.arange(len(y)), fixed)
    assert np.array_equal(np.sort(vals), rest)  # every non-test patient is val exactly once
    for f in folds:
        assert np.array_equal(f["test"], fixed)
        assert np.array_equal(np.sort(np.concatenate([f["train"], f["val"]])), rest)
        assert abs(y[f["val"]].mean() - y[rest].mean()) < 0.05  # stratified


def test_too_few_patients_for_the_folds_is_a_user_error():
    y = np.array([0] * 40 + [1] * 5)
    with pytest.raises(UserError, match="too few patients for data.cv_folds=5"):
        fold_split(y, test=0.2, folds=5, fold=0, seed=0)


def test_cv_run_returns_the_mean_over_folds(tmp_path):
    proc, out = train_run(tmp_path, "data.cv_folds=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_metrics(out)
    per_fold = [read_metrics(out / f"fold_{i}")["metrics"]["val/auroc"] for i in range(3)]
    assert record["metrics"]["val/auroc"] == pytest.approx(np.mean(per_fold))
    assert [f["val/auroc"] for f in record["folds"]] == pytest.approx(per_fold)
    assert (out / "cv_folds.csv").read_text().count("\n") == 1 + 3 + 2  # header, folds, mean, std
    for i in range(3):
        assert (out / f"fold_{i}" / "checkpoints" / "best.ckpt").exists()
    cohorts = [json.loads((out / f"fold_{i}/metrics.json").read_text())["cohort"] for i in range(3)]
    assert len({c["test_patients"] for c in cohorts}) == 1


def test_depth_and_width_make_the_channels():
    assert layer_widths(None, depth=3, width=16) == [16, 16, 16]
    assert layer_widths([8, 4], depth=None, width=None) == [8, 4]
    with pytest.raises(UserError, match="not both"):
        layer_widths([8], depth=2, width=8)
    with pytest.raises(UserError, match="model.depth and model.width"):
        layer_widths(None, depth=None, width=8)
