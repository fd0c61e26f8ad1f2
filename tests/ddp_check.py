"""Two CPU processes (gloo) training and validating one model with Lightning DDP.

``python tests/ddp_check.py COHORT_FOLDER OUT_FOLDER``: Lightning starts the second
process by running this file again (``LOCAL_RANK=1``). Each process writes
``OUT_FOLDER/rank<r>.json``: the development positions of the patients it served in each
training epoch and in validation, the validation metrics Lightning logged (gathered
across both processes) and, on rank 0, the same metrics computed in this one process
over every validation patient by ``patientcnn.metrics`` (the definitions). ``tests/test_distributed.py`` compares them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from patientcnn.data.datamodule import PatientDataModule
from patientcnn.metrics import logit_log_loss, point_metrics
from patientcnn.models.classifier import Classifier

N_TRAIN, N_VAL = 160, 61  # an odd validation split: shards of 31 and 30 patients
EPOCHS = 2


class Served(pl.Callback):
    """Which development patients each batch held (rows identified by their tensors)."""

    def __init__(self, datamodule: PatientDataModule, train: np.ndarray, val: np.ndarray):
        x = datamodule.dev["tensors"][0]
        self.position = {x[i].numpy().tobytes(): int(i) for i in np.concatenate([train, val])}
        self.train: list[list[int]] = [[] for _ in range(EPOCHS)]
        self.val: list[int] = []

    def _ids(self, batch) -> list[int]:
        return [self.position[row.numpy().tobytes()] for row in batch[0]]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train[trainer.current_epoch] += self._ids(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and trainer.state.fn == "validate":
            self.val += self._ids(batch)


def main(cohort: Path, out: Path) -> None:
    datamodule = PatientDataModule(
        measurements=str(cohort / "measurements.csv"),
        labels=str(cohort / "labels.csv"),
        split={"test": 0.2, "seed": 0},
        batch_size=32,
    )
    datamodule.setup("fit")
    train, val = np.arange(N_TRAIN), np.arange(N_TRAIN, N_TRAIN + N_VAL)
    datamodule.select(train, val)
    pl.seed_everything(0, verbose=False)
    model = Classifier(datamodule.num_channels, datamodule.seq_len, net="cnn", channels=[8])
    served = Served(datamodule, train, val)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=EPOCHS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[served],
    )
    trainer.fit(model, datamodule=datamodule)
    logged = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    record = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "train": served.train,
        "val": served.val,
        "logged": {k: float(v) for k, v in logged.items()},
    }
    if trainer.is_global_zero:  # the same weights (DDP), every validation patient here
        x, valid, y, static = datamodule.tensors["val"]
        model.eval()
        with torch.no_grad():
            logits = model(x, valid, static).float()
        prob = torch.sigmoid(logits).double().numpy()
        values = point_metrics(y.numpy(), prob, threshold=0.5)
        single = {f"val/{k}": values[k] for k in ("auroc", "auprc", "accuracy", "f1", "brier")}
        single["val/loss"] = logit_log_loss(logits.double().numpy(), y.numpy())
        record["single_process"] = single
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
