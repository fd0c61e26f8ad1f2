"""`python train.py` end to end, as a user runs it."""

import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import ROOT, read_metrics, run_cli, train_run
from sklearn.metrics import roc_auc_score

METRICS = ("auroc", "auprc", "accuracy", "f1", "brier", "loss", "sensitivity", "specificity")
METRICS += ("ece", "calibration_slope", "calibration_intercept")


def test_train_writes_checkpoint_metrics_and_config(tmp_path):
    proc, out = train_run(tmp_path, "model.kernel_size=5", "model.dilation=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_metrics(out)
    for split in ("val", "test"):
        for name in METRICS:
            assert f"{split}/{name}" in record["metrics"]
    assert 0.0 <= record["metrics"]["test/auroc"] <= 1.0
    # calibration before and after, on the validation patients it was fitted on
    assert {"val/ece_uncalibrated", "val/calibration_slope_uncalibrated"} <= set(record["metrics"])
    assert "validation calibration before -> after: ECE" in proc.stdout + proc.stderr
    assert (out / "config.yaml").exists()
    # the override shows in the shape table and in the checkpoint
    assert "receptive field" in proc.stdout + proc.stderr
    bundle = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)["patientcnn"]
    assert bundle["network"]["name"] == "inceptiontime"  # the default family
    assert bundle["network"]["config"]["dilation"] == 2
    assert bundle["network"]["config"]["kernel_size"] == 5
    assert "_target_" not in bundle["network"]["config"]
    data = bundle["data"]
    assert data["preprocessor"]["features"] == ["heart_rate", "resp_rate", "map", "spo2"]
    assert len(data["preprocessor"]["mean"]) == 4


def test_bundle_rebuilds_the_model(tmp_path):
    from patientcnn.checkpoint import load_bundle

    proc, out = train_run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bundle = load_bundle(out / "checkpoints" / "best.ckpt")
    model = bundle.build_model()
    seq_len = bundle.seq_len
    logits = model(
        torch.zeros(2, bundle.in_channels, seq_len),
        torch.ones(2, seq_len, dtype=torch.bool),
    )
    assert logits.shape == (2,) and bundle.threshold == 0.5


def test_trains_on_user_tables(tmp_path, small_cohort):
    m = pd.read_csv(small_cohort / "measurements.csv").sample(frac=1.0, random_state=0)
    m.rename(columns={"patient_id": "stay", "time": "hour"}).to_parquet(tmp_path / "m.parquet")
    pd.read_csv(small_cohort / "labels.csv").rename(columns={"patient_id": "stay"}).to_csv(
        tmp_path / "y.csv", index=False
    )
    proc, out = train_run(
        tmp_path,
        "data=table",
        f"data.measurements={tmp_path / 'm.parquet'}",
        f"data.labels={tmp_path / 'y.csv'}",
        "data.id_col=stay",
        "data.time_col=hour",
        "data.features=[heart_rate,map]",
        "data.cv_folds=3",  # every patient validated once, by the fold that left it out
        "data.split.test=0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_metrics(out)
    assert record["cohort"]["features"] == ["heart_rate", "map"]
    # every patient's out-of-fold probability, under the user's own id column
    oof = pd.read_csv(out / "validation_predictions.csv", dtype={"stay": str})
    labels = pd.read_csv(tmp_path / "y.csv", dtype={"stay": str})
    assert list(oof.columns) == ["stay", "label", "probability", "predicted_label", "fold"]
    assert sorted(oof["stay"]) == sorted(labels["stay"])
    merged = oof.merge(labels, on="stay", suffixes=("", "_given"))
    assert (merged["label"] == merged["label_given"]).all()
    assert set(oof["fold"]) == {"fold0", "fold1", "fold2"}
    assert (oof["predicted_label"] == (oof["probability"] >= record["threshold"]["value"])).all()
    metrics = record["metrics"]
    assert roc_auc_score(oof["label"], oof["probability"]) == pytest.approx(metrics["val/auroc"])
    assert (oof["predicted_label"] == oof["label"]).mean() == pytest.approx(metrics["val/accuracy"])
    # no test patients: the report shows those out-of-fold predictions instead
    page = (out / "report" / "report.md").read_text()
    assert "out-of-fold predictions" in page and "300 patients" in page
    assert (out / "report" / "roc.png").is_file() and (out / "report" / "calibration.png").is_file()
    cnn = record["confidence_intervals"]["models"]["cnn"]
    assert cnn["auroc"]["value"] == pytest.approx(metrics["val/auroc"])
    # and a report rewritten afterwards (a sweep's --best-report) is drawn from the same rows,
    # which needs the run folder's files only, not its checkpoint
    from patientcnn.report.rerun import report_finished_run

    (out / "checkpoints").rename(tmp_path / "moved")
    again = report_finished_run(out, tmp_path / "again", {"resamples": 50})
    assert "out-of-fold predictions" in again.with_suffix(".md").read_text()


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data.id_col=stay"], "no id column 'stay'"),
        (["data.label_col=outcome"], "no label column 'outcome'"),
        (
            ["model=cnn", "model.kernel_size=30", "model.padding=valid"],
            "layer 1 .*spans 30 steps but receives only 24",
        ),
        (["model=cnn", "model.groups=3"], "groups=3 must divide"),
    ],
)
def test_bad_input_is_one_message_and_exit_2(tmp_path, overrides, message):
    import re

    proc, out = train_run(tmp_path, *overrides)
    assert proc.returncode == 2
    assert re.search(message, proc.stderr), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (out / "checkpoints").exists()


def test_bad_label_file_exits_2(tmp_path, small_cohort):
    y = pd.read_csv(small_cohort / "labels.csv")
    y.loc[5, "label"] = 3
    y.to_csv(tmp_path / "y.csv", index=False)
    proc, _ = train_run(
        tmp_path,
        "data=table",
        f"data.measurements={small_cohort / 'measurements.csv'}",
        f"data.labels={tmp_path / 'y.csv'}",
    )
    assert proc.returncode == 2 and "must be 0/1" in proc.stderr and "Traceback" not in proc.stderr


def test_explain_shapes_without_data():
    proc = run_cli(
        "scripts/explain_shapes.py",
        "in_channels=5",
        "seq_len=49",
        "model=cnn",
        "model.channels=[5,32]",
        "model.groups=[5,1]",
        "model.kernel_size=7",
        "model.dilation=2",
        "model.padding=0",
    )
    assert proc.returncode == 0, proc.stderr
    assert "(N, 5, 37)" in proc.stdout and "(N, 32, 25)" in proc.stdout


def test_explain_shapes_builds_the_network_without_importing_lightning():
    """The shape table needs only the registry: seconds of Lightning import saved."""
    code = (
        "import atexit, runpy, sys; "
        "atexit.register(lambda: print('lightning imported:', 'pytorch_lightning' in sys.modules)); "
        "sys.argv = ['explain_shapes.py', 'in_channels=2', 'seq_len=30']; "
        "runpy.run_path('scripts/explain_shapes.py', run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert "(N, 64, 30)" in proc.stdout, proc.stderr[-2000:]
    assert "lightning imported: False" in proc.stdout


def test_default_run_learns(tmp_path):
    """The default config (3000 patients) learns well past chance in a few hundred steps."""
    out = tmp_path / "run"
    proc = run_cli(
        "train.py",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={out}",
        "recipe.steps=150",
        "report.enabled=false",
        "logger=none",
        "trainer.enable_progress_bar=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_metrics(out)["metrics"]
    assert metrics["test/auroc"] > 0.75, metrics
    assert metrics["test/auroc"] <= metrics["test/true_risk_auroc"] + 0.05


@pytest.mark.slow
def test_full_default_run_approaches_the_ceiling(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "train.py",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={out}",
        "logger=none",
        "trainer.enable_progress_bar=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_metrics(out)["metrics"]
    assert metrics["test/auroc"] > metrics["test/true_risk_auroc"] - 0.05, metrics
