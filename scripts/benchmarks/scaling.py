"""How cost grows with the cohort: 1k, 10k and 100k patients x 48-49 steps x 5 features.

Per size: Parquet load end to end (read + validate + reshape), one training epoch of the
pipeline beside the raw loop (as in the training section, fewer epochs), and inference
throughput at batch 1,024. Linear growth shows as a constant per-patient cost.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch

from benchmarks import inference, load, training
from benchmarks._common import best_time, run_with_peak


def run(quick: bool) -> list[dict]:
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # keep the table clean
    sizes = (1_000, 2_000) if quick else (1_000, 10_000, 100_000)
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as folder:
            path = load.write_tables(Path(folder), n)["Parquet"]
            seconds = best_time(lambda path=path: load.end_to_end(path))
            _, peak = run_with_peak(lambda path=path: load.end_to_end(path))
            rows.append(_row(n, "load Parquet end to end", seconds, "s", peak))
            epoch = training.compare("cpu", torch.device("cpu"), n, 2, folder)[1]
            rows.append(
                _row(n, "training epoch, pipeline", epoch["value"], "s/epoch", epoch["peak_mb"])
                | {"ratio": epoch["ratio"]}
            )
        model = inference.default_model(inference.N_FEATURES, inference.N_STEPS)
        x = torch.randn(n, inference.N_FEATURES, inference.N_STEPS)
        valid = torch.ones(n, inference.N_STEPS, dtype=torch.bool)
        speed, peak = run_with_peak(
            lambda model=model, x=x, valid=valid: inference.patients_per_s(
                model, x, valid, "auto", torch.device("cpu")
            )
        )
        rows.append(_row(n, "inference, batch auto", n / speed, "s", peak))
    return rows


def _row(n: int, what: str, value: float, unit: str, peak: float) -> dict:
    return {
        "section": "scaling",
        "case": f"{n:>7,} patients: {what}",
        "patients": n,
        "value": value,
        "unit": unit,
        "us_per_patient": value / n * 1e6,
        "peak_mb": peak,
    }
