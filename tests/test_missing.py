"""Missing values: forward fill with a maximum gap, mask and time-since-observed channels."""

import numpy as np
import pytest
import torch

from patientcnn.data.preprocess import Preprocessor, forward_fill, time_since_observed
from patientcnn.errors import UserError

NAN = np.nan


def series(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)[None, :, None]


def test_forward_fill_stops_after_the_maximum_gap():
    x = series(NAN, 1.0, NAN, NAN, NAN, 5.0, NAN)
    np.testing.assert_array_equal(
        forward_fill(x, max_gap=2)[0, :, 0], [NAN, 1.0, 1.0, 1.0, NAN, 5.0, 5.0]
    )
    np.testing.assert_array_equal(
        forward_fill(x, max_gap=0)[0, :, 0], [NAN, 1.0, NAN, NAN, NAN, 5.0, NAN]
    )


@pytest.mark.parametrize("impute", ["ffill", "mean", "zero"])
def test_no_output_step_depends_on_a_later_value(impute):
    """Changing what happens at step t and later never changes any earlier output."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 12, 3)).astype(np.float32)
    x[rng.random(x.shape) < 0.5] = NAN
    valid = np.ones((30, 12), dtype=bool)
    pre = Preprocessor(impute, missing_indicators=True, time_since_observed=True, max_gap=3).fit(
        x, ["a", "b", "c"], valid
    )
    before = pre.transform(x, valid)
    for t in (1, 5, 11):
        future = x.copy()
        future[:, t:] = rng.normal(size=future[:, t:].shape)  # observed where it was missing
        after = pre.transform(future, valid)
        np.testing.assert_array_equal(before[:, :t], after[:, :t])
        assert not np.array_equal(before[:, t:], after[:, t:])


def test_time_since_observed_counts_hours_from_the_stay_start():
    x = series(NAN, NAN, 2.0, NAN, NAN, 3.0)
    valid = np.array([[False, True, True, True, True, True]])  # padding in front
    since = time_since_observed(x, valid, step=0.5)[0, :, 0]
    np.testing.assert_allclose(since[1:], [0.5, 0.0, 0.5, 1.0, 0.0])


def test_preprocessor_channels_and_statistics_round_trip():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(40, 10, 2)).astype(np.float32)
    x[rng.random(x.shape) < 0.4] = NAN
    valid = np.ones((40, 10), dtype=bool)
    valid[::3, 6:] = False
    x[~valid] = NAN
    pre = Preprocessor(
        missing_indicators=True, time_since_observed=True, max_gap_hours=3.0, step=2.0
    ).fit(x, ["hr", "lactate"], valid)
    assert pre.max_gap == 1  # 3 hours on a 2-hour grid: one step
    assert pre.output_features == [
        "hr",
        "lactate",
        "hr__observed",
        "lactate__observed",
        "hr__time_since_observed",
        "lactate__time_since_observed",
    ]
    out = pre.transform(x, valid)
    assert out.shape == (40, 10, 6) and not np.isnan(out).any()
    assert (out[~valid] == 0).all()
    np.testing.assert_allclose(out[valid][:, 4:].mean(axis=0), 0.0, atol=1e-5)  # standardised
    state = pre.state()
    torch.save(state, "/dev/null")  # plain types only
    again = Preprocessor.from_state(state)
    np.testing.assert_array_equal(out, again.transform(x, valid))
    assert again.state() == state


def test_old_state_without_new_options_still_loads():
    state = {
        "impute": "ffill",
        "standardize": True,
        "missing_indicators": False,
        "features": ["hr"],
        "mean": [1.0],
        "std": [2.0],
    }
    pre = Preprocessor.from_state(state)
    assert pre.max_gap is None and not pre.time_since_observed


@pytest.mark.parametrize(
    "bad",
    [{"max_gap": -1}, {"max_gap": 1.5}, {"max_gap_hours": -2}, {"max_gap": 1, "max_gap_hours": 1}],
)
def test_bad_gap_options_are_user_errors(bad):
    with pytest.raises(UserError, match="max_gap"):
        Preprocessor(**bad)


def test_time_since_statistics_never_see_test_patients(small_cohort, tmp_path):
    """Erasing most values of every val/test patient leaves the fitted state unchanged."""
    import pandas as pd

    from patientcnn.data.datamodule import PatientDataModule

    def fitted(measurements):
        dm = PatientDataModule(
            str(measurements),
            str(small_cohort / "labels.csv"),
            preprocess={"time_since_observed": True, "max_gap": 2},
            split={"test": 0.2},
        )
        dm.setup()
        return dm, dm.preprocessor.state()

    dm, state = fitted(small_cohort / "measurements.csv")
    held_out = set(dm.cohort.arrays.ids[dm.index["test"]])  # fitting never sees test patients
    df = pd.read_csv(small_cohort / "measurements.csv")
    erase = df["patient_id"].isin(held_out) & (df["time"] % 4 != 0)
    df.loc[erase, dm.cohort.arrays.features] = np.nan
    df.to_csv(tmp_path / "sparse.csv", index=False)
    _, sparse_state = fitted(tmp_path / "sparse.csv")
    assert sparse_state == state
    assert state["since_mean"] is not None and state["max_gap"] == 2
