"""A long table larger than memory: to the grid and one training epoch, DuckDB vs pandas.

    python scripts/benchmark.py --only outofcore --rows 100000000

A generated table (48 hourly steps, 8 features, a label per patient; ``--rows`` rows in
each variant) is written as wide and EAV tables, CSV and Parquet. Each case runs in a
fresh process so that its peak resident memory (the kernel's high-water mark, every
allocator and DuckDB included) is its own: ``PatientDataModule.setup`` (read, check,
grid, split, preprocessing) and then one epoch of a small Conv1d over the training
patients, batches served by the datamodule. The duckdb engine runs twice: building the
cached grid, then reusing it; DuckDB's own memory is capped at ``DUCKDB_GB`` (it spills
to disk beyond it). The pandas engine runs only where its estimated peak
(``engine.pandas_bytes``) fits in half the available memory; above that it is reported
as skipped, with the estimate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet

STEPS, FEATURES = 48, 8
CHUNK_PATIENTS = 20_000  # written this many patients at a time: the generator's memory
DUCKDB_GB = 1.0  # DuckDB spills to disk beyond this (data.out_of_core.memory_limit_gb)


def _chunk(first: int, count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + first)
    patients = np.arange(first, first + count)
    label = (rng.random(count) < 0.2).astype(np.int64)
    values = rng.normal(size=(count, STEPS, FEATURES)).astype(np.float32)
    values += label[:, None, None] * np.linspace(0, 1, STEPS, dtype=np.float32)[None, :, None]
    values = np.round(values, 3)
    return {"patients": patients, "label": label, "values": values}


def _wide(c: dict) -> pa.Table:
    count = len(c["patients"])
    columns = {
        "patient_id": np.repeat(c["patients"], STEPS),
        "time": np.tile(np.arange(STEPS, dtype=np.float64), count),
    }
    flat = c["values"].reshape(-1, FEATURES)
    columns |= {f"f{j}": flat[:, j] for j in range(FEATURES)}
    columns["label"] = np.repeat(c["label"], STEPS)
    return pa.table(columns)


def _eav(c: dict) -> pa.Table:
    count = len(c["patients"])
    per = STEPS * FEATURES
    names = np.array([f"f{j}" for j in range(FEATURES)], dtype=object)
    return pa.table(
        {
            "patient_id": np.repeat(c["patients"], per),
            "time": np.tile(np.repeat(np.arange(STEPS, dtype=np.float64), FEATURES), count),
            "variable": np.tile(names, count * STEPS),
            "value": c["values"].reshape(-1),
            "label": np.repeat(c["label"], per),
        }
    )


def write_tables(folder: Path, rows: int, seed: int = 0) -> dict[tuple[str, str], Path]:
    """The same cohort as wide and EAV tables, CSV and Parquet, written in chunks; each
    table has about ``rows`` rows."""
    paths = {}
    for shape, make, rows_per_patient in (
        ("wide", _wide, STEPS),
        ("eav", _eav, STEPS * FEATURES),
    ):
        n_patients = max(rows // rows_per_patient, 20)
        csv_path, pq_path = folder / f"{shape}.csv", folder / f"{shape}.parquet"
        csv_writer = pq_writer = None
        for first in range(0, n_patients, CHUNK_PATIENTS):
            table = make(_chunk(first, min(CHUNK_PATIENTS, n_patients - first), seed))
            if csv_writer is None:
                csv_writer = pa.csv.CSVWriter(str(csv_path), table.schema)
                pq_writer = pa.parquet.ParquetWriter(str(pq_path), table.schema)
            csv_writer.write_table(table)
            pq_writer.write_table(table)
        csv_writer.close()
        pq_writer.close()
        paths[(shape, "CSV")], paths[(shape, "Parquet")] = csv_path, pq_path
    return paths


def child(engine: str, path: str, shape: str, cache: str) -> dict:
    """One case in this (fresh) process: setup, then one epoch; seconds and peak RSS."""
    import torch

    from patientcnn.data.datamodule import PatientDataModule

    torch.manual_seed(0)
    started = time.perf_counter()
    dm = PatientDataModule(
        measurements=path,
        format=shape,
        engine=engine,
        out_of_core={"cache_dir": cache, "memory_limit_gb": DUCKDB_GB},
        grid={"length": STEPS},
        split={"test": 0.15, "seed": 0},
        batch_size=256,
    )
    dm.setup("fit")
    grid_seconds = time.perf_counter() - started
    dm.select(np.arange(len(dm.y_dev)), None)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(dm.num_channels, 16, 5, padding=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool1d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 1),
    )
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    started = time.perf_counter()
    batches = 0
    for x, _, y, _ in dm.train_dataloader():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        batches += 1
    epoch_seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text().splitlines()
    peak_kb = next((int(s.split()[1]) for s in status if s.startswith("VmHWM:")), 0)
    return {
        "grid_seconds": grid_seconds,
        "epoch_seconds": epoch_seconds,
        "batches": batches,
        "patients": int(len(dm.y_dev) + len(dm.test_ids)),
        "peak_mb": peak_kb / 1e3,
    }


def _run_child(engine: str, path: Path, shape: str, cache: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    src = Path(__file__).resolve().parents[2] / "src"
    env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    proc = subprocess.run(
        [sys.executable, __file__, engine, str(path), shape, str(cache)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} on {path} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool, rows: int | None = None, data_dir: str | None = None) -> list[dict]:
    from patientcnn.data.engine import pandas_bytes
    from patientcnn.data.reshape import available_memory

    rows = rows or (200_000 if quick else 2_000_000)
    out = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(data_dir or scratch) / f"rows-{rows}"
        done = folder / "written"  # the tables are complete (a killed writer leaves none)
        if not done.exists():
            folder.mkdir(parents=True, exist_ok=True)
            paths = write_tables(folder, rows)
            done.write_text(json.dumps({k[0] + " " + k[1]: str(v) for k, v in paths.items()}))
        paths = {
            (shape, kind): folder / f"{shape}.{'csv' if kind == 'CSV' else 'parquet'}"
            for shape in ("wide", "eav")
            for kind in ("CSV", "Parquet")
        }
        shutil.rmtree(folder / "cache", ignore_errors=True)  # each run builds its cache
        for (shape, kind), path in paths.items():
            n_rows = pa.parquet.ParquetFile(paths[(shape, "Parquet")]).metadata.num_rows
            cases = []
            needed = pandas_bytes([path])
            fits = needed < 0.5 * (available_memory() or 0)
            if fits:
                cases.append(("pandas", "pandas (in memory)"))
            cases += [("duckdb", "duckdb (build cache)"), ("duckdb", "duckdb (cache reused)")]
            reference = None
            for engine, label in cases:
                try:
                    measured = _run_child(engine, path, shape, folder / "cache")
                except RuntimeError as err:  # one failed case is a row; the others still run
                    last = str(err).strip().splitlines()[-1][:300]
                    print(f"outofcore: {shape} {kind} {label} failed: {last}", file=sys.stderr)
                    out.append(
                        {
                            "section": "outofcore",
                            "case": f"{shape} {kind}: {label}",
                            "value": float("nan"),
                            "unit": f"failed: {last}",
                            "rows": n_rows,
                        }
                    )
                    continue
                total = measured["grid_seconds"] + measured["epoch_seconds"]
                print(
                    f"outofcore: {shape} {kind} {label}: {total:.1f} s, "
                    f"peak {measured['peak_mb']:,.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )
                row = {
                    "section": "outofcore",
                    "case": f"{shape} {kind}: {label}",
                    "value": n_rows / total / 1e6,
                    "unit": "M rows/s",
                    "seconds": total,
                    "rows": n_rows,
                    "file_mb": path.stat().st_size / 1e6,
                    **measured,
                }
                reference = reference or row
                row["ratio"] = total / reference["seconds"]
                out.append(row)
            if not fits:
                out.append(
                    {
                        "section": "outofcore",
                        "case": f"{shape} {kind}: pandas skipped",
                        "value": needed / 1e9,
                        "unit": "GB estimated (> half the available memory)",
                        "rows": n_rows,
                    }
                )
    return out


if __name__ == "__main__":
    print(json.dumps(child(*sys.argv[1:5])))
