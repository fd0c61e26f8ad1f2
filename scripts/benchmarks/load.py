"""CSV and Parquet files -> (N, L, C) arrays, end to end, against the bare pandas reader.

``load_measurements`` reads (with the same pandas call as the reference), validates every
id, time and value, and reshapes; the ratio is what validation and reshape add to the
read alone. The two take turns, five times each, and the best time of each counts.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet

from benchmarks._common import best_times_interleaved, peak_mb
from benchmarks.reshape import long_table
from patientcnn.data.cohort import load_measurements
from patientcnn.data.spec import TableSpec


def write_tables(folder: Path, n_patients: int) -> dict[str, Path]:
    """The same long table (48 steps x 5 features, rows shuffled) as CSV and Parquet."""
    df = long_table(n_patients, 48, 5).round(3)
    table = pa.Table.from_pandas(df, preserve_index=False)
    paths = {"CSV": folder / "measurements.csv", "Parquet": folder / "measurements.parquet"}
    pa.csv.write_csv(table, paths["CSV"])
    pa.parquet.write_table(table, paths["Parquet"])
    return paths


def end_to_end(path: Path) -> object:
    return load_measurements(path, TableSpec())[0]


def run(quick: bool) -> list[dict]:
    n_patients = 10_000 if quick else 100_000  # x 48 steps = 0.48 M / 4.8 M rows
    n_rows = n_patients * 48
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        paths = write_tables(Path(folder), n_patients)
        readers = {
            "CSV": lambda p: pd.read_csv(p, engine="pyarrow"),
            "Parquet": pd.read_parquet,
        }
        for kind, path in paths.items():
            reference_name = (
                "pandas.read_csv(engine='pyarrow')" if kind == "CSV" else "pandas.read_parquet"
            )
            cases = (
                (f"{kind}: {reference_name} alone", readers[kind]),
                (f"{kind}: read + validate + reshape (patientcnn)", end_to_end),
            )
            timings = best_times_interleaved([partial(fn, path) for _, fn in cases], repeat=5)
            measured = [
                {
                    "section": "load",
                    "case": case,
                    "value": n_rows / seconds / 1e6,
                    "unit": "M rows/s",
                    "seconds": seconds,
                    "rows": n_rows,
                    "file_mb": path.stat().st_size / 1e6,
                    "peak_mb": peak_mb(partial(fn, path)),
                }
                for (case, fn), seconds in zip(cases, timings, strict=True)
            ]
            for row in measured:
                row["ratio"] = row["seconds"] / measured[0]["seconds"]  # time vs the reader alone
            rows += measured
    return rows
