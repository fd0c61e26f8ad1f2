"""Long table -> (N, L, C): the vectorised scatter against pandas unstack and a groupby loop."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks._common import best_time, peak_mb
from patientcnn.data.reshape import GridSpec, to_arrays


def long_table(n_patients: int, n_steps: int, n_features: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_patients * n_steps, n_features)).astype(np.float32)
    df = pd.DataFrame(values, columns=[f"f{j}" for j in range(n_features)])
    df.insert(0, "time", np.tile(np.arange(n_steps), n_patients))
    df.insert(0, "patient_id", np.repeat(np.arange(n_patients), n_steps))
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # any row order


def scatter(df: pd.DataFrame, features: list[str]) -> np.ndarray:
    hours = df["time"].to_numpy(np.float64)
    return to_arrays(
        df["patient_id"], hours, df[features].to_numpy(np.float32), features, GridSpec()
    ).x


def unstack(df: pd.DataFrame, features: list[str]) -> np.ndarray:
    wide = df.set_index(["patient_id", "time"])[features].unstack("time")
    n_steps = wide.columns.get_level_values("time").nunique()
    return wide.to_numpy(np.float32).reshape(len(wide), len(features), n_steps).transpose(0, 2, 1)


def groupby_loop(df: pd.DataFrame, features: list[str]) -> np.ndarray:
    n_steps = int(df["time"].max()) + 1
    out = []
    for _, group in df.groupby("patient_id"):
        arr = np.full((n_steps, len(features)), np.nan, dtype=np.float32)
        arr[group["time"].to_numpy()] = group[features].to_numpy(np.float32)
        out.append(arr)
    return np.stack(out)


def run(quick: bool) -> list[dict]:
    n_patients = 10_000 if quick else 100_000  # x 48 steps = 0.48 M / 4.8 M rows
    df = long_table(n_patients, 48, 5)
    features = [c for c in df.columns if c.startswith("f")]
    reference = scatter(df, features)
    assert np.array_equal(reference, unstack(df, features), equal_nan=True)
    rows = []
    loop_df = df if quick else df[df["patient_id"] < n_patients // 10]  # the loop is slow
    for case, fn, frame in (
        ("factorize + scatter (patientcnn)", scatter, df),
        ("pandas unstack", unstack, df),
        ("per-patient groupby loop", groupby_loop, loop_df),
    ):
        seconds = best_time(
            lambda fn=fn, frame=frame: fn(frame, features), repeat=1 if fn is groupby_loop else 3
        )
        rows.append(
            {
                "section": "reshape",
                "case": case,
                "value": len(frame) / seconds / 1e6,
                "unit": "M rows/s",
                "rows": len(frame),
                "peak_mb": peak_mb(lambda fn=fn, frame=frame: fn(frame, features)),
            }
        )
    for row in rows:
        row["ratio"] = rows[0]["value"] / row["value"]  # how many times faster patientcnn is
    return rows
