"""From a checkpoint bundle to probabilities: what predict and evaluate share.

The preparation and forward pass (``Scorer``), and the checks and warnings both give the
same way (``check_input_columns``, ``check_threshold``, ``warn_skipped``).

Everything comes from the bundle (column names, grid, preprocessing statistics, feature
order, static covariate encoder, weights), never from a training config or training
data; the scored patients' static covariates come from their own static table. The
grid and preprocessor are rebuilt from their stored state, so fields added to them
later flow through unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from patientcnn.checkpoint import Bundle
from patientcnn.data.batches import to_channels_first
from patientcnn.data.eav import EAVSpec
from patientcnn.data.preprocess import Preprocessor
from patientcnn.data.reshape import GridSpec, PatientArrays
from patientcnn.data.spec import TableSpec
from patientcnn.data.static import StaticEncoder, read_static, static_rows
from patientcnn.data.tables import table_columns
from patientcnn.errors import UserError

log = logging.getLogger(__name__)

SHOWN_IDS = 10  # patients named in a warning; the count is always given
# Patients per forward pass, batch_size=auto: on a GPU 1024; on a CPU as many as make
# about CPU_BATCH_STEPS time steps (e.g. 108 patients of 301 steps), at most 1024. Large
# CPU batches are slower, not faster: 1024 x 301 steps took 3.3x as long as batches of 64
# (five InceptionTime networks, 2 cores), the activations no longer fitting in the caches
# and every allocation going back to the operating system.
CPU_BATCH_STEPS = 32768
MAX_BATCH = 1024


def inference_batch(batch_size: int | str, seq_len: int, device: torch.device) -> int:
    """The number of patients per forward pass: a number as given, or 'auto' (see above)."""
    if batch_size == "auto":
        if device.type != "cpu":
            return MAX_BATCH
        return max(1, min(MAX_BATCH, CPU_BATCH_STEPS // max(seq_len, 1)))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be 'auto' or a positive integer, got {batch_size!r}")
    return batch_size


def resolve_device(device: str) -> torch.device:
    """'auto' is the GPU when there is one, else the CPU; anything else as torch names it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise UserError(
            f"device={device!r} is not a device name (auto, cpu, cuda, cuda:1)"
        ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={device!r} but no GPU is available; use device=auto or cpu")
    return resolved


def probabilities(logits: np.ndarray | torch.Tensor) -> np.ndarray:
    """Logits -> probabilities in float64: the one conversion every caller uses, so the
    same logits give bit-identical probabilities (and metrics) everywhere."""
    z = logits.numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


@torch.inference_mode()
def batched_logits(
    model: torch.nn.Module,
    x: torch.Tensor,
    valid: torch.Tensor,
    batch_size: int | str,
    device: torch.device,
    static: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits (N,) on the CPU for (N, C, L) inputs (and (N, S) static covariates, for a
    model that reads them), one batch at a time on ``device`` (``inference_batch``)."""
    model.eval()
    batch_size = inference_batch(batch_size, x.shape[2], device)
    parts = []
    for i in range(0, len(x), batch_size):
        rows = slice(i, i + batch_size)
        inputs = (x[rows].to(device), valid[rows].to(device))
        if static is not None:
            inputs += (static[rows].to(device),)
        logits = model(*inputs)
        parts.append(logits.float().cpu())
    return torch.cat(parts) if parts else torch.empty(0)


@dataclass
class Scorer:
    """A trained model with the exact data preparation it was trained with."""

    model: torch.nn.Module
    preprocessor: Preprocessor
    grid: GridSpec
    columns: dict[str, str]
    seq_len: int
    device: torch.device
    batch_size: int | str = "auto"
    duplicates: str = "error"  # how training combined rows sharing a patient and time
    eav: EAVSpec | None = None  # training read an entity-attribute-value table
    static: StaticEncoder | None = None  # the fitted static covariate encoder, if any

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, device: str = "auto", batch_size: int | str = "auto"
    ) -> Scorer:
        seq_len = bundle.seq_len
        grid = GridSpec(**bundle.data["grid"])  # the fitted grid: its length is seq_len
        resolved = resolve_device(device)
        inference_batch(batch_size, seq_len, resolved)  # a bad setting fails here
        return cls(
            model=bundle.build_model().to(resolved),
            preprocessor=Preprocessor.from_state(bundle.data["preprocessor"]),
            grid=grid,
            columns=dict(bundle.data["columns"]),
            seq_len=seq_len,
            device=resolved,
            batch_size=batch_size,
            duplicates=str(bundle.data.get("duplicates", "error")),
            eav=EAVSpec(**bundle.data["eav"]) if bundle.data.get("eav") else None,
            static=(
                StaticEncoder.from_state(bundle.data["static"])
                if bundle.data.get("static")
                else None
            ),
        )

    @property
    def features(self) -> list[str]:
        """The raw input columns (EAV: variables) the model needs, in the training order."""
        return list(self.preprocessor.features)

    def table_spec(self, **overrides: object) -> TableSpec:
        """How a new table is read: training's columns, features, grid, duplicates rule
        and layout (``overrides``: e.g. evaluation's label column)."""
        settings = {
            **self.columns,
            "features": self.features,
            "grid": self.grid,
            "duplicates": self.duplicates,
            "eav": self.eav,
        }
        return TableSpec(**{**settings, **overrides})

    @property
    def input_columns(self) -> list[str]:
        """The columns a new table must have: id, time, and the features (wide) or the
        variable and value columns (EAV)."""
        data = [self.eav.variable_col, self.eav.value_col] if self.eav else self.features
        return [self.columns["id_col"], self.columns["time_col"], *data]

    def read_static(self, path: str | Path | None) -> pd.DataFrame | None:
        """The static covariate table the model needs (its columns checked), or None for a
        model trained without one. A missing table, or one given to a model that reads
        none, is an error."""
        if self.static is None:
            if path is not None:
                raise UserError(
                    f"{path}: this model was trained without static covariates and cannot use "
                    "a static table; leave the static table out"
                )
            return None
        if path is None:
            raise UserError(
                "this model was trained with static covariates "
                f"({', '.join(self.static.order)}); give their table (one row per patient) "
                "with static=<path> (scripts/evaluate.py: data.static=<path>)"
            )
        hint = f"The model was trained with the static columns {', '.join(self.static.order)}"
        return read_static(path, self.columns["id_col"], self.static.order, hint=hint)

    def static_inputs(
        self, table: pd.DataFrame | None, ids: np.ndarray, path: str | Path | None
    ) -> np.ndarray | None:
        """(N, S) encoded static covariates of the patients ``ids`` (None: the model reads
        none); a patient without a row in the table is an error naming them."""
        if self.static is None:
            return None
        return self.static.transform(static_rows(table, ids, path), path)

    def logits(self, arrays: PatientArrays, static: np.ndarray | None = None) -> np.ndarray:
        """(N,) logits for reshaped patients, prepared with the training statistics;
        ``static``: their encoded static covariates (``static_inputs``), if the model
        reads them."""
        if arrays.x.shape[1] != self.seq_len:
            raise UserError(
                f"the grid gave {arrays.x.shape[1]} time steps but the model was trained on "
                f"{self.seq_len}; the checkpoint's grid settings do not match its model"
            )
        x, valid, covariates = self._inputs(arrays, static)
        return batched_logits(
            self.model, x, valid, self.batch_size, self.device, covariates
        ).numpy()

    def explain(
        self, arrays: PatientArrays, static: np.ndarray | None = None
    ) -> tuple[list[str], list[str]]:
        """Per patient, the top contributing features and time windows (attributions of
        the differentiable part of the logit over the series; the static covariates are
        held at the patient's values; ``patientcnn.explain``), as text; empty where the
        blend leaves nothing to attribute (``explain.what_is_attributed`` says why)."""
        from patientcnn.explain import attributed_sides, integrated_gradients, top_contributions

        if not attributed_sides(self.model)[0]:
            blank = [""] * len(arrays.ids)
            return blank, list(blank)
        x, valid, covariates = self._inputs(arrays, static)
        attributions, _ = integrated_gradients(
            self.model,
            x.to(self.device),
            valid.to(self.device),
            static=covariates.to(self.device) if covariates is not None else None,
        )
        return top_contributions(attributions, self.preprocessor.output_features)

    def _inputs(self, arrays: PatientArrays, static: np.ndarray | None):
        if (static is None) != (self.static is None):
            raise RuntimeError("static covariates must be given exactly when the model reads them")
        x = to_channels_first(self.preprocessor.transform(arrays.x, arrays.valid))
        valid = torch.from_numpy(np.ascontiguousarray(arrays.valid))
        covariates = torch.from_numpy(static) if static is not None else None
        return x, valid, covariates


def unusable(arrays: PatientArrays) -> np.ndarray:
    """(N,) bool: patients without a single observed value on the model's grid."""
    return np.isnan(arrays.x).all(axis=(1, 2))


def check_threshold(value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise UserError(f"threshold must be a probability between 0 and 1, got {value!r}")
    return float(value)


def check_input_columns(path: Path, scorer: Scorer, expected: tuple[str, ...] = ()) -> None:
    """Needed columns must exist (all missing features named at once); extras get a note."""
    columns = table_columns(path)
    id_col, time_col = scorer.columns["id_col"], scorer.columns["time_col"]
    roles = [("id", id_col), ("time", time_col)]
    if scorer.eav:  # the variables are values of a column here, not columns
        roles += [("variable", scorer.eav.variable_col), ("value", scorer.eav.value_col)]
    for role, name in roles:
        if name not in columns:
            raise UserError(
                f"{path}: no {role} column '{name}' (the checkpoint's {role} column); columns "
                f"are: {', '.join(columns[:20])}{' ...' if len(columns) > 20 else ''}"
            )
    missing = [] if scorer.eav else [f for f in scorer.features if f not in columns]
    if missing:
        raise UserError(
            f"{path}: the model needs feature column(s) that are missing: {', '.join(missing)}"
        )
    extra = [c for c in columns if c not in {*scorer.input_columns, *expected}]
    if extra:
        log.info("%s: ignoring column(s) the model does not use: %s", path, ", ".join(extra))


def warn_skipped(ids: list, path: Path, consequence: str) -> None:
    shown = ", ".join(map(str, ids[:SHOWN_IDS])) + (" ..." if len(ids) > SHOWN_IDS else "")
    log.warning(
        "%d patient(s) in %s have no observed value of any model feature and %s: %s",
        len(ids),
        path,
        consequence,
        shown,
    )
