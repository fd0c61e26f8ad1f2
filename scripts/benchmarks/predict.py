"""Batch scoring: file -> predictions against reading the file + a raw forward pass; peak memory.

Throughput rows: ``ratio`` is how many times longer the case takes than the reference
(reading the same Parquet file, then the model's forward pass on tensors made
beforehand), so it is the price of everything in between: validation, reshaping,
preprocessing, writing the output and, when chunked, partitioning by patient.
Memory rows run ``predict_file`` in a fresh process per input size with the same chunk
size and report that process's peak resident memory: it should stay flat as the file
grows.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks._common import best_time
from patientcnn.checkpoint import bundle_from_networks, save_bundle
from patientcnn.data.preprocess import Preprocessor
from patientcnn.data.reshape import GridSpec
from patientcnn.inference import batched_logits, resolve_device
from patientcnn.models.registry import create_network
from patientcnn.predict import predict_file

STEPS, FEATURES = 48, [f"f{j}" for j in range(5)]
# what scoring imports (predict_file imports them only once its arguments are checked)
IMPORTS = "import patientcnn.checkpoint, patientcnn.data.chunks, patientcnn.inference"
BLOCK = 10_000  # patients generated and written at a time, so making the file needs little memory


def write_long_table(path: Path, n_patients: int, seed: int = 0) -> int:
    """A Parquet long table, rows shuffled within blocks of patients; returns the row count."""
    rng = np.random.default_rng(seed)
    writer = None
    for first in range(0, n_patients, BLOCK):
        n = min(BLOCK, n_patients - first)
        frame = pd.DataFrame(rng.normal(size=(n * STEPS, len(FEATURES))).astype(np.float32))
        frame.columns = FEATURES
        frame.insert(0, "time", np.tile(np.arange(STEPS), n))
        frame.insert(0, "patient_id", np.repeat(np.arange(first, first + n), STEPS))
        table = pa.Table.from_pandas(
            frame.sample(frac=1.0, random_state=first), preserve_index=False
        )
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()
    return n_patients * STEPS


def make_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    net = create_network("cnn", len(FEATURES), STEPS).eval()  # untrained
    preprocessor = Preprocessor().fit(
        np.random.default_rng(1).normal(size=(64, STEPS, 5)), FEATURES
    )
    data = {
        "columns": {"id_col": "patient_id", "time_col": "time", "label_col": "label"},
        "grid": GridSpec().state(),
        "preprocessor": preprocessor.state(),
        "input_channels": preprocessor.output_features,
    }
    return save_bundle(path, bundle_from_networks([net], "cnn", {}, len(FEATURES), STEPS, data))


def read_and_forward(path: Path, model: torch.nn.Module, x: torch.Tensor, valid: torch.Tensor):
    pd.read_parquet(path)
    batched_logits(model, x, valid, "auto", resolve_device("auto"))


def peak_rss_mb(code: str) -> float:
    """Peak resident memory of a fresh Python process running ``code``, in MB.

    Read from VmHWM, which belongs to the new process image; ``ru_maxrss`` would keep the
    high-water mark of this (large) process that forked it.
    """
    script = (
        f"{code}\nimport re, pathlib\n"
        "print(re.search(r'VmHWM:\\s+(\\d+)', pathlib.Path('/proc/self/status').read_text())[1])"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def run(quick: bool) -> list[dict]:
    n_patients = 5_000 if quick else 20_000
    memory_sizes = (20_000, 80_000) if quick else (50_000, 200_000)  # x 48 rows each
    chunk_rows = 250_000 if quick else 500_000
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="patientcnn-bench-") as folder:
        folder = Path(folder)
        ckpt = make_checkpoint(folder / "model.ckpt")
        data = folder / "input.parquet"
        n_rows = write_long_table(data, n_patients)

        model = create_network("cnn", len(FEATURES), STEPS).eval().to(resolve_device("auto"))
        x = torch.randn(n_patients, len(FEATURES), STEPS)
        valid = torch.ones(n_patients, STEPS, dtype=torch.bool)
        batched_logits(model, x[:1024], valid[:1024], "auto", resolve_device("auto"))  # warm-up
        cases = [
            (
                "read file + raw forward (reference)",
                lambda: read_and_forward(data, model, x, valid),
            ),
            ("predict_file, one chunk", lambda: _predict(ckpt, data, folder, n_rows + 1)),
            (
                "predict_file, 8 chunks of patients",
                lambda: _predict(ckpt, data, folder, n_rows // 8),
            ),
        ]
        # rounds interleave the cases, so a burst of load from elsewhere hits them all alike
        seconds = {case: float("inf") for case, _ in cases}
        for _ in range(3):
            for case, fn in cases:
                seconds[case] = min(seconds[case], best_time(fn, repeat=1))
        for case, _ in cases:
            rows.append(
                {
                    "section": "predict",
                    "case": f"{case}, {n_rows / 1e6:.2f} M rows",
                    "value": n_patients / seconds[case],
                    "unit": "patients/s",
                    "rows": n_rows,
                }
            )
        for row in rows:
            row["ratio"] = rows[0]["value"] / row["value"]  # times longer than the reference

        rows.append(
            {
                "section": "predict",
                "case": "peak memory: imports and model only",
                "value": peak_rss_mb(IMPORTS),
                "unit": "MB RSS",
            }
        )
        for size in memory_sizes:
            path = folder / f"big-{size}.parquet"
            n = write_long_table(path, size, seed=size)
            for label, limit in (
                (f"chunks of {chunk_rows / 1e6:.2f} M rows", chunk_rows),
                ("one chunk", n + 1),
            ):
                if label == "one chunk" and size != memory_sizes[0]:
                    continue
                code = (
                    "from patientcnn.predict import predict_file\n"
                    f"predict_file({str(ckpt)!r}, {str(path)!r}, {str(folder / 'm.parquet')!r}, "
                    f"overwrite=True, chunk_rows={limit}, tmp_dir={str(folder)!r}, progress=False)"
                )
                rows.append(
                    {
                        "section": "predict",
                        "case": f"peak memory: {n / 1e6:.1f} M rows, {label}",
                        "value": peak_rss_mb(code),
                        "unit": "MB RSS",
                        "rows": n,
                    }
                )
            path.unlink()
    return rows


def _predict(ckpt: Path, data: Path, folder: Path, chunk_rows: int) -> None:
    predict_file(
        ckpt,
        data,
        folder / "out.parquet",
        overwrite=True,
        chunk_rows=chunk_rows,
        tmp_dir=folder,
        progress=False,
    )
