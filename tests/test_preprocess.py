import numpy as np
import pytest
import torch

from patientcnn.data.datamodule import PatientDataModule
from patientcnn.data.preprocess import Preprocessor, forward_fill
from patientcnn.data.split import holdout_split
from patientcnn.errors import UserError


def test_forward_fill_never_uses_future_values():
    x = np.array([[[np.nan], [1.0], [np.nan], [np.nan], [4.0], [np.nan]]], dtype=np.float32)
    filled = forward_fill(x)[0, :, 0]
    assert np.isnan(filled[0])  # nothing observed yet: left for the training mean
    np.testing.assert_array_equal(filled[1:], [1.0, 1.0, 1.0, 4.0, 4.0])


def test_transform_standardises_imputes_and_zeroes_padding():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, size=(50, 10, 3)).astype(np.float32)
    x[0, 0, 0] = np.nan
    valid = np.ones((50, 10), dtype=bool)
    valid[1, 7:] = False
    pre = Preprocessor(impute="mean").fit(x, ["a", "b", "c"])
    out = pre.transform(x, valid)
    assert not np.isnan(out).any()
    assert out[0, 0, 0] == pytest.approx(0.0, abs=1e-6)  # the training mean, standardised
    assert (out[1, 7:] == 0).all()
    np.testing.assert_allclose(out[2:].reshape(-1, 3).mean(axis=0), 0.0, atol=0.1)


def test_state_round_trip_is_plain_and_equivalent():
    x = np.random.default_rng(1).normal(size=(20, 6, 2)).astype(np.float32)
    valid = np.ones((20, 6), dtype=bool)
    pre = Preprocessor(missing_indicators=True).fit(x, ["hr", "map"])
    state = pre.state()
    assert all(isinstance(v, (str, bool, int, float, list, type(None))) for v in state.values())
    again = Preprocessor.from_state(state)
    np.testing.assert_array_equal(pre.transform(x, valid), again.transform(x, valid))
    assert again.output_features == ["hr", "map", "hr__observed", "map__observed"]


def test_feature_never_observed_in_training_is_named():
    x = np.ones((4, 3, 2), dtype=np.float32)
    x[:, :, 1] = np.nan
    with pytest.raises(UserError, match="lactate"):
        Preprocessor().fit(x, ["hr", "lactate"])


def test_feature_constant_in_training_is_named_in_a_warning_and_kept(caplog):
    x = np.random.default_rng(2).normal(size=(10, 5, 3)).astype(np.float32)
    x[:, :, 1] = 7.0  # e.g. a device flag that never changes in these patients
    x[0, 0, 1] = np.nan  # missing steps do not make it vary
    valid = np.ones((10, 5), dtype=bool)
    with caplog.at_level("WARNING", logger="patientcnn.data.preprocess"):
        pre = Preprocessor().fit(x, ["hr", "flag", "map"])
    assert [r.getMessage().split(" take")[0] for r in caplog.records] == ["feature(s) flag"]
    out = pre.transform(x, valid)
    assert pre.output_features == ["hr", "flag", "map"]
    assert (out[:, :, 1] == 0).all() and np.isfinite(out).all()
    caplog.clear()
    with caplog.at_level("WARNING", logger="patientcnn.data.preprocess"):
        Preprocessor().fit(x[:, :, [0, 2]], ["hr", "map"])
    assert not caplog.records


def test_statistics_never_see_test_patients(small_cohort, tmp_path):
    """Shifting every test patient's values must not change the fitted statistics."""
    import pandas as pd

    def fitted(measurements):
        dm = PatientDataModule(
            str(measurements), str(small_cohort / "labels.csv"), split={"seed": 3, "test": 0.2}
        )
        dm.setup()
        return dm, dm.preprocessor.state()

    dm, state = fitted(small_cohort / "measurements.csv")
    held_out = set(dm.cohort.arrays.ids[dm.index["test"]])
    assert len(held_out) == 60
    df = pd.read_csv(small_cohort / "measurements.csv")
    features = dm.cohort.arrays.features
    df.loc[df["patient_id"].isin(held_out), features] += 1000.0
    df.to_csv(tmp_path / "shifted.csv", index=False)
    _, shifted_state = fitted(tmp_path / "shifted.csv")
    np.testing.assert_allclose(state["mean"], shifted_state["mean"])
    np.testing.assert_allclose(state["std"], shifted_state["std"])


def test_datamodule_serves_channels_first_batches(small_cohort):
    dm = PatientDataModule(
        str(small_cohort / "measurements.csv"),
        str(small_cohort / "labels.csv"),
        batch_size=32,
        split={"test": 0.2},
    )
    dm.setup()
    train, val = holdout_split(dm.y_dev, 0.2, seed=0)
    dm.select(train, val)
    x, valid, y, static = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 4, 24) and valid.shape == (32, 24) and y.shape == (32,)
    assert static.shape == (32, 0)  # no static covariate table
    assert x.dtype == torch.float32 and valid.dtype == torch.bool
    assert sum(len(b[2]) for b in dm.train_dataloader()) == len(train)
    dev_ids = dm.dev["ids"]
    splits = [set(dev_ids[train]), set(dev_ids[val]), set(dm.test_ids)]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert sum(map(len, splits)) == 300
    for part in (dm.y_dev[train], dm.y_dev[val], dm.tensors["test"][2].numpy()):
        assert set(part.astype(int)) == {0, 1}  # stratified: every split holds both outcomes
