"""Files on disk -> validated (N, L, C) arrays and one 0/1 label per patient."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from patientcnn.data import tables
from patientcnn.data.reshape import GridSpec, PatientArrays, to_arrays
from patientcnn.errors import UserError

DUPLICATES = ("error", "mean")


@dataclass
class Cohort:
    arrays: PatientArrays
    y: np.ndarray  # (N,) int64 0/1
    split: np.ndarray | None = None  # (N,) 'train'/'val'/'test' from a user's split column


def load_measurements(
    path: str | Path,
    id_col: str,
    time_col: str,
    features: list[str] | None,
    grid: GridSpec,
    exclude: tuple[str, ...] = (),
    duplicates: str = "error",
) -> tuple[PatientArrays, pd.DataFrame]:
    """Read, validate and reshape a long measurement table; also return the raw table.

    ``duplicates='mean'`` averages rows that share a patient and time, like rows that
    share a grid step; the default 'error' reports them, since they often come from a
    join gone wrong.
    """
    if duplicates not in DUPLICATES:
        raise UserError(f"data.duplicates must be one of {DUPLICATES}, got {duplicates!r}")
    df = tables.read_table(path)
    tables.require_columns(df, path, {"id": id_col, "time": time_col})
    tables.check_ids(df, path, id_col)
    features = tables.resolve_features(df, path, [id_col, time_col, *exclude], features)
    hours = tables.time_in_hours(df, path, id_col, time_col)
    if duplicates == "error":
        tables.check_duplicate_times(df, path, id_col, time_col, hours)
    values = tables.feature_matrix(df, path, id_col, features)
    return to_arrays(df[id_col], hours, values, features, grid), df


def load_cohort(
    measurements: str | Path,
    labels: str | Path | None,
    id_col: str = "patient_id",
    time_col: str = "time",
    label_col: str = "label",
    features: list[str] | None = None,
    grid: GridSpec | None = None,
    positive_label: object | None = None,
    split_col: str | None = None,
    duplicates: str = "error",
) -> Cohort:
    """Load measurements and labels (a separate table, or a column of the measurements)."""
    grid = grid or GridSpec()
    # the label and split columns are never features, even when a label table is given
    not_features = tuple(c for c in (label_col, split_col) if c)
    arrays, df = load_measurements(
        measurements, id_col, time_col, features, grid, not_features, duplicates
    )
    if labels is None:
        tables.require_columns(df, measurements, {"label": label_col})
        label_table = _per_patient(df, measurements, id_col, label_col)
        y_series = tables.binary_labels(label_table, measurements, label_col, positive_label)
        source = Path(measurements)
    else:
        y_series = tables.read_labels(labels, id_col, label_col, positive_label)
        source = Path(labels)
    y = _align_labels(arrays, y_series, Path(measurements), source)
    if len(np.unique(y)) < 2:
        raise UserError(
            f"{source}: column '{label_col}' gives all {len(y)} patients the same outcome; "
            "a classifier needs patients of both outcomes"
        )
    split = None
    if split_col:
        split_table = df if split_col in df.columns else tables.read_table(labels)
        tables.require_columns(split_table, measurements, {"split": split_col})
        split = _per_patient(split_table, measurements, id_col, split_col)
        split = split.reindex(arrays.ids).astype(str).to_numpy()
    return Cohort(arrays, y, split)


def _per_patient(df: pd.DataFrame, path: str | Path, id_col: str, column: str) -> pd.Series:
    """A column that must be constant within each patient, as one value per patient."""
    distinct = df.groupby(id_col, sort=False)[column].nunique(dropna=False)
    varying = distinct[distinct > 1]
    if len(varying):
        raise UserError(
            f"{path}: column '{column}' must be constant per patient but changes within "
            f"patient {varying.index[0]} ({len(varying)} patients in all)"
        )
    return df.groupby(id_col, sort=False)[column].first()


def _align_labels(
    arrays: PatientArrays, labels: pd.Series, measurements: Path, label_source: Path
) -> np.ndarray:
    ids = pd.Index(arrays.ids)
    index = labels.index
    if ids.dtype.kind != index.dtype.kind:
        ids, index = ids.astype(str), index.astype(str)
        labels = labels.set_axis(index)
    unlabeled = ids.difference(index)
    if len(unlabeled):
        examples = ", ".join(map(str, unlabeled[:3]))
        raise UserError(
            f"{len(unlabeled)} patients in {measurements} have no label in {label_source} "
            f"(e.g. {examples})"
        )
    unknown = index.difference(ids)
    if len(unknown):  # often ids written differently in the two files
        raise UserError(
            f"{len(unknown)} patients in {label_source} have no rows in {measurements} "
            f"(e.g. {', '.join(map(str, unknown[:3]))}); check that both files use the same "
            "ids, and remove patients without measurements from the label table"
        )
    return labels.reindex(ids).to_numpy(dtype=np.int64)
