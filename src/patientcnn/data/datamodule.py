"""The Lightning DataModule: load, split by patient, fit preprocessing on train, serve (N, C, L)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from sklearn.metrics import roc_auc_score

from patientcnn.data.batches import TensorBatches, to_channels_first, to_device_if_fits
from patientcnn.data.cohort import Cohort, load_cohort
from patientcnn.data.preprocess import Preprocessor
from patientcnn.data.reshape import GridSpec
from patientcnn.data.split import SPLITS, fold_split, given_split, stratified_split
from patientcnn.data.synthetic import read_summary, write_cohort
from patientcnn.errors import UserError

log = logging.getLogger(__name__)


class PatientDataModule(pl.LightningDataModule):
    """Everything between the user's tables and the model's input tensors.

    With ``cv_folds=K`` and ``fold=i`` the val split is fold i of K patient-level stratified
    folds of the non-test patients (the test split stays the one ``split`` gives).

    ``synthetic`` (``make_cohort`` arguments plus a ``name`` used only in the file paths)
    makes ``prepare_data`` write the synthetic cohort to ``measurements``/``labels`` when
    those files do not exist yet or were made with other arguments.
    """

    def __init__(
        self,
        measurements: str,
        labels: str | None = None,
        id_col: str = "patient_id",
        time_col: str = "time",
        label_col: str = "label",
        features: list[str] | None = None,
        positive_label: object | None = None,
        split_col: str | None = None,
        duplicates: str = "error",
        grid: dict | None = None,
        split: dict | None = None,
        preprocess: dict | None = None,
        batch_size: int = 64,
        synthetic: dict | None = None,
        unmatched: str = "error",
        cv_folds: int | None = None,
        fold: int | None = None,
    ) -> None:
        super().__init__()
        self.measurements = measurements
        self.labels = labels
        self.columns = {"id_col": id_col, "time_col": time_col, "label_col": label_col}
        self.features = list(features) if features else None
        self.positive_label = positive_label
        self.split_col = split_col
        self.duplicates = duplicates
        self.grid = GridSpec(**(grid or {}))
        self.split_args = {"val": 0.15, "test": 0.15, "seed": 0, **(split or {})}
        self.preprocessor = Preprocessor(**{"step": self.grid.step, **(preprocess or {})})
        self.unmatched = unmatched
        self.batch_size = int(batch_size)
        self.synthetic = {k: v for k, v in synthetic.items() if k != "name"} if synthetic else None
        self.cv_folds = cv_folds
        self.fold = fold
        self.index: dict[str, np.ndarray] = {}
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.cohort: Cohort | None = None
        self.placed: dict[tuple[str, str], tuple[torch.Tensor, ...]] = {}  # split, device

    def prepare_data(self) -> None:
        if self.synthetic is None:
            return
        folder = Path(self.measurements).parent
        existing = read_summary(folder)
        files_exist = all(Path(p).exists() for p in (self.measurements, self.labels))
        if existing and existing["params"] == self.synthetic and files_exist:
            return
        log.info("writing the synthetic cohort to %s", folder)
        summary = write_cohort(folder, **self.synthetic)
        log.info(
            "synthetic cohort: %d patients, prevalence %.3f, ceiling AUROC %.3f",
            summary["n_patients"],
            summary["prevalence"],
            summary["ceiling_auroc"],
        )

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        self.cohort = load_cohort(
            self.measurements,
            self.labels,
            features=self.features,
            grid=self.grid,
            positive_label=self.positive_label,
            split_col=self.split_col,
            unmatched=self.unmatched,
            duplicates=self.duplicates,
            **self.columns,
        )
        arrays, y = self.cohort.arrays, self.cohort.y
        if self.cohort.split is not None and self.cv_folds:
            raise UserError(
                f"data.cv_folds={self.cv_folds} and data.split_col={self.split_col!r} both set: "
                "cross-validation makes its own folds; set data.split_col=null"
            )
        if self.cohort.split is not None:
            self.index = given_split(self.cohort.split, y, self.split_col)
        elif self.cv_folds:
            args = self.split_args
            self.index = fold_split(y, args["test"], self.cv_folds, self.fold or 0, args["seed"])
        else:
            self.index = stratified_split(y, **self.split_args)
        train = arrays.subset(self.index["train"])
        self.preprocessor.fit(train.x, arrays.features, train.valid)
        for name in SPLITS:
            part = arrays.subset(self.index[name])
            x = self.preprocessor.transform(part.x, part.valid)
            self.tensors[name] = (
                to_channels_first(x),
                torch.from_numpy(part.valid.copy()),
                torch.from_numpy(y[self.index[name]].astype(np.float32)),
            )

    @property
    def num_channels(self) -> int:
        return len(self.preprocessor.output_features)

    @property
    def seq_len(self) -> int:
        return int(self.cohort.arrays.x.shape[1])

    @property
    def pos_weight(self) -> float:
        """Negatives per positive among training patients, for BCEWithLogits(pos_weight)."""
        y = self.cohort.y[self.index["train"]]
        return float((y == 0).sum() / max((y == 1).sum(), 1))

    def summary(self) -> dict:
        y = self.cohort.y
        out = {f"{name}_patients": int(len(idx)) for name, idx in self.index.items()} | {
            f"{name}_prevalence": float(y[idx].mean()) for name, idx in self.index.items()
        }
        out |= {"timesteps": self.seq_len, "features": list(self.cohort.arrays.features)}
        return out

    def bundle_state(self) -> dict:
        """What inference needs to turn a new table into this model's input (plain types)."""
        return {
            "columns": dict(self.columns),
            "grid": self.grid.state(),
            "preprocessor": self.preprocessor.state(),
            "input_channels": self.preprocessor.output_features,
        }

    def ceiling_auroc(self, split: str = "test") -> float | None:
        """AUROC of the synthetic cohort's true risk on ``split``: what a perfect model gets."""
        truth = Path(self.measurements).parent / "truth.csv"
        if self.synthetic is None or not truth.exists():
            return None
        risk = pd.read_csv(truth).set_index("patient_id")["true_risk"]
        idx = self.index[split]
        return float(roc_auc_score(self.cohort.y[idx], risk.reindex(self.cohort.arrays.ids[idx])))

    def _batches(self, split: str, shuffle: bool = False) -> TensorBatches:
        """Batches of ``split``, served from the trainer's GPU when the split fits there."""
        tensors = self.tensors[split]
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            key = (split, str(device))
            if key not in self.placed:
                self.placed[key] = to_device_if_fits(tensors, device)
            tensors = self.placed[key]
        return TensorBatches(
            tensors, self.batch_size, shuffle=shuffle, seed=self.split_args["seed"]
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val")

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test")
