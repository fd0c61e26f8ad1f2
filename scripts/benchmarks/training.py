"""Seconds per training epoch: the real pipeline against a minimal raw PyTorch loop.

Both train the plain CNN (configs/model/cnn.yaml) on the same (N, C, L) tensors that
PatientDataModule serves, with the same optimiser and batch size. Their epochs alternate
(one raw epoch runs just before each Lightning epoch), so the ratio of each pair is taken
under the same machine load; the ratio is what the pipeline (Lightning Trainer, batch
serving, logging, progress bar) costs above the arithmetic. Validation is off in both:
this is the training epoch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import execution_whitelist, instantiate
from omegaconf import DictConfig

from benchmarks._common import ROOT, gpu_peak_mb, run_with_peak
from patientcnn.config import TRUSTED_TARGETS
from patientcnn.data.datamodule import PatientDataModule
from patientcnn.train import build_model

N_PATIENTS, N_STEPS, N_FEATURES = 20_000, 49, 5
BATCH_SIZE = 64  # what the recipe gives a cohort this large


def train_config(trainer: str, folder: str, n_patients: int, epochs: int) -> DictConfig:
    """What ``python train.py trainer=<trainer>`` composes, on a bigger synthetic cohort."""
    with initialize_config_dir(str(ROOT / "configs"), job_name="benchmark"):
        return compose(
            "train",
            overrides=[
                f"trainer={trainer}",
                "model=cnn",  # the figures in docs/BENCHMARKS.md are the plain CNN's
                f"paths.output_dir={folder}/run",
                f"paths.data_dir={folder}/data",
                f"+trainer.max_epochs={epochs}",
                f"+trainer.min_epochs={epochs}",
                f"data.synthetic.n_patients={n_patients}",
                f"data.synthetic.n_steps={N_STEPS}",
                f"data.synthetic.n_features={N_FEATURES}",
            ],
        )


def datamodule_for(cfg: DictConfig) -> PatientDataModule:
    """The configured PatientDataModule, its cohort written and loaded as train.py does."""
    with execution_whitelist(TRUSTED_TARGETS):
        datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.batch_size = BATCH_SIZE
    datamodule.select(np.arange(len(datamodule.y_dev)), None)  # every development patient trains
    return datamodule


def model_for(cfg: DictConfig, datamodule: PatientDataModule) -> pl.LightningModule:
    torch.manual_seed(0)
    with execution_whitelist(TRUSTED_TARGETS):
        return build_model(cfg.model, datamodule.num_channels, datamodule.seq_len, 1.0)


class RawLoop:
    """The least a training epoch can cost: shuffled index batches, forward, backward, step."""

    def __init__(self, cfg: DictConfig, datamodule: PatientDataModule, device: torch.device):
        self.model = model_for(cfg, datamodule).to(device).train()
        self.x, self.valid, self.y = (t.to(device) for t in datamodule.tensors["train"][:3])
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.model.lr, weight_decay=cfg.model.weight_decay
        )
        self.pos_weight = torch.tensor(1.0, device=device)
        self.batch_size = datamodule.batch_size
        self.device = device
        self.bf16 = cfg.trainer.precision == "bf16-mixed"

    def epoch(self) -> float:
        _sync(self.device)
        started = time.perf_counter()
        order = torch.randperm(len(self.y)).to(self.device)
        for start in range(0, len(self.y), self.batch_size):
            idx = order[start : start + self.batch_size]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.model(self.x[idx], self.valid[idx])
            loss = F.binary_cross_entropy_with_logits(
                logits.float(), self.y[idx], pos_weight=self.pos_weight
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        _sync(self.device)
        return time.perf_counter() - started


class AlternatingTimer(pl.Callback):
    """Times each Lightning training epoch, running one raw epoch just before it."""

    def __init__(self, raw_epoch: Callable[[], float]) -> None:
        self.raw_epoch = raw_epoch
        self.raw: list[float] = []
        self.pipeline: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.raw.append(self.raw_epoch())
        _sync(pl_module.device)
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(pl_module.device)
        self.pipeline.append(time.perf_counter() - self.started)


def fit(cfg: DictConfig, datamodule: PatientDataModule, timer: AlternatingTimer) -> None:
    """``trainer.fit`` as train.py runs it, minus validation, checkpoints and loggers.

    The progress bar is the configured one; it draws to /dev/null, not over the table.
    """
    model = model_for(cfg, datamodule)
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
        execution_whitelist(TRUSTED_TARGETS),
    ):
        trainer = instantiate(
            cfg.trainer,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_checkpointing=False,
            logger=False,
            callbacks=[timer, instantiate(cfg.callbacks.progress_bar)],
        )
        trainer.fit(model, datamodule=datamodule)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(
    trainer: str, device: torch.device, n_patients: int, epochs: int, folder: str
) -> list[dict]:
    """Best epoch of each after the first and their ratio (the least disturbed epochs of a
    noisy machine); the JSON also holds every epoch and the median of the per-pair ratios."""
    cfg = train_config(trainer, folder, n_patients, epochs)
    datamodule = datamodule_for(cfg)
    n_train = len(datamodule.tensors["train"][0])
    timer = AlternatingTimer(RawLoop(cfg, datamodule, device).epoch)
    (_, gpu_peak), peak = run_with_peak(
        lambda: gpu_peak_mb(lambda: fit(cfg, datamodule, timer), device)
    )
    pairs = list(zip(timer.pipeline, timer.raw, strict=True))[1:]  # the first pair warms up
    setup = (
        f"{n_train:,} train patients x {N_STEPS} steps x {N_FEATURES} features, "
        f"batch {datamodule.batch_size}, {cfg.trainer.precision}"
    )
    rows = []
    for case, epoch_seconds in (
        ("raw PyTorch loop", timer.raw),
        ("patientcnn pipeline (Lightning)", timer.pipeline),
    ):
        seconds = min(epoch_seconds[1:])
        rows.append(
            {
                "section": "training",
                "case": f"{case} [trainer={trainer}]",
                "value": seconds,
                "unit": "s/epoch",
                "ratio": seconds / min(timer.raw[1:]),
                "samples_per_s": n_train / seconds,
                "peak_mb": peak,
                "gpu_peak_mb": gpu_peak,
                "setup": setup,
                "device": str(device),
                "epoch_seconds": [round(s, 4) for s in epoch_seconds],
            }
        )
    rows[1]["median_pair_ratio"] = statistics.median(p / r for p, r in pairs)
    return rows


def run(quick: bool) -> list[dict]:
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # keep the table clean
    n_patients, epochs = (2_000, 3) if quick else (N_PATIENTS, 6)
    with tempfile.TemporaryDirectory() as folder:
        rows = compare("cpu", torch.device("cpu"), n_patients, epochs, folder)
        if torch.cuda.is_available():
            rows += compare("gpu", torch.device("cuda"), n_patients, epochs, folder)
    return rows
