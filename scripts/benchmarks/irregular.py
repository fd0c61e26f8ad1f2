"""An irregular long table onto a 48-step grid: patientcnn against plain pandas groupby.

100,000 patients with about 60 rows each at irregular float-hour times (each stay starts
at its own hour), 16 features with missing values. Both sides bin each row by hours
since the patient's first row, keep the first 48 one-hour bins, combine rows sharing a
bin (all means, or a per-feature mix of mean/last/min/max) and return (N, 48, 16).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks._common import best_time, peak_mb
from patientcnn.data.reshape import GridSpec, to_arrays

STEP, LENGTH, FEATURES = 1.0, 48, 16


def irregular_table(n_patients: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = rng.integers(30, 91, n_patients)  # about 60 rows per patient
    ids = np.repeat(np.arange(n_patients), rows)
    stay = rng.uniform(24, 96, n_patients)[ids]  # hours; stays of different lengths
    hours = rng.uniform(0, 1, len(ids)) * stay + rng.uniform(0, 1e4, n_patients)[ids]
    values = rng.normal(size=(len(ids), FEATURES)).astype(np.float32)
    values[rng.random(values.shape) < 0.3] = np.nan
    df = pd.DataFrame(values, columns=[f"f{j}" for j in range(FEATURES)])
    df.insert(0, "hours", hours)
    df.insert(0, "patient_id", ids)
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # any row order


def mixed_agg(features: list[str]) -> dict[str, str]:
    kinds = ("mean", "last", "min", "max")
    return {name: kinds[j % 4] for j, name in enumerate(features)}


def with_patientcnn(df: pd.DataFrame, features: list[str], agg: str | dict) -> np.ndarray:
    grid = GridSpec(step=STEP, length=LENGTH, agg=agg)
    values = df[features].to_numpy(np.float32)
    return to_arrays(df["patient_id"], df["hours"].to_numpy(), values, features, grid).x


def with_pandas(df: pd.DataFrame, features: list[str], agg: str | dict) -> np.ndarray:
    """The plain pandas way: transform('min'), floor to bins, groupby-agg, reindex."""
    df = df.sort_values("hours", kind="stable")  # so that 'last' is the latest row
    start = df.groupby("patient_id")["hours"].transform("min")
    bins = np.floor((df["hours"] - start) / STEP + 1e-9).astype(np.int64)
    inside = df[bins < LENGTH].assign(bin=bins)
    binned = inside.groupby(["patient_id", "bin"])[features].agg(agg)
    patients = np.sort(df["patient_id"].unique())
    full = pd.MultiIndex.from_product([patients, np.arange(LENGTH)], names=["patient_id", "bin"])
    return (
        binned.reindex(full)[features]
        .to_numpy(np.float32)
        .reshape(len(patients), LENGTH, len(features))
    )


def run(quick: bool) -> list[dict]:
    n_patients = 10_000 if quick else 100_000
    df = irregular_table(n_patients)
    features = [c for c in df.columns if c.startswith("f")]
    rows = []
    for label, agg in (("mean", "mean"), ("mixed mean/last/min/max", mixed_agg(features))):
        ours = with_patientcnn(df, features, agg)
        np.testing.assert_allclose(ours, with_pandas(df, features, agg), rtol=1e-5, atol=1e-6)
        timed = []
        for case, fn in (("patientcnn", with_patientcnn), ("pandas groupby", with_pandas)):
            seconds = best_time(
                lambda fn=fn, agg=agg: fn(df, features, agg), repeat=3 if quick else 2
            )
            timed.append(
                {
                    "section": "irregular",
                    "case": f"{case}, {label}",
                    "value": len(df) / seconds / 1e6,
                    "unit": "M rows/s",
                    "seconds": seconds,
                    "rows": len(df),
                    "patients": n_patients,
                    "peak_mb": peak_mb(lambda fn=fn, agg=agg: fn(df, features, agg)),
                }
            )
        for row in timed:
            row["ratio"] = timed[0]["value"] / row["value"]  # how many times faster patientcnn is
        rows += timed
    return rows
