"""Irregular times onto the grid: time kinds, anchors, windows and per-bin aggregation."""

import logging

import numpy as np
import pandas as pd
import pytest
from conftest import QUICK, read_metrics, run_cli

from patientcnn.checkpoint import load_bundle
from patientcnn.data.cohort import load_cohort, load_measurements
from patientcnn.data.preprocess import Preprocessor
from patientcnn.data.reshape import GridSpec, to_arrays
from patientcnn.data.spec import TableSpec
from patientcnn.errors import UserError


def irregular_export(n_patients: int = 6, seed: int = 0) -> pd.DataFrame:
    """Float-hour times since admission, stays of different lengths, missing values."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n_patients):
        n = int(rng.integers(3, 30))
        hours = np.sort(rng.uniform(-3.0, 20.0, n)).round(4)  # a few rows before admission
        part = pd.DataFrame(
            {
                "patient_id": f"p{i}",
                "hours": hours,
                "hr": rng.normal(80, 10, n),
                "lactate": np.where(rng.random(n) < 0.6, np.nan, rng.normal(2, 1, n)),
            }
        )
        parts.append(part)
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def as_datetimes(df: pd.DataFrame) -> pd.DataFrame:
    """The same export with date-time stamps and a per-patient admission time."""
    admit = pd.Series(
        pd.Timestamp("2024-03-01 07:13") + pd.to_timedelta(np.arange(6) * 29.5, unit="h"),
        index=[f"p{i}" for i in range(6)],
    )
    out = df.drop(columns="hours")
    out["admit_time"] = df["patient_id"].map(admit).to_numpy()
    out["charttime"] = out["admit_time"] + pd.to_timedelta(df["hours"], unit="h")
    return out


def naive_grid(df: pd.DataFrame, step: float, length: int, agg: dict) -> np.ndarray:
    """Per-patient pandas reference for the anchored start window (time zero = 0 h)."""
    out = []
    for _, group in df.groupby("patient_id"):
        group = group.sort_values("hours", kind="stable")
        bins = np.floor(group["hours"] / step + 1e-9).astype(int)
        inside = group[(bins >= 0) & (bins < length)].assign(bin=bins)
        grid = np.full((length, 2), np.nan)
        for j, name in enumerate(["hr", "lactate"]):
            values = inside.dropna(subset=[name]).groupby("bin")[name].agg(agg[name])
            grid[values.index.to_numpy(), j] = values.to_numpy()
        out.append(grid)
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("align", ["start", "end"])
def test_datetimes_with_anchor_equal_float_hours(tmp_path, align):
    df = irregular_export()
    hours = df.assign(admit=0.0)
    hours.to_csv(tmp_path / "h.csv", index=False)
    as_datetimes(df).to_csv(tmp_path / "d.csv", index=False)
    common = {"step": 2.0, "length": 6, "align": align, "agg": {"lactate": "max"}}
    a, _ = load_measurements(
        tmp_path / "h.csv",
        TableSpec(time_col="hours", grid=GridSpec(anchor_col="admit", **common)),
    )
    b, _ = load_measurements(
        tmp_path / "d.csv",
        TableSpec(
            time_col="charttime",
            features=["hr", "lactate"],
            grid=GridSpec(anchor_col="admit_time", **common),
        ),
    )
    assert a.features == ["hr", "lactate"]  # the anchor column is never a feature
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.lengths, b.lengths)
    assert not np.isnan(a.x).all()


def test_aggregations_match_a_per_patient_pandas_reference():
    df = irregular_export(seed=4)
    agg = {"hr": "last", "lactate": "min"}
    arrays = to_arrays(
        df["patient_id"],
        df["hours"].to_numpy(),
        df[["hr", "lactate"]].to_numpy(np.float32),
        ["hr", "lactate"],
        GridSpec(step=3.0, length=6, anchor_col="admit", agg=agg),
        anchor=np.zeros(len(df)),
    )
    np.testing.assert_allclose(arrays.x, naive_grid(df, 3.0, 6, agg), rtol=1e-6)
    agg = {"hr": "max", "lactate": "mean"}
    arrays = to_arrays(
        df["patient_id"],
        df["hours"].to_numpy(),
        df[["hr", "lactate"]].to_numpy(np.float32),
        ["hr", "lactate"],
        GridSpec(step=3.0, length=6, anchor_col="admit", agg=agg),
        anchor=np.zeros(len(df)),
    )
    np.testing.assert_allclose(arrays.x, naive_grid(df, 3.0, 6, agg), rtol=1e-6)


@pytest.mark.parametrize("agg,expected", [("mean", 2.5), ("last", 1.0), ("min", 1.0), ("max", 4.0)])
def test_each_aggregation_of_one_bin(agg, expected):
    times = np.array([0.9, 0.1, 0.5, 1.5])  # 'last' is the latest time, not the last row
    values = np.array([[1.0], [4.0], [np.nan], [9.0]], dtype=np.float32)
    arrays = to_arrays(np.zeros(4), times, values, ["hr"], GridSpec(agg=agg))
    assert arrays.x[0, 0, 0] == pytest.approx(expected)
    assert arrays.x[0, 1, 0] == 9.0


def test_anchor_windows_keep_the_hours_after_or_before_it():
    times = np.array([-5.0, -0.5, 0.0, 2.5, 7.0])
    values = np.arange(5, dtype=np.float32)[:, None]
    after = to_arrays(
        np.zeros(5), times, values, ["v"], GridSpec(length=4, anchor_col="a"), np.zeros(5)
    )
    np.testing.assert_array_equal(after.x[0, :, 0], [2.0, np.nan, 3.0, np.nan])
    assert after.lengths[0] == 4  # the stay goes on past the window: all of it is valid
    before = to_arrays(
        np.zeros(5),
        times,
        values,
        ["v"],
        GridSpec(length=3, align="end", anchor_col="a"),
        np.zeros(5),
    )
    np.testing.assert_array_equal(before.x[0, :, 0], [np.nan, np.nan, 1.0])  # [-3 h, 0 h)
    assert before.lengths[0] == 3  # rows before the window: the stay fills it


def test_grid_state_round_trips_every_option():
    grid = GridSpec(step=0.5, length=96, align="end", anchor_col="admit", agg={"lactate": "max"})
    state = grid.state()
    assert GridSpec(**state) == grid
    assert all(isinstance(v, (str, int, float, dict, type(None))) for v in state.values())


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"agg": "median"}, "data.grid.agg"),
        ({"agg": {"hr": "first"}}, "data.grid.agg"),
        ({"anchor_col": "admit"}, "data.grid.length"),
    ],
)
def test_bad_grid_options_are_user_errors(bad, message):
    with pytest.raises(UserError, match=message):
        GridSpec(**bad)


def test_agg_naming_an_unknown_feature_is_a_user_error():
    with pytest.raises(UserError, match="glucose"):
        GridSpec(agg={"glucose": "max"}).aggregations(["hr"])


def test_anchor_that_changes_within_a_patient_is_named(tmp_path):
    df = irregular_export().assign(admit=0.0)
    df.loc[df["patient_id"] == "p2", "admit"] = np.arange((df["patient_id"] == "p2").sum())
    df.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(UserError, match=r"'admit' must be constant .* patient p2"):
        load_measurements(
            tmp_path / "m.csv",
            TableSpec(time_col="hours", grid=GridSpec(length=4, anchor_col="admit")),
        )


def write_tables(tmp_path, ids_with_rows, ids_with_labels):
    m = irregular_export()
    m = m[m["patient_id"].isin(ids_with_rows)].assign(
        hours=lambda d: d["hours"] + 3.0
    )  # no anchor: times from 0
    y = pd.DataFrame({"patient_id": ids_with_labels, "label": [0, 1] * (len(ids_with_labels) // 2)})
    m.to_csv(tmp_path / "m.csv", index=False)
    y.to_csv(tmp_path / "y.csv", index=False)
    return tmp_path / "m.csv", tmp_path / "y.csv"


def test_unmatched_patients_are_reported_both_ways(tmp_path):
    m, y = write_tables(tmp_path, ["p0", "p1", "p2", "p3"], ["p1", "p2", "p3", "p4"])
    with pytest.raises(UserError) as err:
        load_cohort(m, y, TableSpec(time_col="hours"))
    text = str(err.value)
    assert "1 patients in" in text and "no label" in text and "p0" in text
    assert "no measurements" in text and "p4" in text and "data.unmatched=drop" in text


def test_unmatched_patients_dropped_with_a_warning(tmp_path, caplog):
    m, y = write_tables(tmp_path, ["p0", "p1", "p2", "p3"], ["p1", "p2", "p3", "p4"])
    with caplog.at_level(logging.WARNING):
        cohort = load_cohort(m, y, TableSpec(time_col="hours", unmatched="drop"))
    assert list(cohort.arrays.ids) == ["p1", "p2", "p3"]
    assert cohort.y.tolist() == [0, 1, 0] and len(cohort.arrays.x) == 3
    assert "p0" in caplog.text and "p4" in caplog.text


def train_irregular(raw, small_cohort, out, *overrides: str):
    """`python train.py data=irregular` on a raw export of the small cohort, 24 hours."""
    return run_cli(
        "train.py",
        "data=irregular",
        f"data.measurements={raw}",
        f"data.labels={small_cohort / 'labels.csv'}",
        "data.grid.length=24",
        *overrides,
        f"hydra.run.dir={out}",
        *QUICK,
        "logger=none",
        "trainer.enable_progress_bar=false",
    )


def test_raw_datetime_export_trains_with_config_alone(small_cohort, tmp_path):
    """The small cohort as a raw export: date-times, admission anchor, gaps, dropped rows."""
    rng = np.random.default_rng(0)
    df = pd.read_csv(small_cohort / "measurements.csv")
    df = df[rng.random(len(df)) > 0.3]  # irregular: rows missing, stays of different lengths
    admit = pd.Timestamp("2023-05-01") + pd.to_timedelta(
        df["patient_id"].str[1:].astype(int) * 7.3, unit="h"
    )
    jitter = rng.uniform(0, 0.9, len(df))
    df = df.assign(
        admit_time=admit.to_numpy(),
        charttime=(admit + pd.to_timedelta(df["time"] + jitter, unit="h")).to_numpy(),
    ).drop(columns="time")
    df.to_csv(tmp_path / "raw.csv", index=False)
    out = tmp_path / "run"
    proc = train_irregular(
        tmp_path / "raw.csv", small_cohort, out, "data.grid.agg={heart_rate: max, map: min}"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = read_metrics(out)["metrics"]
    assert 0.0 <= metrics["test/auroc"] <= 1.0
    data = load_bundle(out / "checkpoints" / "best.ckpt").data  # weights_only load
    assert GridSpec(**data["grid"]) == GridSpec(
        step=1.0,
        length=24,
        anchor_col="admit_time",
        agg={"heart_rate": "max", "map": "min"},
    )
    pre = Preprocessor.from_state(data["preprocessor"])
    assert pre.max_gap == 8 and pre.time_since_observed and len(pre.since_mean) == 4
    assert len(data["input_channels"]) == 12  # 4 features + observed + time since observed


def test_synthetic_cohort_as_a_raw_export_loads(tmp_path):
    from patientcnn.data.datamodule import PatientDataModule
    from patientcnn.data.synthetic import write_cohort

    write_cohort(tmp_path, n_patients=120, n_steps=24, n_features=3, irregular=True)
    dm = PatientDataModule(
        str(tmp_path / "measurements.csv"),
        str(tmp_path / "labels.csv"),
        time_col="charttime",
        grid={"length": 24, "anchor_col": "admit_time", "agg": "last"},
        preprocess={"max_gap_hours": 8, "missing_indicators": True, "time_since_observed": True},
    )
    dm.setup()
    arrays = dm.cohort.arrays
    assert arrays.x.shape == (120, 24, 3) and dm.num_channels == 9
    assert len(set(arrays.lengths.tolist())) > 3  # stays of different lengths
    assert np.isnan(arrays.x[arrays.valid]).any()  # and gaps inside them


def test_anchor_of_another_kind_of_time_is_named(tmp_path):
    df = as_datetimes(irregular_export()).assign(admit_time=0.0)
    df.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(
        UserError, match=r"'charttime' holds date-times but .*'admit_time' holds numbers"
    ):
        load_measurements(
            tmp_path / "m.csv",
            TableSpec(time_col="charttime", grid=GridSpec(length=4, anchor_col="admit_time")),
        )


def test_an_irregular_model_scores_new_rows_sharing_a_time_through_predict_and_evaluate(
    small_cohort, tmp_path
):
    """The bundle keeps data.duplicates: a model trained with data=irregular (duplicates
    aggregate) reads a new export of the same kind, two rows at one chart time included,
    in predict and evaluate, instead of refusing every such patient."""
    df = pd.read_csv(small_cohort / "measurements.csv")
    admit = pd.Timestamp("2023-05-01") + pd.to_timedelta(
        df["patient_id"].str[1:].astype(int) * 7.3, unit="h"
    )
    raw = df.assign(
        admit_time=admit.to_numpy(), charttime=(admit + pd.to_timedelta(df["time"], unit="h"))
    ).drop(columns="time")
    raw.to_csv(tmp_path / "raw.csv", index=False)
    out = tmp_path / "run"
    proc = train_irregular(
        tmp_path / "raw.csv", small_cohort, out, "partner.nets=[]", "report.enabled=false"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    repeated = pd.concat([raw, raw.iloc[::5].assign(heart_rate=lambda d: d["heart_rate"] + 1)])
    repeated.to_csv(tmp_path / "new.csv", index=False)
    checkpoint = out / "checkpoints" / "best.ckpt"
    proc = run_cli(
        "scripts/predict.py",
        f"checkpoint={checkpoint}",
        f"input={tmp_path / 'new.csv'}",
        f"output={tmp_path / 'scores.csv'}",
        "progress=false",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert scores["patient_id"].nunique() == raw["patient_id"].nunique() == len(scores)
    proc = run_cli(
        "scripts/evaluate.py",
        f"checkpoint={checkpoint}",
        f"data.measurements={tmp_path / 'new.csv'}",
        f"data.labels={small_cohort / 'labels.csv'}",
        "report.enabled=false",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 0.0 <= read_metrics(tmp_path / "eval")["metrics"]["auroc"] <= 1.0
