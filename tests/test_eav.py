"""Entity-attribute-value input: the same tensors as the wide table, its rules, end to end."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import QUICK, run_cli

from patientcnn.checkpoint import load_bundle
from patientcnn.data.cohort import load_measurements
from patientcnn.data.eav import EAVSpec
from patientcnn.data.reshape import GridSpec
from patientcnn.data.spec import TableSpec
from patientcnn.errors import UserError

SPEC = EAVSpec()


def melt(wide: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The wide table as EAV rows (empty values kept as empty cells), rows shuffled."""
    long = wide.melt(id_vars=["patient_id", "time"], var_name="variable", value_name="value")
    return long.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def load(path, eav=None, features=None, duplicates="error", grid=None):
    spec = TableSpec(features=features, grid=grid, duplicates=duplicates, eav=eav)
    return load_measurements(path, spec)[0]


def test_the_same_data_gives_identical_tensors_wide_or_eav(small_cohort, tmp_path):
    wide = pd.read_csv(small_cohort / "measurements.csv", dtype={"patient_id": str})
    wide.loc[wide.index[::7], wide.columns[3]] = np.nan  # missing values too
    wide.to_csv(tmp_path / "wide.csv", index=False)
    melt(wide).to_csv(tmp_path / "eav.csv", index=False)
    melt(wide).to_parquet(tmp_path / "eav.parquet", index=False)
    grid = GridSpec(step=2.0)  # several rows per step: aggregation works as in the wide path
    a = load(tmp_path / "wide.csv", grid=grid)
    for name in ("eav.csv", "eav.parquet"):
        b = load(tmp_path / name, eav=SPEC, grid=grid)
        assert b.features == sorted(a.features)
        order = [a.features.index(f) for f in b.features]
        np.testing.assert_array_equal(b.ids, a.ids)
        np.testing.assert_array_equal(b.lengths, a.lengths)
        np.testing.assert_array_equal(b.x, a.x[:, :, order])


def eav_table(tmp_path, rows, name="eav.csv"):
    path = tmp_path / name
    pd.DataFrame(rows, columns=["patient_id", "time", "variable", "value"]).to_csv(
        path, index=False
    )
    return path


def test_a_non_number_is_named_or_dropped_as_configured(tmp_path, caplog):
    path = eav_table(
        tmp_path,
        [["a", 0, "hr", "80"], ["a", 1, "lactate", "<2"], ["b", 0, "hr", "90"]],
    )
    with pytest.raises(UserError, match=r"1 values .* not numbers .*'lactate' 1.*row 2.*patient a"):
        load(path, eav=SPEC)
    arrays = load(path, eav=EAVSpec(non_numeric="drop"), features=["hr", "lactate"])
    assert "left out" in caplog.text
    assert arrays.features == ["hr", "lactate"]
    assert np.isnan(arrays.x[:, :, 1]).all()  # the only lactate value was dropped
    assert arrays.lengths.tolist() == [2, 1]  # its row still marks patient a at time 1


def test_repeated_values_are_an_error_unless_aggregated(tmp_path):
    path = eav_table(
        tmp_path, [["a", 0, "hr", 80], ["a", 0, "hr", 100], ["a", 0, "map", 70], ["b", 0, "hr", 60]]
    )
    with pytest.raises(UserError, match="row 2 repeats variable 'hr' at time 0 for patient a"):
        load(path, eav=SPEC)
    arrays = load(path, eav=SPEC, duplicates="aggregate")
    assert arrays.x[0, 0].tolist() == [90.0, 70.0]  # hr: the mean of 80 and 100


def test_only_the_model_variables_are_read_and_absent_ones_stay_empty(tmp_path):
    path = eav_table(tmp_path, [["a", 0, "hr", 80], ["a", 5, "temp", 37], ["b", 0, "hr", 60]])
    arrays = load(path, eav=SPEC, features=["hr", "spo2"])
    assert arrays.features == ["hr", "spo2"] and np.isnan(arrays.x[:, :, 1]).all()
    assert arrays.lengths.tolist() == [6, 1]  # patient a's temp row still ends the stay at 5


def eav_cohort(small_cohort, tmp_path):
    wide = pd.read_csv(small_cohort / "measurements.csv", dtype={"patient_id": str})
    rare = wide["patient_id"].isin(wide["patient_id"].unique()[:6])  # 2 % of the patients
    wide["rare_lab"] = np.where(rare, 1.0, np.nan)
    melt(wide).dropna(subset=["value"]).to_csv(tmp_path / "eav.csv", index=False)
    return tmp_path / "eav.csv"


def test_train_and_predict_read_eav_the_same_way(small_cohort, tmp_path):
    eav = eav_cohort(small_cohort, tmp_path)
    out = tmp_path / "run"
    proc = run_cli(
        "train.py",
        "data=table",
        f"data.measurements={eav}",
        f"data.labels={small_cohort / 'labels.csv'}",
        "data.format=eav",
        "data.min_observed=0.05",
        f"hydra.run.dir={out}",
        *QUICK,
        "logger=none",
        "trainer.enable_progress_bar=false",
        "report.enabled=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"left out .*rare_lab \d\.\d%", proc.stdout + proc.stderr)  # and said so
    bundle = load_bundle(out / "checkpoints" / "best.ckpt")
    assert bundle.data["eav"] == SPEC.state()
    assert "rare_lab" not in bundle.data["preprocessor"]["features"]
    predictions = tmp_path / "predictions.csv"
    proc = run_cli(
        "scripts/predict.py",
        f"checkpoint={out / 'checkpoints' / 'best.ckpt'}",
        f"input={eav}",
        f"output={predictions}",
        "chunk_rows=2000",  # streamed in chunks of whole patients too
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    scored = pd.read_csv(predictions, dtype={"patient_id": str})
    assert len(scored) == 300 and scored["probability"].between(0, 1).all()
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert np.isfinite(metrics["val/auroc"])
    wide = run_cli(
        "scripts/predict.py",
        f"checkpoint={out / 'checkpoints' / 'best.ckpt'}",
        f"input={small_cohort / 'measurements.csv'}",
        f"output={tmp_path / 'wide_predictions.csv'}",
    )
    assert wide.returncode == 2 and "no variable column 'variable'" in wide.stderr
