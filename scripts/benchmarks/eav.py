"""An EAV table onto a 48-step grid: patientcnn's pivot against pandas ``pivot_table``.

50,000 stays x 100 items, about 10 million (stay, time, item, value) rows at irregular
float-hour times (issue 14's size; --quick: a tenth). Both sides turn the table into
(N, 48, 100) with the mean of the values that share a one-hour bin, from the same
in-memory DataFrame (reading the file is the wide path's and is measured by ``load``):

- patientcnn: ``eav_rows`` (the (stay, time) rows and one (row, item, value) per
  observation), then ``to_arrays``; exactly what ``data.format=eav`` runs;
- pandas: bins by hours since each stay's first row, ``pivot_table`` over (stay, bin)
  and item with the mean, reindexed to every stay x 48 bins.

Both arrays are checked to be equal; rows/s, seconds and peak memory are reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks._common import best_times_interleaved, run_with_peak
from patientcnn.data.eav import EAVSpec, eav_rows
from patientcnn.data.reshape import GridSpec, to_arrays

STEP, LENGTH, ITEMS = 1.0, 48, 100


def eav_table(n_stays: int, rows_per_stay: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    counts = rng.integers(rows_per_stay // 2, rows_per_stay * 3 // 2 + 1, n_stays)
    ids = np.repeat(np.arange(n_stays), counts)
    hours = rng.uniform(0, 60, len(ids)).round(2) + rng.uniform(0, 1e4, n_stays).round(2)[ids]
    items = rng.integers(0, ITEMS, len(ids))
    return pd.DataFrame(
        {
            "stay_id": ids,
            "hours": hours,
            "item": pd.Categorical.from_codes(items, [f"item{j:03d}" for j in range(ITEMS)]),
            "value": rng.normal(size=len(ids)).astype(np.float32),
        }
    )


def with_patientcnn(df: pd.DataFrame) -> np.ndarray:
    rows, observations, items = eav_rows(
        df, "bench", "stay_id", "hours", EAVSpec("item", "value"), duplicates="aggregate"
    )
    grid = GridSpec(step=STEP, length=LENGTH)
    return to_arrays(rows["stay_id"], rows["hours"].to_numpy(), observations, items, grid).x


def with_pandas(df: pd.DataFrame) -> np.ndarray:
    start = df.groupby("stay_id")["hours"].transform("min")
    bins = np.floor((df["hours"] - start) / STEP + 1e-9).astype(np.int64)
    inside = df[bins < LENGTH].assign(bin=bins)
    table = inside.pivot_table(
        index=["stay_id", "bin"], columns="item", values="value", aggfunc="mean", observed=False
    )
    stays = np.sort(df["stay_id"].unique())
    full = pd.MultiIndex.from_product([stays, np.arange(LENGTH)], names=["stay_id", "bin"])
    items = sorted(df["item"].cat.categories)
    return (
        table.reindex(index=full, columns=items)
        .to_numpy(np.float32)
        .reshape(len(stays), LENGTH, len(items))
    )


def run(quick: bool) -> list[dict]:
    n_stays = 5_000 if quick else 50_000
    df = eav_table(n_stays)
    ours, ours_mb = run_with_peak(lambda: with_patientcnn(df))
    theirs, theirs_mb = run_with_peak(lambda: with_pandas(df))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    seconds = best_times_interleaved(
        [lambda: with_patientcnn(df), lambda: with_pandas(df)], repeat=2
    )
    rows = []
    for case, secs, peak in (
        ("patientcnn eav_rows + to_arrays", seconds[0], ours_mb),
        ("pandas pivot_table + reindex", seconds[1], theirs_mb),
    ):
        rows.append(
            {
                "section": "eav",
                "case": case,
                "value": len(df) / secs / 1e6,
                "unit": "M rows/s",
                "seconds": secs,
                "rows": len(df),
                "patients": n_stays,
                "peak_mb": peak,
                "ratio": secs / seconds[0],  # as in `irregular`: times patientcnn's time
            }
        )
    return rows
