"""(N, L, C) .npy/.npz input through the same loader and DataModule as long tables."""

import numpy as np
import pandas as pd
import pytest

from patientcnn.data.cohort import load_cohort
from patientcnn.data.datamodule import PatientDataModule
from patientcnn.data.reshape import GridSpec
from patientcnn.data.spec import TableSpec
from patientcnn.errors import UserError


def cohort_arrays(n: int = 60, steps: int = 10, channels: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, steps, channels)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    lengths = rng.integers(3, steps + 1, n)
    x[np.arange(steps)[None, :] >= lengths[:, None]] = np.nan  # variable length: NaN padding
    y = np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(np.int64)
    return x, y, lengths


def test_npz_with_labels_ids_and_names(tmp_path):
    x, y, lengths = cohort_arrays()
    ids = np.array([f"s{i:03d}" for i in range(len(x))])[::-1]
    np.savez(tmp_path / "c.npz", X=x, y=y, ids=ids, features=np.array(["hr", "map", "spo2"]))
    cohort = load_cohort(tmp_path / "c.npz", None)
    order = np.argsort(ids)
    assert cohort.arrays.features == ["hr", "map", "spo2"]
    assert list(cohort.arrays.ids) == sorted(ids)
    np.testing.assert_array_equal(cohort.arrays.x, x[order])
    np.testing.assert_array_equal(cohort.y, y[order])
    assert (cohort.arrays.lengths <= lengths[order]).all()  # trailing all-NaN steps: padding
    assert (cohort.arrays.lengths >= 1).all()


def test_npy_with_a_label_table_or_label_array(tmp_path):
    x, y, _ = cohort_arrays()
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "y.npy", y)
    pd.DataFrame({"patient_id": np.arange(len(y)), "label": y}).to_csv(
        tmp_path / "y.csv", index=False
    )
    a = load_cohort(tmp_path / "X.npy", tmp_path / "y.npy")
    b = load_cohort(tmp_path / "X.npy", tmp_path / "y.csv")
    np.testing.assert_array_equal(a.y, y)
    np.testing.assert_array_equal(b.y, y)
    assert a.arrays.features == ["feature_0", "feature_1", "feature_2"]


def test_grid_length_and_alignment_apply_to_arrays(tmp_path):
    x, y, lengths = cohort_arrays()
    np.savez(tmp_path / "c.npz", X=x, y=y)
    longer = load_cohort(tmp_path / "c.npz", None, TableSpec(grid=GridSpec(length=16))).arrays
    assert longer.x.shape == (60, 16, 3) and np.isnan(longer.x[:, 10:]).all()
    end = load_cohort(
        tmp_path / "c.npz", None, TableSpec(grid=GridSpec(length=4, align="end"))
    ).arrays
    np.testing.assert_array_equal(end.x, x[:, -4:])


def test_datamodule_trains_from_an_npz(tmp_path):
    x, y, _ = cohort_arrays(n=80)
    np.savez(tmp_path / "c.npz", X=x, y=y)
    dm = PatientDataModule(str(tmp_path / "c.npz"), preprocess={"missing_indicators": True})
    dm.setup()
    xb, valid, yb, _ = next(iter(dm.train_dataloader()))
    assert xb.shape[1:] == (6, 10) and valid.shape[1] == 10
    assert dm.bundle_state()["input_channels"][:3] == ["feature_0", "feature_1", "feature_2"]


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"X": np.zeros((4, 5))}, r"X must be shaped \(patients, timesteps, features\)"),
        ({"data": np.zeros((4, 5, 2))}, "no array named 'X'"),
        ({"X": np.zeros((4, 5, 2)), "y": np.zeros(3)}, "y holds 3 labels but X holds 4"),
        ({"X": np.zeros((4, 5, 2))}, "no labels"),
        ({"X": np.full((4, 5, 2), np.inf), "y": np.zeros(4)}, "infinite"),
        ({"X": np.zeros((4, 5, 2)), "y": [0, 1, 2, 1]}, "must be 0/1"),
    ],
)
def test_bad_arrays_are_named_user_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match=message):
        load_cohort(tmp_path / "bad.npz", None)


def test_unreadable_array_file_is_a_user_error(tmp_path):
    (tmp_path / "x.npy").write_text("not numpy")
    with pytest.raises(UserError, match=r"x\.npy: cannot be read"):
        load_cohort(tmp_path / "x.npy", None)
