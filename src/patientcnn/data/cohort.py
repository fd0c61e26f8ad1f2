"""Files on disk -> validated (N, L, C) arrays and one 0/1 label per patient."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from patientcnn.data import tables
from patientcnn.data.arrays import is_array_file, load_array_cohort
from patientcnn.data.eav import EAVSpec, eav_rows
from patientcnn.data.engine import EngineSpec, choose, input_files
from patientcnn.data.reshape import GridSpec, PatientArrays, to_arrays
from patientcnn.errors import UserError

log = logging.getLogger(__name__)

DUPLICATES = ("error", "aggregate")
HOURS, ANCHOR = "__patientcnn_hours", "__patientcnn_anchor"  # carried through the EAV pivot
UNMATCHED = ("error", "drop")


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
    eav: EAVSpec | None = None,
) -> tuple[PatientArrays, pd.DataFrame]:
    """Read, validate and reshape a long measurement table; also return the raw table
    (for an EAV table: its wide form).

    With ``grid.anchor_col`` each patient's time zero is that column (constant per
    patient, in the same kind of time as ``time_col``) instead of their first row.
    ``duplicates='aggregate'`` combines rows that share a patient and time like rows that
    share a grid step (``grid.agg``); the default 'error' reports them, since they often
    come from a join gone wrong. ``eav``: the table is entity-attribute-value (one row
    per patient, time, variable and value; ``patientcnn.data.eav``), and ``features``
    are the variables to keep.
    """
    if duplicates not in DUPLICATES:
        raise UserError(f"data.duplicates must be one of {DUPLICATES}, got {duplicates!r}")
    df = tables.read_table(path, id_col)
    roles = {"id": id_col, "time": time_col}
    anchor_col = grid.anchor_col
    if anchor_col:
        roles["anchor"] = anchor_col
    tables.require_columns(df, path, roles)
    tables.check_ids(df, path, id_col)
    # times are checked on the file's own rows, so that a message names the right row
    hours = tables.time_in_hours(df, path, id_col, time_col, allow_negative=bool(anchor_col))
    anchor = None
    if anchor_col:
        _per_patient(df, path, id_col, anchor_col)
        kinds = [_time_kind(df[c]) for c in (time_col, anchor_col)]
        if kinds[0] != kinds[1]:
            raise UserError(
                f"{path}: time column '{time_col}' holds {kinds[0]} but anchor column "
                f"'{anchor_col}' holds {kinds[1]}; both must be the same kind of time"
            )
        anchor = tables.time_in_hours(df, path, id_col, anchor_col, allow_negative=True)
    if eav is not None:
        carry = tuple(c for c in (anchor_col, *exclude) if c and c in df.columns)
        timed = df.assign(**{HOURS: hours, ANCHOR: anchor if anchor is not None else hours})
        df, values, features = eav_rows(
            timed, path, id_col, time_col, eav, features, (*carry, HOURS, ANCHOR), duplicates
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
        if duplicates == "error":
            tables.check_duplicate_times(df, path, id_col, time_col, hours)
        values = tables.feature_matrix(df, path, id_col, features)
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
    measurements: str | Path,
    labels: str | Path | None,
    id_col: str = "patient_id",
    time_col: str = "time",
    label_col: str = "label",
    features: list[str] | None = None,
    grid: GridSpec | None = None,
    positive_label: object | None = None,
    split_col: str | None = None,
    unmatched: str = "error",
    duplicates: str = "error",
    eav: EAVSpec | None = None,
    engine: EngineSpec | None = None,
) -> Cohort:
    """Load measurements and labels (a separate table, or a column of the measurements).

    ``.npy``/``.npz`` measurements are (N, L, C) arrays (see ``arrays``). Patients found
    in only one of the two tables stop the run (``unmatched='error'``) or are left out
    with a warning (``'drop'``). ``engine`` (``patientcnn.data.engine``) may take the
    table to the grid out of core; then ``arrays`` are ``mapped.MappedArrays``.
    """
    if unmatched not in UNMATCHED:
        raise UserError(f"data.unmatched must be one of {UNMATCHED}, got {unmatched!r}")
    grid = grid or GridSpec()
    if is_array_file(measurements):
        if split_col:
            raise UserError(f"{measurements}: data.split_col needs a table, not an array file")
        if eav is not None:
            raise UserError(f"{measurements}: data.format=eav needs a table, not an array file")
        arrays, y_series, source = load_array_cohort(
            measurements, labels, id_col, label_col, features, grid, positive_label
        )
        arrays, y = _align_labels(arrays, y_series, Path(measurements), source, unmatched)
        return Cohort(arrays, y)
    # the label and split columns are never features, even when a label table is given
    not_features = tuple(c for c in (label_col, split_col) if c)
    if choose(engine, measurements) == "duckdb":
        arrays, df = _load_out_of_core(
            measurements, id_col, time_col, features, grid, not_features, duplicates, eav, engine
        )
    else:
        arrays, df = load_measurements(
            measurements, id_col, time_col, features, grid, not_features, duplicates, eav
        )
    if labels is None:
        tables.require_columns(df, measurements, {"label": label_col})
        label_table = _per_patient(df, measurements, id_col, label_col)
        y_series = tables.binary_labels(label_table, measurements, label_col, positive_label)
        source = Path(measurements)
    else:
        y_series = tables.read_labels(labels, id_col, label_col, positive_label)
        source = Path(labels)
    arrays, y = _align_labels(arrays, y_series, Path(measurements), source, unmatched)
    if len(np.unique(y)) < 2:
        raise UserError(
            f"{source}: column '{label_col}' gives all {len(y)} patients the same outcome; "
            "a classifier needs patients of both outcomes"
        )
    split = None
    if split_col:
        split_table = df if split_col in df.columns else tables.read_table(labels, id_col)
        tables.require_columns(split_table, measurements, {"split": split_col})
        split = _per_patient(split_table, measurements, id_col, split_col)
        split = split.reindex(arrays.ids).astype(str).to_numpy()
    return Cohort(arrays, y, split)


def _load_out_of_core(path, id_col, time_col, features, grid, exclude, duplicates, eav, engine):
    """``load_measurements`` by DuckDB: memory-mapped arrays and one row per patient."""
    from patientcnn.data import engine_duckdb
    from patientcnn.data.mapped import MappedArrays

    if duplicates not in DUPLICATES:
        raise UserError(f"data.duplicates must be one of {DUPLICATES}, got {duplicates!r}")
    built = engine_duckdb.load_measurements(
        path, input_files(path), id_col, time_col, features, grid, exclude, duplicates, eav, engine
    )
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
    return df.groupby(id_col, sort=False)[column].first()


def _align_labels(
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
