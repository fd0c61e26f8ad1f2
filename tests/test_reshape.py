import numpy as np
import pandas as pd
import pytest

from patientcnn.data.reshape import GridSpec, to_arrays
from patientcnn.data.spec import TableSpec


def long_table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for pid, steps in (("b", 5), ("a", 3), ("c", 4)):
        for t in range(steps):
            rows.append({"patient_id": pid, "time": t, "hr": rng.normal(), "map": rng.normal()})
    return pd.DataFrame(rows)


def reshape(df: pd.DataFrame, **grid) -> object:
    return to_arrays(
        df["patient_id"],
        df["time"].to_numpy(float),
        df[["hr", "map"]].to_numpy(np.float32),
        ["hr", "map"],
        GridSpec(**grid),
    )


def test_values_land_at_patient_and_step():
    df = long_table()
    arrays = reshape(df)
    assert arrays.x.shape == (3, 5, 2)
    assert list(arrays.ids) == ["a", "b", "c"]  # sorted, independent of row order
    for row in df.itertuples():
        i = list(arrays.ids).index(row.patient_id)
        np.testing.assert_allclose(arrays.x[i, row.time], [row.hr, row.map], rtol=1e-6)
    assert list(arrays.lengths) == [3, 5, 4]
    assert np.isnan(arrays.x[0, 3:]).all()  # padding after a 3-step stay


def test_shuffled_rows_give_identical_arrays():
    df = long_table()
    a = reshape(df)
    b = reshape(df.sample(frac=1.0, random_state=3))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.lengths, b.lengths)


def test_missing_timesteps_and_values_stay_nan():
    df = long_table()
    df = df[~((df.patient_id == "b") & (df.time == 2))].copy()
    df.loc[(df.patient_id == "c") & (df.time == 1), "map"] = np.nan
    arrays = reshape(df)
    assert np.isnan(arrays.x[1, 2]).all()
    assert np.isnan(arrays.x[2, 1, 1]) and not np.isnan(arrays.x[2, 1, 0])
    assert arrays.lengths[1] == 5  # a gap inside the stay is not the end of it


def test_rows_in_one_bin_are_averaged_per_feature():
    df = pd.DataFrame(
        {
            "patient_id": [1, 1, 1],
            "time": [0.0, 0.5, 1.2],
            "hr": [1.0, 3.0, 5.0],
            "map": [np.nan, 4.0, 6.0],
        }
    )
    arrays = reshape(df)
    np.testing.assert_allclose(arrays.x[0, 0], [2.0, 4.0])
    np.testing.assert_allclose(arrays.x[0, 1], [5.0, 6.0])


def test_time_is_relative_to_each_patients_first_row():
    df = long_table()
    shifted = df.assign(time=df["time"] + df["patient_id"].map({"a": 100, "b": 7, "c": 0}))
    np.testing.assert_array_equal(reshape(df).x, reshape(shifted).x)


def test_truncate_keeps_start_or_end():
    df = long_table()
    start = reshape(df, length=2)
    end = reshape(df, length=2, align="end")
    full = reshape(df)
    np.testing.assert_array_equal(start.x, full.x[:, :2])
    for i, n in enumerate(full.lengths):
        np.testing.assert_array_equal(end.x[i], full.x[i, n - 2 : n])
    assert end.valid.all() and start.valid.all()


def test_align_end_pads_in_front():
    arrays = reshape(long_table(), length=5, align="end")
    assert np.isnan(arrays.x[0, :2]).all() and not np.isnan(arrays.x[0, 2:]).any()
    assert arrays.valid[0].tolist() == [False, False, True, True, True]


def test_datetime_and_float_hours_give_the_same_array(tmp_path):
    from patientcnn.data.cohort import load_measurements

    df = long_table()
    hours = df.assign(time=df["time"] * 1.0)
    stamps = df.assign(time=pd.Timestamp("2024-01-01") + pd.to_timedelta(df["time"], unit="h"))
    hours.to_csv(tmp_path / "h.csv", index=False)
    stamps.to_csv(tmp_path / "d.csv", index=False)
    a, _ = load_measurements(tmp_path / "h.csv", TableSpec())
    b, _ = load_measurements(tmp_path / "d.csv", TableSpec())
    np.testing.assert_array_equal(a.x, b.x)


@pytest.mark.parametrize("bad", [{"step": 0}, {"length": 0}, {"align": "middle"}])
def test_bad_grid_is_a_user_error(bad):
    from patientcnn.errors import UserError

    with pytest.raises(UserError, match="data.grid"):
        GridSpec(**bad)
