"""Inference throughput: patients/s of the plain CNN's forward pass, by batch size.

Eval mode under ``torch.inference_mode`` (no autograd bookkeeping), on (N, C, L) tensors
shaped like the training benchmark's; on a GPU the tensors are on the device already and
bf16 autocast is used as ``trainer=gpu`` trains.
"""

from __future__ import annotations

import time
from functools import partial

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import execution_whitelist

from benchmarks._common import ROOT, gpu_peak_mb, run_with_peak
from patientcnn.config import TRUSTED_TARGETS
from patientcnn.inference import inference_batch
from patientcnn.train import build_model

N_PATIENTS, N_STEPS, N_FEATURES = 20_000, 49, 5


def default_model(n_features: int, n_steps: int) -> torch.nn.Module:
    with initialize_config_dir(str(ROOT / "configs"), job_name="benchmark"):
        cfg = compose("train", overrides=["paths.output_dir=.", "model=cnn"])
    torch.manual_seed(0)
    with execution_whitelist(TRUSTED_TARGETS):
        return build_model(cfg.model, n_features, n_steps, 1.0).eval()


def patients_per_s(model, x, valid, batch_size: int | str, device: torch.device) -> float:
    """Best of three passes over all patients; ``batch_size`` a number or 'auto', as
    predict takes it (``patientcnn.inference.inference_batch``)."""
    batch_size = inference_batch(batch_size, x.shape[2], device)
    best = float("inf")
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
        ):
            for start in range(0, len(x), batch_size):
                model(x[start : start + batch_size], valid[start : start + batch_size])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return len(x) / best


def run(quick: bool) -> list[dict]:
    n = 2_000 if quick else N_PATIENTS
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        model = default_model(N_FEATURES, N_STEPS).to(device)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(n, N_FEATURES, N_STEPS, generator=generator).to(device)
        valid = torch.ones(n, N_STEPS, dtype=torch.bool, device=device)
        measured = []
        for batch_size in (64, 1024):
            (speed, gpu_peak), peak = run_with_peak(
                partial(
                    gpu_peak_mb,
                    partial(patients_per_s, model, x, valid, batch_size, device),
                    device,
                )
            )
            measured.append(
                {
                    "section": "inference",
                    "case": f"model forward, batch {batch_size:,} [{device.type}]",
                    "value": speed,
                    "unit": "patients/s",
                    "patients": n,
                    "peak_mb": peak,
                    "gpu_peak_mb": gpu_peak,
                    "device": str(device),
                }
            )
        for row in measured:
            row["ratio"] = measured[-1]["value"] / row["value"]  # vs the largest batch
        rows += measured
    return rows
