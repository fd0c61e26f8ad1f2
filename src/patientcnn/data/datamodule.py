"""The Lightning DataModule: load, split by patient, fit preprocessing on train, serve (N, C, L)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from sklearn.metrics import roc_auc_score

from patientcnn.data.batches import TensorBatches, to_channels_first, to_device_if_fits
from patientcnn.data.cohort import Cohort, load_cohort
from patientcnn.data.eav import eav_spec
from patientcnn.data.engine import engine_spec
from patientcnn.data.mapped import fit_preprocessor, is_mapped, mapped_tensors, observed_share, take
from patientcnn.data.preprocess import Preprocessor
from patientcnn.data.reshape import GridSpec, PatientArrays
from patientcnn.data.spec import TableSpec
from patientcnn.data.split import carve_test, given_split
from patientcnn.data.static import StaticEncoder, read_static, static_rows
from patientcnn.data.synthetic import read_summary, write_cohort
from patientcnn.errors import UserError

log = logging.getLogger(__name__)


class PatientDataModule(pl.LightningDataModule):
    """Everything between the user's tables and the model's input tensors.

    ``setup`` loads the cohort and decides the test patients: the user's own test table
    (``test_measurements``/``test_labels``), the user's split column, or a stratified
    share ``split.test`` of the patients (none when the cohort is too small for one).
    The other patients are the development set; preprocessing is fitted on them (never
    on test patients) and they are served as (N, C, L) tensors. Which development
    patients train and which validate is the training task's choice (``select``): one
    split, or each fold of a cross-validation in turn.

    ``static``: a per-patient table of static covariates (``patientcnn.data.static``;
    ``static_columns`` chooses them, ``static_categorical`` one-hot encodes numeric
    codes), encoded with statistics of the development patients only and served beside
    the series; ``test_static`` holds the test table's patients (None: ``static``).
    Every split is ``(x, valid, y, static)``, ``static`` (N, S) with S = 0 without one.

    ``synthetic`` (``make_cohort`` arguments plus a ``name`` used only in the file paths)
    makes ``prepare_data`` write the synthetic cohort to ``measurements``/``labels`` (and
    ``static``) when those files do not exist yet or were made with other arguments.
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
        test_measurements: str | None = None,
        test_labels: str | None = None,
        format: str = "wide",  # noqa: A002  (the config key users write: data.format=eav)
        eav: dict | None = None,
        min_observed: float = 0.0,
        static: str | None = None,
        static_columns: list[str] | None = None,
        static_categorical: list[str] | None = None,
        test_static: str | None = None,
        engine: str = "auto",
        out_of_core: dict | None = None,
    ) -> None:
        super().__init__()
        self.measurements = measurements
        self.labels = labels
        self.test_measurements = test_measurements
        self.test_labels = test_labels
        # the table settings, built once and handed to every loader
        self.spec = TableSpec(
            id_col=id_col,
            time_col=time_col,
            label_col=label_col,
            features=features,
            positive_label=positive_label,
            split_col=split_col,
            duplicates=duplicates,
            unmatched=unmatched,
            eav=eav_spec(format, eav),
            grid=GridSpec(**(grid or {})),
            engine=engine_spec(engine, out_of_core),  # pandas in memory, or DuckDB on disk
        )
        if not (isinstance(min_observed, (int, float)) and 0 <= min_observed <= 1):
            raise UserError(
                f"data.min_observed must be a share of patients from 0 to 1, got {min_observed!r}"
            )
        self.min_observed = float(min_observed)
        self.split_args = {"test": "auto", "seed": 0, **(split or {})}
        self.preprocessor = Preprocessor(**{"step": self.spec.grid.step, **(preprocess or {})})
        self.static = static
        self.test_static = test_static
        self.static_columns = list(static_columns) if static_columns else None
        if static is None and (static_columns or static_categorical or test_static):
            raise UserError(
                "data.static_columns, static_categorical and test_static need a static "
                "table: set data.static=<path>"
            )
        self.static_encoder = (
            StaticEncoder(categorical=static_categorical) if static is not None else None
        )
        self.batch_size = int(batch_size)
        self.synthetic = {k: v for k, v in synthetic.items() if k != "name"} if synthetic else None
        self.cv_folds = cv_folds
        self.shuffle_seed = int(self.split_args["seed"])
        self.dev: dict[str, object] = {}  # ids, y, tensors of the development patients
        self.given_val: np.ndarray | None = None  # split column: positions in dev that validate
        self.test_source = ""
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.index: dict[str, np.ndarray] = {}
        self.cohort: Cohort | None = None
        self.placed: dict[tuple[str, str], tuple[torch.Tensor, ...]] = {}  # split, device

    def prepare_data(self) -> None:
        if self.synthetic is None:
            return
        folder = Path(self.measurements).parent
        existing = read_summary(folder)
        files = (self.measurements, self.labels, *([self.static] if self.static else []))
        files_exist = all(Path(p).exists() for p in files)
        if existing and existing["params"] == self.synthetic and files_exist:
            return
        log.info("writing the synthetic cohort to %s", folder)
        summary = write_cohort(folder, **self.synthetic)
        log.info(
            "synthetic cohort: %d patients, prevalence %.3f, sample AUROC of the true risk %.3f",
            summary["n_patients"],
            summary["prevalence"],
            summary["ceiling_auroc"],
        )

    def setup(self, stage: str | None = None) -> None:
        if self.dev:
            return
        cohort = load_cohort(self.measurements, self.labels, self.spec)
        self.cohort = cohort
        y = cohort.y
        test_cohort = None
        if self.test_measurements is not None:
            if cohort.split is not None:
                raise UserError(
                    "data.split_col and data.test_measurements both set: give the test "
                    "patients one way"
                )
            # the test table on the training grid, with the training features
            fitted = dataclasses.replace(self.spec.grid, length=int(cohort.arrays.x.shape[1]))
            test_spec = dataclasses.replace(
                self.spec, grid=fitted, features=tuple(cohort.arrays.features)
            )
            test_cohort = load_cohort(self.test_measurements, self.test_labels, test_spec)
            dev_idx, test_idx = np.arange(len(y)), np.arange(0)
            self.test_source = str(self.test_measurements)
        elif cohort.split is not None:
            parts = given_split(cohort.split, y, self.spec.split_col)
            dev_idx = np.sort(np.concatenate([parts["train"], parts["val"]]))
            test_idx = parts["test"]
            self.given_val = np.flatnonzero(np.isin(dev_idx, parts["val"]))
            self.test_source = f"split column '{self.spec.split_col}'"
        else:
            dev_idx, test_idx = carve_test(y, self.split_args["test"], self.split_args["seed"])
            self.test_source = f"{len(test_idx)} patients held out of {self.measurements}"
        dev = cohort.arrays.subset(dev_idx)
        kept = observed_often(dev, self.min_observed)
        if kept != dev.features:
            dev = dev.select_features(kept)
            if test_cohort is not None:
                test_cohort.arrays = test_cohort.arrays.select_features(kept)
            else:
                cohort.arrays = cohort.arrays.select_features(kept)
        fit_preprocessor(self.preprocessor, dev)  # a mapped cohort: one streaming pass
        if test_cohort is not None:
            test_part, test_y = test_cohort.arrays, test_cohort.y
        else:
            test_part, test_y = cohort.arrays.subset(test_idx), y[test_idx]
        dev_static, test_static = self._static_covariates(dev.ids, test_part.ids)
        self.dev = {
            "ids": dev.ids,
            "y": y[dev_idx],
            "tensors": self._tensors(dev, y[dev_idx], dev_static),
        }
        self.test_ids = test_part.ids
        self.tensors["test"] = self._tensors(test_part, test_y, test_static)
        self.index = {"dev": dev_idx, "test": test_idx}
        self.select(np.arange(len(dev_idx)), None)  # until the task chooses: all train

    def _static_covariates(
        self, dev_ids: np.ndarray, test_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The encoded static covariates of the development and test patients: (N, S)
        each, S = 0 without a static table. The encoder is fitted on the development
        patients' rows only; the test patients' rows are only transformed."""
        if self.static_encoder is None:
            return np.zeros((len(dev_ids), 0), np.float32), np.zeros((len(test_ids), 0), np.float32)
        id_col, not_covariates = self.spec.id_col, self.spec.not_features
        table = read_static(self.static, id_col, self.static_columns, not_covariates)
        dev_rows = static_rows(table, dev_ids, self.static)
        self.static_encoder.fit(dev_rows, self.static)
        test_path = self.test_static or self.static
        if self.test_static is not None:
            columns = list(self.static_encoder.order)
            table = read_static(self.test_static, id_col, columns, not_covariates)
        test_rows = static_rows(table, test_ids, test_path)
        return (
            self.static_encoder.transform(dev_rows, self.static),
            self.static_encoder.transform(test_rows, test_path),
        )

    def _tensors(self, part, y: np.ndarray, static: np.ndarray) -> tuple[torch.Tensor, ...]:
        """``(x (N, C, L), valid (N, L), y (N,), static (N, S))`` of reshaped patients."""
        if is_mapped(part):  # read per batch from a file (patientcnn.data.mapped)
            return mapped_tensors(part, self.preprocessor, y, static)
        x = self.preprocessor.transform(part.x, part.valid)
        return (
            to_channels_first(x),
            torch.from_numpy(part.valid.copy()),
            torch.from_numpy(y.astype(np.float32)),
            torch.from_numpy(np.ascontiguousarray(static, dtype=np.float32)),
        )

    def select(self, train: np.ndarray, val: np.ndarray | None) -> None:
        """Train on development positions ``train``, validate on ``val`` (None: no validation)."""
        self.tensors["train"] = tuple(take(t, train) for t in self.dev["tensors"])
        if val is not None:
            self.tensors["val"] = tuple(take(t, val) for t in self.dev["tensors"])
        else:
            self.tensors.pop("val", None)
        self.placed = {k: v for k, v in self.placed.items() if k[0] == "test"}

    @property
    def y_dev(self) -> np.ndarray:
        return self.dev["y"]

    @property
    def num_channels(self) -> int:
        return len(self.preprocessor.output_features)

    @property
    def num_static(self) -> int:
        """The number of encoded static covariates (0 without a static table)."""
        return len(self.static_features)

    @property
    def static_features(self) -> list[str]:
        """The encoded static covariates' names (``age``, ``sex=F``...), in input order."""
        return self.static_encoder.output_features if self.static_encoder else []

    @property
    def seq_len(self) -> int:
        return int(self.cohort.arrays.x.shape[1])

    def summary(self) -> dict:
        y_dev, y_test = self.y_dev, self.tensors["test"][2].numpy()
        return {
            "development_patients": int(len(y_dev)),
            "development_prevalence": float(y_dev.mean()),
            "test_patients": int(len(y_test)),
            "test_prevalence": float(y_test.mean()) if len(y_test) else None,
            "test_source": self.test_source,
            "timesteps": self.seq_len,
            "features": list(self.cohort.arrays.features),
            "static_features": self.static_features,
        }

    def bundle_state(self) -> dict:
        """What inference needs to turn a new table into this model's input (plain types):
        the columns, the fitted grid (its length is the training sequence length), how rows
        sharing a time were combined, the fitted preprocessing and the fitted static
        covariate encoder (None without a static table)."""
        grid = dataclasses.replace(self.spec.grid, length=self.seq_len)
        return {
            "columns": self.spec.columns,
            "grid": grid.state(),
            "duplicates": self.spec.duplicates,
            "eav": self.spec.eav.state() if self.spec.eav else None,
            "preprocessor": self.preprocessor.state(),
            "input_channels": self.preprocessor.output_features,
            "static": self.static_encoder.state() if self.static_encoder else None,
        }

    def ceiling_auroc(self) -> float | None:
        """AUROC of the synthetic cohort's true risk on the test patients: what a model
        that knew each patient's true risk would get on this sample."""
        truth = Path(self.measurements).parent / "truth.csv"
        if self.synthetic is None or not truth.exists() or not len(self.test_ids):
            return None
        risk = pd.read_csv(truth).set_index("patient_id")["true_risk"]
        y = self.tensors["test"][2].numpy()
        return float(roc_auc_score(y, risk.reindex(self.test_ids)))

    def _batches(self, split: str, shuffle: bool = False) -> TensorBatches:
        """Batches of ``split``, served from the trainer's GPU when the split fits there.

        Under distributed training (Lightning DDP: ``trainer.world_size`` processes) each
        process serves its own shard (``TensorBatches``): the training patients padded to
        equal shards, so that every process takes the same number of steps, and each
        validation or test patient by exactly one process. The recipe's batch size is the
        batch of one step across all processes, each serving its share of it.
        """
        tensors = self.tensors[split]
        rank, world = 0, 1
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
            device = self.trainer.strategy.root_device
            key = (split, str(device))
            if key not in self.placed:
                self.placed[key] = to_device_if_fits(tensors, device)
            tensors = self.placed[key]
        n = len(tensors[0])
        if world > 1 and n < world:
            raise UserError(
                f"{world} training processes need at least one {split} patient each, but the "
                f"{split} split has {n}: use fewer processes (trainer.devices, "
                "trainer.num_nodes) or more patients"
            )
        train = split == "train"
        batch_size = -(-self.batch_size // world) if train else self.batch_size
        batches = TensorBatches(
            tensors,
            batch_size,
            shuffle=shuffle,
            seed=self.shuffle_seed,
            rank=rank,
            world_size=world,
            even=train,
        )
        if train and world > 1 and rank == 0:
            log.info(
                "distributed training: %d processes, each serving a shard of %d of the %d "
                "training patients per epoch, %d per step (the batch of %d split across them)",
                world,
                batches.shard_size,
                n,
                batch_size,
                self.batch_size,
            )
        return batches

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val")

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test")


def observed_often(arrays: PatientArrays, min_share: float) -> list[str]:
    """The features observed at least once in at least ``min_share`` of the patients
    (``data.min_observed``; fitted on the development patients, never the test ones), and
    at least once at all; in their order. A dropped feature is logged with its share."""
    if min_share <= 0:
        return list(arrays.features)
    share = observed_share(arrays)
    kept = [f for f, s in zip(arrays.features, share, strict=True) if s >= min_share and s > 0]
    dropped = [(f, s) for f, s in zip(arrays.features, share, strict=True) if f not in kept]
    if not kept:
        raise UserError(
            f"no feature is observed in {min_share:.0%} of the development patients "
            f"(the most: {max(share):.1%}); lower data.min_observed"
        )
    if dropped:
        log.info(
            "data.min_observed=%g: %d of %d features kept; left out (share of development "
            "patients with a value): %s",
            min_share,
            len(kept),
            len(arrays.features),
            ", ".join(f"{f} {s:.1%}" for f, s in dropped[:20])
            + (" ..." if len(dropped) > 20 else ""),
        )
    return kept
