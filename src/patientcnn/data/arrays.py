"""(N, L, C) arrays from ``.npy``/``.npz`` files, for users who already hold them.

An ``.npz`` holds ``X`` (patients, timesteps, features) and optionally ``y`` (labels),
``ids`` and ``features`` (names). An ``.npy`` holds ``X`` alone; its labels then come
from ``data.labels``: a ``.npy`` of N labels in the same order, or a table whose ids
are the patients' row numbers 0..N-1 (or the ``ids`` of the npz). NaN marks a missing
value; steps where every feature is NaN at the end of a stay (the start, with
``grid.align=end``) are padding, as a long table's steps after its last row are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from patientcnn.data import tables
from patientcnn.data.labels import binary_labels, read_labels
from patientcnn.data.reshape import GridSpec, PatientArrays, check_size, id_order
from patientcnn.data.spec import TableSpec
from patientcnn.errors import UserError
from patientcnn.files import check_input_file

ARRAY_SUFFIXES = (".npy", ".npz")


def is_array_file(path: str | Path) -> bool:
    return str(path).lower().endswith(ARRAY_SUFFIXES)


def load_array_cohort(
    path: str | Path, labels: str | Path | None, spec: TableSpec
) -> tuple[PatientArrays, pd.Series, Path]:
    """Arrays, a 0/1 label Series indexed by patient id, and the file the labels came from.

    Of ``spec`` only the id and label columns, the features, the grid and the positive
    label apply (an array has no time column, rows or EAV layout)."""
    id_col, label_col, positive_label = spec.id_col, spec.label_col, spec.positive_label
    content = _read(path)
    x = content.get("X")
    if x is None:
        raise UserError(f"{path}: no array named 'X' (found: {', '.join(content) or 'none'})")
    if x.ndim != 3 or 0 in x.shape:
        raise UserError(
            f"{path}: X must be shaped (patients, timesteps, features), got {tuple(x.shape)}"
        )
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise UserError(f"{path}: X must hold real numbers, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if np.isinf(x).any():
        patient = int(np.flatnonzero(np.isinf(x).any(axis=(1, 2)))[0])
        raise UserError(f"{path}: X holds infinite values (first in patient row {patient})")
    ids = _ids(content, path, len(x))
    names, x = _features(content, path, x, spec.features)
    arrays = _pad_or_truncate(x, ids, names, spec.grid)

    if labels is not None:
        source = Path(labels)
        if is_array_file(labels):
            label_arrays = _read(labels)
            y = label_arrays.get("y", label_arrays.get("X"))
            if y is None:
                raise UserError(f"{labels}: no array named 'y'")
            y_series = pd.Series(np.asarray(y).reshape(-1), index=ids, name=label_col)
            if len(y_series) != len(ids):
                raise UserError(f"{labels}: holds {len(y_series)} labels for {len(ids)} patients")
            return arrays, binary_labels(y_series, labels, label_col, positive_label), source
        return arrays, read_labels(labels, id_col, label_col, positive_label), source
    if "y" not in content:
        raise UserError(f"{path}: no labels: add an array 'y' to the npz or set data.labels")
    y = np.asarray(content["y"]).reshape(-1)
    if len(y) != len(ids):
        raise UserError(f"{path}: y holds {len(y)} labels but X holds {len(ids)} patients")
    y_series = pd.Series(y, index=ids, name="y")
    return arrays, binary_labels(y_series, path, "y", positive_label), Path(path)


def _read(path: str | Path) -> dict[str, np.ndarray]:
    """Every array in the file by name (an .npy is 'X'); no pickled objects are loaded."""
    path = check_input_file(path)
    try:
        if path.name.lower().endswith(".npy"):
            return {"X": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except Exception as err:  # numpy raises several types; all mean "not a plain array file"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: cannot be read as a numpy array file ({reason[:200]})") from err


def _ids(content: dict[str, np.ndarray], path: str | Path, n: int) -> np.ndarray:
    """Patient ids as text (``ids_as_text``): the npz's ``ids``, or the row numbers."""
    if "ids" not in content:
        return np.arange(n).astype(str).astype(object)
    ids = tables.ids_as_text(np.asarray(content["ids"]).reshape(-1))
    if len(ids) != n:
        raise UserError(f"{path}: ids holds {len(ids)} entries but X holds {n} patients")
    missing = pd.isna(ids)
    if missing.any():
        raise UserError(
            f"{path}: ids is empty for patient row {int(np.flatnonzero(missing)[0])} "
            f"({int(missing.sum())} patients without an id)"
        )
    if len(pd.unique(ids)) != n:
        first = pd.Series(ids).duplicated().to_numpy().argmax()
        raise UserError(f"{path}: ids are not unique (patient {ids[first]} repeats)")
    return ids


def _features(
    content: dict[str, np.ndarray], path: str | Path, x: np.ndarray, chosen: tuple[str, ...] | None
) -> tuple[list[str], np.ndarray]:
    """Feature names from the file, from data.features, or feature_0..; a subset by name."""
    n = x.shape[2]
    if "features" in content:
        names = [str(f) for f in np.asarray(content["features"]).reshape(-1)]
        if len(names) != n:
            raise UserError(f"{path}: features holds {len(names)} names but X has {n} channels")
        if not chosen:
            return names, x
        missing = [f for f in chosen if f not in names]
        if missing:
            raise UserError(f"{path}: feature(s) {', '.join(missing)} not in {', '.join(names)}")
        return list(chosen), x[:, :, [names.index(f) for f in chosen]]
    if chosen:
        if len(chosen) != n:
            raise UserError(
                f"{path}: data.features names {len(chosen)} features but X has {n} channels"
            )
        return list(chosen), x
    return [f"feature_{j}" for j in range(n)], x


def _pad_or_truncate(
    x: np.ndarray, ids: np.ndarray, features: list[str], grid: GridSpec
) -> PatientArrays:
    """Stay lengths from the all-NaN steps at the padded side; then fit ``grid.length``."""
    any_seen = ~np.isnan(x).all(axis=2)  # (N, L)
    steps = x.shape[1]
    if grid.align == "end":
        lengths = steps - np.where(any_seen.any(axis=1), any_seen.argmax(axis=1), steps)
    else:
        lengths = np.where(any_seen.any(axis=1), steps - any_seen[:, ::-1].argmax(axis=1), 0)
    length = int(grid.length) if grid.length is not None else steps
    check_size(len(x), length, x.shape[2], grid)
    if length < steps:
        x = x[:, :length] if grid.align == "start" else x[:, steps - length :]
    elif length > steps:
        pad = np.full((len(x), length - steps, x.shape[2]), np.nan, dtype=np.float32)
        x = np.concatenate([x, pad] if grid.align == "start" else [pad, x], axis=1)
    order = id_order(ids)
    return PatientArrays(
        np.ascontiguousarray(x[order]),
        np.minimum(lengths, length).astype(np.int64)[order],
        ids[order],
        features,
        grid.align,
    )
