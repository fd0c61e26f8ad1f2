"""One 0/1 outcome per patient: from a label table, a label column or an array, and
matched to the patients that have measurements.

Values are never quoted in messages beyond the distinct label values (which the user
needs to choose ``data.positive_label``); patients are named by id.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from patientcnn.data import tables
from patientcnn.data.reshape import PatientArrays
from patientcnn.errors import UserError

log = logging.getLogger(__name__)


def read_labels(
    path: str | Path,
    id_col: str,
    label_col: str,
    positive_label: object | None = None,
) -> pd.Series:
    """A per-patient 0/1 label Series indexed by patient id, from a `patient_id,label` table."""
    return labels_of(tables.read_table(path, id_col), path, id_col, label_col, positive_label)


def labels_of(
    df: pd.DataFrame,
    path: str | Path,
    id_col: str,
    label_col: str,
    positive_label: object | None = None,
) -> pd.Series:
    """``read_labels`` of the table ``df`` already read from ``path`` (a caller that needs
    its other columns too reads the file once)."""
    tables.require_columns(df, path, {"id": id_col, "label": label_col})
    tables.check_ids(tables.TableRows(df, path, id_col))
    duplicated = df[id_col].duplicated(keep=False)
    if duplicated.any():
        clash = df.loc[duplicated, [id_col, label_col]].drop_duplicates()
        if clash[id_col].duplicated().any():
            patient = clash.loc[clash[id_col].duplicated(), id_col].iloc[0]
            raise UserError(f"{path}: patient {patient} has more than one label")
        df = df.drop_duplicates(subset=[id_col])
    labels = df.set_index(id_col)[label_col]
    return binary_labels(labels, path, label_col, positive_label)


def binary_labels(
    labels: pd.Series, path: str | Path, label_col: str, positive_label: object | None = None
) -> pd.Series:
    """Map labels to 0/1: {0, 1} or booleans as they are, anything else via positive_label."""
    missing = labels.isna()
    if missing.any():
        raise UserError(
            f"{path}: column '{label_col}' is empty for patient {labels.index[missing.argmax()]} "
            f"({int(missing.sum())} patients without a label)"
        )
    values = set(labels.unique().tolist())
    if positive_label is not None:
        if positive_label not in values and str(positive_label) not in {str(v) for v in values}:
            raise UserError(
                f"{path}: data.positive_label={positive_label!r} never occurs in column "
                f"'{label_col}' (values: {_show(values)})"
            )
        if len(values) > 2:
            raise UserError(
                f"{path}: column '{label_col}' has {len(values)} distinct values ({_show(values)}); "
                "a binary outcome needs two"
            )
        positive = labels.astype(str) == str(positive_label)
        return positive.astype(np.int64).rename("label")
    if values <= {0, 1} or values <= {True, False}:
        return labels.astype(np.int64).rename("label")
    raise UserError(
        f"{path}: column '{label_col}' must be 0/1 for a binary outcome but holds {_show(values)}; "
        "set data.positive_label to the value that means the outcome happened"
    )


def _show(values: set) -> str:
    shown = sorted(map(str, values))
    return ", ".join(shown[:6]) + (f" ... ({len(shown)} values)" if len(shown) > 6 else "")


def align_labels(
    arrays: PatientArrays,
    labels: pd.Series,
    measurements: Path,
    label_source: Path,
    unmatched: str,
) -> tuple[PatientArrays, np.ndarray]:
    """Labels in the order of ``arrays``; patients in only one table are reported by id."""
    ids = pd.Index(arrays.ids)
    index = labels.index
    if ids.dtype.kind != index.dtype.kind:
        ids, index = ids.astype(str), index.astype(str)
        labels = labels.set_axis(index)
    unlabeled = ids.difference(index)
    unknown = index.difference(ids)
    problems = [
        f"{len(missing)} patients in {have} have no {what} in {lack} (e.g. {_examples(missing)})"
        for missing, have, what, lack in (
            (unlabeled, measurements, "label", label_source),
            (unknown, label_source, "measurements", measurements),
        )
        if len(missing)
    ]
    if problems and unmatched == "error":
        raise UserError("; ".join(problems) + ". Set data.unmatched=drop to leave them out")
    for problem in problems:
        log.warning("%s; they are left out (data.unmatched=drop)", problem)
    if len(unlabeled):
        keep = ~ids.isin(unlabeled)
        if not keep.any():
            raise UserError(f"no patient in {measurements} has a label in {label_source}")
        arrays, ids = arrays.subset(np.flatnonzero(keep)), ids[keep]
    return arrays, labels.reindex(ids).to_numpy(dtype=np.int64)


def _examples(ids: pd.Index) -> str:
    return ", ".join(map(str, ids[:3]))
