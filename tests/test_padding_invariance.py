"""End to end: grid -> preprocessing -> ConvNet; more padding never changes a prediction.

The model is built here, in the test: data code never imports model code.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from patientcnn.data.batches import to_channels_first
from patientcnn.data.preprocess import Preprocessor
from patientcnn.data.reshape import GridSpec, to_arrays
from patientcnn.models.conv import ConvNet


def irregular_rows(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(40):
        n = int(rng.integers(2, 40))
        parts.append(
            pd.DataFrame(
                {
                    "id": i,
                    "hours": np.sort(rng.uniform(0, 30, n)),
                    "hr": rng.normal(80, 10, n),
                    "lactate": np.where(rng.random(n) < 0.7, np.nan, rng.normal(2, 1, n)),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def predictions(df: pd.DataFrame, grid: GridSpec, pre: Preprocessor, net: ConvNet) -> np.ndarray:
    arrays = to_arrays(
        df["id"],
        df["hours"].to_numpy(),
        df[["hr", "lactate"]].to_numpy(np.float32),
        ["hr", "lactate"],
        grid,
    )
    x = to_channels_first(pre.transform(arrays.x, arrays.valid))
    with torch.no_grad():
        return net(x, torch.from_numpy(arrays.valid)).numpy()


@pytest.mark.parametrize("align", ["start", "end"])
def test_prediction_unchanged_by_more_padding(align):
    df = irregular_rows()
    grid = GridSpec(step=1.0, length=32, align=align)
    fitted = to_arrays(
        df["id"],
        df["hours"].to_numpy(),
        df[["hr", "lactate"]].to_numpy(np.float32),
        ["hr", "lactate"],
        grid,
    )
    pre = Preprocessor(missing_indicators=True, time_since_observed=True, max_gap=4).fit(
        fitted.x, fitted.features, fitted.valid
    )
    torch.manual_seed(0)
    net = ConvNet(6, 32, [8, 8], kernel_size=[5, 3], dilation=[1, 2], norm="layer").eval()
    short = predictions(df, grid, pre, net)
    longer = predictions(df, GridSpec(step=1.0, length=80, align=align), pre, net)
    np.testing.assert_allclose(short, longer, atol=1e-5)
    for i in (0, 7, 21):  # each patient alone, on a grid exactly as long as the stay
        alone = predictions(df[df["id"] == i], GridSpec(step=1.0, align=align), pre, net)
        np.testing.assert_allclose(alone, short[i : i + 1], atol=1e-5)
    assert np.std(short) > 1e-3  # the patients really differ: not a constant output
