"""Using every patient: test tables, K-fold ensembles in one checkpoint, tiny cohorts."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import read_metrics, run_cli, train_run

from patientcnn.calibration import calibrated, fit_calibration
from patientcnn.checkpoint import load_bundle
from patientcnn.data.split import carve_test, fold_splits
from patientcnn.errors import UserError
from patientcnn.models.conv import layer_widths
from patientcnn.models.ensemble import EnsembleNet
from patientcnn.recipe import plan_recipe, variance_lost_by_averaging


def test_folds_partition_the_development_patients():
    y = np.random.default_rng(0).binomial(1, 0.2, size=300)
    folds = fold_splits(y, 4, seed=3)
    vals = np.concatenate([v for _, v in folds])
    assert np.array_equal(np.sort(vals), np.arange(300))  # every patient validates once
    for train, val in folds:
        assert not np.intersect1d(train, val).size
        assert abs(y[val].mean() - y.mean()) < 0.05  # stratified


def test_auto_test_split_keeps_small_cohorts_whole():
    small = np.array([0, 1] * 100)
    dev, test = carve_test(small, "auto", seed=0)
    assert len(dev) == 200 and len(test) == 0
    large = np.array([0, 0, 0, 1] * 500)
    dev, test = carve_test(large, "auto", seed=0)
    assert len(test) == 300 and not np.intersect1d(dev, test).size


def test_recipe_rules_follow_the_cohort_size():
    tiny = plan_recipe({}, np.array([0, 1] * 10), seq_len=500)
    assert tiny.folds == 5 and tiny.batch_size == 8
    # the floor of min_steps=300 yields to the work budget: 5 networks x 8 x 500 steps x 250
    assert tiny.max_steps == int(5.0e6 // (5 * 8 * 500)) == 250
    assert plan_recipe({}, np.array([0, 1] * 10), seq_len=100).max_steps == 300  # the floor
    mid_size = plan_recipe({}, np.array([0, 1] * 2000), seq_len=48)  # < cv_below=10000
    assert mid_size.folds == 5 and mid_size.batch_size == 64
    # 50 epochs would be 2500 steps: the budget, shared by the 5 networks, binds
    assert mid_size.max_steps == int(5.0e6 // (5 * 64 * 48))
    large = plan_recipe({}, np.array([0, 1] * 5000), seq_len=48)
    assert large.folds == 1 and large.batch_size == 64
    assert large.max_steps == 3000  # max_steps binds before 50 epochs and the budget
    # the work budget bounds the patient-timesteps: long series get fewer steps
    long = plan_recipe({"max_steps": 10**4}, np.array([0, 1] * 5000), seq_len=5000)
    assert long.max_steps == int(20 * 10000 * 5000 // (64 * 5000))  # work_epochs x N x L
    full = {"downsample": 1}
    mid = plan_recipe(full, np.array([0, 1] * 100), seq_len=1000)  # 5 folds share 5e6
    assert mid.max_steps == int(5.0e6 // (5 * 16 * 1000))
    assert (
        plan_recipe(full, np.array([0, 1] * 100), seq_len=1000, seeds=2).max_steps
        == mid.max_steps // 2
    )
    # never more folds than patients of the smaller outcome
    assert plan_recipe({}, np.array([0] * 20 + [1] * 3), seq_len=10).folds == 3
    with pytest.raises(UserError, match="at least 2 patients"):
        plan_recipe({}, np.array([0] * 20 + [1]), seq_len=10)
    assert "batch size" in tiny.describe()


def test_no_early_stop_while_the_budget_gives_fewer_than_min_epochs():
    """A network given a few epochs is still learning: its validation loss bumps, and a
    patience of a couple of validations took a bump for the end."""
    y = np.array([0, 1] * 100)
    short = plan_recipe({"downsample": 1}, y, seq_len=1000)  # 62 steps of 10 per epoch
    assert short.max_steps == int(5.0e6 // (5 * 16 * 1000)) == 62
    assert short.min_steps == short.max_steps
    assert "no early stop: 6.2 epochs per network" in short.describe()
    enough = plan_recipe({"downsample": 1}, y, seq_len=100)  # 50 epochs within the budget
    assert enough.min_steps == int(0.2 * enough.max_steps) < enough.max_steps
    assert "no early stop" not in enough.describe()
    fixed = plan_recipe({"steps": 50}, y, seq_len=1000)  # steps the user sets: the usual stop
    assert fixed.min_steps == 10


def test_long_smooth_series_are_seen_coarser_when_the_budget_gives_few_epochs():
    """125 steps of 10 per epoch at 1000 steps per patient is 12 epochs < min_epochs=20:
    means of 2 steps double the steps the same work buys, if they lose little variance."""
    y = np.array([0, 1] * 100)
    budget = {"max_work": 1.0e7, "epochs": 100}  # the numbers this rule was written for
    smooth = {2: 0.01, 4: 0.03, 8: 0.2}.get
    mid = plan_recipe(budget, y, seq_len=1000, variance_lost=smooth)
    assert mid.downsample == 2 and mid.max_steps == int(1.0e7 // (5 * 16 * 500))
    assert "1000 -> 500 steps" in mid.describe() and "2 steps 1.0%" in mid.describe()
    # a spiky signal, or no measurement of it, stays at full length
    assert plan_recipe(budget, y, seq_len=1000, variance_lost=lambda f: 0.3).downsample == 1
    assert (
        "full length"
        in plan_recipe(budget, y, seq_len=1000, variance_lost=lambda f: 0.3).describe()
    )
    assert plan_recipe(budget, y, seq_len=1000).downsample == 1
    # never below min_length steps; short series and unbounded budgets stay at full length
    assert (
        plan_recipe(budget | {"min_length": 600}, y, seq_len=1000, variance_lost=smooth).downsample
        == 1
    )
    assert plan_recipe(budget, y, seq_len=100, variance_lost=smooth).downsample == 1
    assert plan_recipe({"max_work": 1e9}, y, seq_len=1000, variance_lost=smooth).downsample == 1
    # a steeper need takes a larger power of two, up to the variance limit
    assert (
        plan_recipe(budget | {"min_epochs": 45}, y, seq_len=1000, variance_lost=smooth).downsample
        == 4
    )
    assert (
        plan_recipe(budget | {"min_epochs": 90}, y, seq_len=1000, variance_lost=smooth).downsample
        == 4
    )
    # a fixed setting wins
    assert plan_recipe(budget | {"downsample": 3}, y, seq_len=1000).downsample == 3
    assert plan_recipe({"steps": 50}, y, seq_len=1000, variance_lost=smooth).downsample == 1


def test_variance_lost_by_averaging_measures_detail_within_windows():
    t = torch.arange(64, dtype=torch.float64)
    slow = torch.sin(t / 10).reshape(1, 1, 64)
    zigzag = (-1.0) ** t.reshape(1, 1, 64)
    valid = torch.ones(1, 64, dtype=torch.bool)
    assert variance_lost_by_averaging(slow, valid, 2) < 0.01
    assert variance_lost_by_averaging(zigzag, valid, 2) > 0.99
    # a large cohort is measured on a bounded sample of its patients (here one of 50)
    many = variance_lost_by_averaging(slow.repeat(50, 1, 1), valid.repeat(50, 1), 2, max_values=64)
    assert many == pytest.approx(variance_lost_by_averaging(slow, valid, 2))
    # padded steps count for nothing, wherever they are
    padded = torch.cat([torch.randn(1, 1, 10), slow], dim=2)
    valid_padded = torch.arange(74).unsqueeze(0) >= 10
    assert variance_lost_by_averaging(padded, valid_padded, 2) == pytest.approx(
        variance_lost_by_averaging(slow, valid, 2)
    )


def test_calibration_never_changes_the_ranking():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.2
    z = np.where(y, 1.5, -1.0) + rng.normal(0, 1.5, 300)
    cal = fit_calibration(z, y, "platt")
    assert cal["scale"] > 0
    assert np.array_equal(np.argsort(calibrated(z, cal)), np.argsort(z))
    # logits that run against the outcome: no skill, everyone gets the prevalence
    inverted = fit_calibration(-z, y, "platt")
    assert inverted["scale"] == 0.0
    prob = 1 / (1 + np.exp(-calibrated(-z, inverted)))
    assert abs(prob[0] - y.mean()) < 0.02
    assert fit_calibration(z, y, "none") == {"method": "none", "scale": 1.0, "shift": 0.0}


def test_isotonic_calibration_is_monotone_and_the_same_in_torch():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 400)
    y = rng.random(400) < 1 / (1 + np.exp(-(z**3) / 4))  # miscalibrated, but monotone
    cal = fit_calibration(z, y, "isotonic")
    assert cal["method"] == "isotonic" and len(cal["knots"][0]) >= 2
    grid = np.linspace(-8, 8, 101)  # beyond the knots too
    numpy_logits = calibrated(grid, cal)
    assert np.all(np.diff(numpy_logits) >= -1e-9) and np.all(np.isfinite(numpy_logits))

    class Fixed(torch.nn.Module):
        def forward(self, x, valid):
            return x[:, 0, 0]

    net = EnsembleNet([Fixed()], cal)
    x = torch.tensor(grid, dtype=torch.float32).reshape(-1, 1, 1)
    torch_logits = net(x, torch.ones(len(grid), 1, dtype=torch.bool)).numpy()
    np.testing.assert_allclose(torch_logits, numpy_logits, atol=1e-3)


def test_cv_run_writes_one_ensemble_checkpoint_that_predict_uses(tmp_path):
    proc, out = train_run(tmp_path, "data.cv_folds=3", "calibration=isotonic")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_metrics(out)
    assert [m["member"] for m in record["members"]] == ["fold0", "fold1", "fold2"]
    assert (
        sum(m["val_patients"] for m in record["members"])
        == record["cohort"]["development_patients"]
    )
    bundle = load_bundle(out / "checkpoints" / "best.ckpt")
    assert len(bundle.members) == 3 and bundle.calibration["method"] == "isotonic"
    assert len(bundle.build_model().members) == 3
    measurements = tmp_path / "data" / "synthetic" / "small" / "measurements.csv"
    pred = run_cli(
        "scripts/predict.py",
        f"checkpoint={out / 'checkpoints' / 'best.ckpt'}",
        f"input={measurements}",
        f"output={tmp_path / 'p.csv'}",
    )
    assert pred.returncode == 0, pred.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "p.csv")) == 400


def test_a_separate_test_table_is_scored_and_no_patient_is_held_out(tmp_path, small_cohort):
    m = pd.read_csv(small_cohort / "measurements.csv")
    y = pd.read_csv(small_cohort / "labels.csv")
    test_ids = y["patient_id"].iloc[:60]
    for name, frame in (
        ("train", lambda d: d[~d.patient_id.isin(test_ids)]),
        ("test", lambda d: d[d.patient_id.isin(test_ids)]),
    ):
        frame(m).to_csv(tmp_path / f"{name}_m.csv", index=False)
        frame(y).to_csv(tmp_path / f"{name}_y.csv", index=False)
    proc, out = train_run(
        tmp_path,
        "data=table",
        f"data.measurements={tmp_path / 'train_m.csv'}",
        f"data.labels={tmp_path / 'train_y.csv'}",
        f"data.test_measurements={tmp_path / 'test_m.csv'}",
        f"data.test_labels={tmp_path / 'test_y.csv'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_metrics(out)
    assert record["cohort"]["development_patients"] == 240
    assert record["cohort"]["test_patients"] == 60
    assert 0.0 <= record["metrics"]["test/auroc"] <= 1.0


def test_ten_patients_train(tmp_path, small_cohort):
    """Five patients per outcome is enough to train (cross-validated, no test split)."""
    m = pd.read_csv(small_cohort / "measurements.csv")
    y = pd.read_csv(small_cohort / "labels.csv")
    keep = pd.concat([y[y.label == 0].head(5), y[y.label == 1].head(5)])
    m[m.patient_id.isin(keep.patient_id)].to_csv(tmp_path / "m.csv", index=False)
    keep.to_csv(tmp_path / "y.csv", index=False)
    out = tmp_path / "run"
    proc = run_cli(
        "train.py",
        "data=table",
        f"data.measurements={tmp_path / 'm.csv'}",
        f"data.labels={tmp_path / 'y.csv'}",
        f"hydra.run.dir={out}",
        "recipe.steps=5",
        "logger=none",
        "trainer.enable_progress_bar=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_metrics(out)
    assert len(record["members"]) == 5
    assert record["cohort"]["test_patients"] == 0
    assert "val/auroc" in record["metrics"]


def test_depth_and_width_make_the_channels():
    assert layer_widths(None, depth=3, width=16) == [16, 16, 16]
    assert layer_widths([8, 4], depth=None, width=None) == [8, 4]
    with pytest.raises(UserError, match="not both"):
        layer_widths([8], depth=2, width=8)
    with pytest.raises(UserError, match="model.depth and model.width"):
        layer_widths(None, depth=None, width=8)


def test_seeds_and_refit_on_one_split(tmp_path):
    """model.ensemble=2 on one split: two networks, each refit on every development patient
    for its chosen number of steps; the checkpoint holds both."""
    proc, out = train_run(tmp_path, "model.ensemble=2", "recipe.refit=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_metrics(out)
    assert [m["member"] for m in record["members"]] == ["split_seed0", "split_seed1"]
    n_dev, n_train = (
        record["cohort"]["development_patients"],
        record["members"][0]["train_patients"],
    )
    for member in record["members"]:
        assert member["refit_steps"] == round(max(member["best_step"], 1) * n_dev / n_train)
    assert len(load_bundle(out / "checkpoints" / "best.ckpt").members) == 2


def test_refit_after_folds_retrains_every_fold_network_at_the_common_step(tmp_path):
    """recipe.refit=true with folds: the fold networks choose the common step and give the
    out-of-fold logits (so the validation figures equal those of a run without the refit);
    then each is retrained on every development patient, and those weights are bundled."""
    folds = ("data.cv_folds=3", "recipe.steps=24", "recipe.evaluations=6", "partner.nets=[]")
    proc, out = train_run(tmp_path / "refit", *folds, "recipe.refit=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "then retrain every network on all development patients" in proc.stdout
    record = read_metrics(out)
    (step,) = {m["best_step"] for m in record["members"]}
    n_dev = record["cohort"]["development_patients"]
    for member in record["members"]:
        assert member["refit_steps"] == round(max(step, 1) * n_dev / member["train_patients"])
    plain, out_plain = train_run(tmp_path / "plain", *folds)
    assert plain.returncode == 0, plain.stderr[-3000:]
    plain_val, refit_val = (
        {k: v for k, v in metrics.items() if k.startswith("val/")}
        for metrics in (read_metrics(out_plain)["metrics"], record["metrics"])
    )
    assert plain_val == pytest.approx(refit_val, nan_ok=True)
    refit = load_bundle(out / "checkpoints" / "best.ckpt").members
    kept = load_bundle(out_plain / "checkpoints" / "best.ckpt").members
    assert len(refit) == len(kept) == 3
    for a, b in zip(refit, kept, strict=True):
        assert not all(torch.equal(a[k], b[k]) for k in a)


def test_the_recipe_config_and_the_code_defaults_agree():
    """configs/recipe/default.yaml is what `python train.py` uses; recipe.DEFAULTS is what a
    partial setting is completed with. One set of numbers, so they must not drift apart."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from patientcnn.recipe import DEFAULTS

    config = Path(__file__).resolve().parents[1] / "configs" / "recipe" / "default.yaml"
    assert OmegaConf.to_container(OmegaConf.load(config)) == DEFAULTS


def test_common_step_averages_the_folds_and_carries_a_stopped_fold_forward():
    from patientcnn.checkpoint_choice import common_step

    # fold a is lowest at its own step 20, fold b at 40; averaged, step 30 wins
    a = [(10, 0.9), (20, 0.2), (30, 0.3), (40, 0.6)]
    b = [(10, 0.9), (20, 0.8), (30, 0.4), (40, 0.3)]
    assert common_step([a, b]) == (30, pytest.approx(0.35))
    # a fold that stopped at step 20 counts with its last loss (0.2) at later steps
    assert common_step([a[:2], b]) == (40, pytest.approx(0.25))
    # equal means: the earliest step
    assert common_step([[(5, 0.5), (10, 0.5)]])[0] == 5


def test_read_curve_takes_scores_from_their_files_and_old_evaluations_from_the_weights(tmp_path):
    from patientcnn.checkpoint_choice import FOLDER, read_curve

    folder = tmp_path / FOLDER
    folder.mkdir()
    # an evaluation saved before score files existed: read from its weights file
    torch.save({"step": 5, "score": 0.7, "value": 0.7, "state": {}}, folder / "step_0000005.pt")
    # a score file beside weights that cannot be unpickled: the weights are never read
    (folder / "step_0000010.pt").write_bytes(b"not a pickle")
    (folder / "step_0000010.json").write_text(json.dumps({"step": 10, "score": 0.4, "value": 0.4}))
    assert read_curve(tmp_path) == [(5, 0.7), (10, 0.4)]


def test_fold_networks_keep_one_common_step(tmp_path):
    """recipe.checkpoint=common (the default): every fold network keeps its weights at the
    same evaluation step, and the validation figures are those of the kept weights."""
    folds = ("data.cv_folds=3", "recipe.steps=24", "recipe.evaluations=6", "partner.nets=[]")
    proc, out = train_run(tmp_path, *folds)
    assert proc.returncode == 0, proc.stderr[-3000:]
    members = read_metrics(out)["members"]
    assert len({m["best_step"] for m in members}) == 1
    assert all("own_best_step" in m for m in members)
    assert not list((out / "checkpoints").glob("*/evaluations"))  # removed once bundled
    # the same run keeping each fold's own lowest: the same training (same seeds), so the
    # same own lowest losses, and the common step's losses are no lower on average
    proc_own, out_own = train_run(tmp_path / "own", *folds, "recipe.checkpoint=own")
    assert proc_own.returncode == 0, proc_own.stderr[-3000:]
    own = read_metrics(out_own)["members"]
    assert all("own_best_step" not in m for m in own)
    assert [m["best_val_loss"] for m in own] == pytest.approx(
        [m["own_best_val_loss"] for m in members]
    )
    assert (
        np.mean([m["best_val_loss"] for m in members])
        >= np.mean([m["best_val_loss"] for m in own]) - 1e-6
    )


def test_an_unknown_checkpoint_rule_is_refused():
    with pytest.raises(UserError, match="recipe.checkpoint must be one of common, own"):
        plan_recipe({"checkpoint": "best"}, np.array([0, 1] * 20), 10)
