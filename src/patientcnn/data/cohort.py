"""Files on disk -> validated (N, L, C) arrays and one 0/1 label per patient."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from patientcnn.data import tables
from patientcnn.data.arrays import is_array_file, load_array_cohort
from patientcnn.data.eav import eav_rows
from patientcnn.data.engine import choose, input_files
from patientcnn.data.labels import align_labels, binary_labels, labels_of
from patientcnn.data.reshape import PatientArrays, to_arrays
from patientcnn.data.spec import TableSpec
from patientcnn.errors import UserError

log = logging.getLogger(__name__)

HOURS, ANCHOR = "__patientcnn_hours", "__patientcnn_anchor"  # carried through the EAV pivot


@dataclass
class Cohort:
    arrays: PatientArrays
    y: np.ndarray  # (N,) int64 0/1
    split: np.ndarray | None = None  # (N,) 'train'/'val'/'test' from a user's split column


def load_measurements(
    path: str | Path, spec: TableSpec, exclude: tuple[str, ...] = ()
) -> tuple[PatientArrays, pd.DataFrame]:
    """Read, validate and reshape a long measurement table; also return the raw table
    (for an EAV table: its wide form). ``exclude``: columns that are never features.

    With ``spec.grid.anchor_col`` each patient's time zero is that column (constant per
    patient, in the same kind of time as ``time_col``) instead of their first row.
    ``spec.duplicates='aggregate'`` combines rows that share a patient and time like rows
    that share a grid step (``grid.agg``); the default 'error' reports them, since they
    often come from a join gone wrong. ``spec.eav``: the table is entity-attribute-value
    (one row per patient, time, variable and value; ``patientcnn.data.eav``), and
    ``spec.features`` are the variables to keep.
    """
    id_col, time_col, grid = spec.id_col, spec.time_col, spec.grid
    features = list(spec.features) if spec.features else None
    rows = tables.read_rows(path, id_col)
    df = rows.df
    roles = {"id": id_col, "time": time_col}
    anchor_col = grid.anchor_col
    if anchor_col:
        roles["anchor"] = anchor_col
    tables.require_columns(df, path, roles)
    tables.check_ids(rows)
    # times are checked on the file's own rows, so that a message names the right row
    hours = tables.time_in_hours(rows, time_col, allow_negative=bool(anchor_col))
    anchor = None
    if anchor_col:
        _per_patient(df, path, id_col, anchor_col)
        kinds = [_time_kind(df[c]) for c in (time_col, anchor_col)]
        if kinds[0] != kinds[1]:
            raise UserError(
                f"{path}: time column '{time_col}' holds {kinds[0]} but anchor column "
                f"'{anchor_col}' holds {kinds[1]}; both must be the same kind of time"
            )
        anchor = tables.time_in_hours(rows, anchor_col, allow_negative=True)
    if spec.eav is not None:
        carry = tuple(c for c in (anchor_col, *exclude) if c and c in df.columns)
        timed = df.assign(**{HOURS: hours, ANCHOR: anchor if anchor is not None else hours})
        df, values, features = eav_rows(
            timed,
            path,
            id_col,
            time_col,
            spec.eav,
            features,
            (*carry, HOURS, ANCHOR),
            spec.duplicates,
        )
        hours, anchor_hours = df.pop(HOURS).to_numpy(), df.pop(ANCHOR).to_numpy()
        anchor = anchor_hours if anchor is not None else None
        taken = {id_col, time_col, *carry} & set(features)
        if taken:
            raise UserError(
                f"{path}: variable '{taken.pop()}' has the name of the id, time, label or "
                "another column; rename it in the data"
            )
    else:
        not_features = [id_col, time_col, *([anchor_col] if anchor_col else []), *exclude]
        features = tables.resolve_features(df, path, not_features, features)
        if spec.duplicates == "error":
            tables.check_duplicate_times(rows, time_col, hours)
        values = tables.feature_matrix(rows, features)
    try:
        arrays = to_arrays(df[id_col], hours, values, features, grid, anchor)
    except UserError as err:
        raise UserError(f"{path}: {err}") from err
    _warn_empty(arrays, path)
    return arrays, df


def _time_kind(column: pd.Series) -> str:
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    return "numbers" if numeric else "date-times"


def _warn_empty(arrays: PatientArrays, path: str | Path) -> None:
    empty = arrays.ids[arrays.lengths == 0]
    if len(empty):
        log.warning(
            "%d patients in %s have no rows inside the time window and are kept as empty "
            "series (e.g. %s); check data.grid.anchor_col, length and align",
            len(empty),
            path,
            ", ".join(map(str, empty[:3])),
        )


def load_cohort(
    measurements: str | Path, labels: str | Path | None, spec: TableSpec | None = None
) -> Cohort:
    """Load measurements and labels (a separate table, or a column of the measurements),
    read as ``spec`` says (None: the defaults of ``TableSpec``).

    ``.npy``/``.npz`` measurements are (N, L, C) arrays (see ``arrays``). Patients found
    in only one of the two tables stop the run (``spec.unmatched='error'``) or are left
    out with a warning (``'drop'``). Each file is read once: with a split column and a
    label table, the split comes from the label table already read for the labels.
    ``spec.engine`` (``patientcnn.data.engine``) may take the table to the grid out of
    core; then ``arrays`` are ``mapped.MappedArrays``.
    """
    spec = spec or TableSpec()
    id_col, label_col, split_col = spec.id_col, spec.label_col, spec.split_col
    if is_array_file(measurements):
        if split_col:
            raise UserError(f"{measurements}: data.split_col needs a table, not an array file")
        if spec.eav is not None:
            raise UserError(f"{measurements}: data.format=eav needs a table, not an array file")
        arrays, y_series, source = load_array_cohort(measurements, labels, spec)
        arrays, y = align_labels(arrays, y_series, Path(measurements), source, spec.unmatched)
        return Cohort(arrays, y)
    if choose(spec.engine, measurements) == "duckdb":
        arrays, df = _load_out_of_core(measurements, spec, spec.not_features)
    else:
        arrays, df = load_measurements(measurements, spec, spec.not_features)
    if labels is None:
        label_table, source = df, Path(measurements)
        tables.require_columns(df, measurements, {"label": label_col})
        per_patient = _per_patient(df, measurements, id_col, label_col)
        y_series = binary_labels(per_patient, measurements, label_col, spec.positive_label)
    else:
        label_table, source = tables.read_table(labels, id_col), Path(labels)
        y_series = labels_of(label_table, labels, id_col, label_col, spec.positive_label)
    arrays, y = align_labels(arrays, y_series, Path(measurements), source, spec.unmatched)
    if len(np.unique(y)) < 2:
        raise UserError(
            f"{source}: column '{label_col}' gives all {len(y)} patients the same outcome; "
            "a classifier needs patients of both outcomes"
        )
    split = None
    if split_col:
        split_table, where = (
            (df, measurements) if split_col in df.columns else (label_table, source)
        )
        tables.require_columns(split_table, where, {"split": split_col})
        split = _per_patient(split_table, where, id_col, split_col)
        split = split.reindex(arrays.ids).astype(str).to_numpy()
    return Cohort(arrays, y, split)


def _load_out_of_core(path, spec: TableSpec, exclude: tuple[str, ...]):
    """``load_measurements`` by DuckDB: memory-mapped arrays and one row per patient."""
    from patientcnn.data import engine_duckdb
    from patientcnn.data.mapped import MappedArrays

    built = engine_duckdb.load_measurements(path, input_files(path), spec, exclude)
    arrays = MappedArrays.from_arrays(built.arrays, built.folder / "x.npy", built.folder)
    _warn_empty(arrays, path)
    return arrays, built.patients


def _per_patient(df: pd.DataFrame, path: str | Path, id_col: str, column: str) -> pd.Series:
    """A column that must be constant within each patient, as one value per patient."""
    distinct = df.groupby(id_col, sort=False)[column].nunique(dropna=False)
    varying = distinct[distinct > 1]
    if len(varying):
        raise UserError(
            f"{path}: column '{column}' must be constant per patient but changes within "
            f"patient {varying.index[0]} ({len(varying)} patients in all)"
        )
    first = df.groupby(id_col, sort=False)[column].first()
    first.index = first.index.astype(object)  # ids as text, also from a categorical column
    return first
