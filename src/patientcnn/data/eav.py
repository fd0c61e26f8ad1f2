"""Entity-attribute-value exports: one row per (patient, time, variable, value).

MIMIC-IV ``chartevents`` and eICU ``nurseCharting`` come this way, with hundreds of
variables. ``eav_rows`` numbers the (patient, time) pairs and the variables once and
hands each observation to the grid as (row, variable, value), vectorised, with no loop
over patients or variables and no (rows x variables) matrix, which for an export of
hundreds of items would be almost all empty. Everything after it (grid, aggregation
within a step, padding, preprocessing) is the wide path's, so the same data in either
shape gives the same tensors (tested).

Rules, all decided here so that training and prediction read a file the same way:

- a value that is present but not a number (``'<5'``, ``'neg'``) is an error naming its
  row, variable and patient (``non_numeric='error'``), or is counted, shown by example
  and dropped (``'drop'``);
- a variable outside the model's variables (``variables``) is ignored, and so is an
  empty value, but their rows still mark that the patient was there at that time, as a
  wide row with empty cells does;
- two values of one variable at one (patient, time) are an error naming them, unless
  ``duplicates='aggregate'``, which combines them as values within one grid step are.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from patientcnn.data import tables
from patientcnn.data.reshape import LongValues
from patientcnn.errors import UserError

log = logging.getLogger(__name__)

FORMATS = ("wide", "eav")
NON_NUMERIC = ("error", "drop")


@dataclass(frozen=True)
class EAVSpec:
    """How an EAV table names its variable and value columns, and what a non-number does."""

    variable_col: str = "variable"
    value_col: str = "value"
    non_numeric: str = "error"

    def __post_init__(self) -> None:
        if self.non_numeric not in NON_NUMERIC:
            raise UserError(
                f"data.eav.non_numeric must be one of {NON_NUMERIC}, got {self.non_numeric!r}"
            )

    def state(self) -> dict:
        return asdict(self)


def eav_spec(data_format: str, settings: dict | None) -> EAVSpec | None:
    """The spec of ``data.format`` / ``data.eav``; None for a wide table."""
    if data_format not in FORMATS:
        raise UserError(f"data.format must be one of {FORMATS}, got {data_format!r}")
    if data_format == "wide":
        return None
    settings = dict(settings or {})
    unknown = sorted(set(settings) - {"variable_col", "value_col", "non_numeric"})
    if unknown:
        raise UserError(
            f"unknown data.eav setting(s) {unknown}; known: variable_col, value_col, non_numeric"
        )
    return EAVSpec(**settings)


def eav_rows(
    df: pd.DataFrame,
    path: str | Path,
    id_col: str,
    time_col: str,
    spec: EAVSpec,
    variables: list[str] | None = None,
    carry: tuple[str, ...] = (),
    duplicates: str = "error",
) -> tuple[pd.DataFrame, LongValues, list[str]]:
    """An EAV table as (patient, time) rows and their observations.

    Returns the rows (``id_col``, ``time_col`` and the ``carry`` columns, constant per
    patient such as the label: the first value of each row; in the file's order of first
    appearance), each observation as (row, variable, value) for ``to_arrays``, and the
    variables: sorted by name, or ``variables`` in that order (absent ones stay empty).
    No (rows x variables) matrix is made: memory follows the observations.
    """
    var_col, value_col = spec.variable_col, spec.value_col
    tables.require_columns(df, path, {"variable": var_col, "value": value_col})
    clash = {var_col, value_col} & {id_col, time_col, *carry}
    if clash:
        raise UserError(
            f"{path}: column '{clash.pop()}' cannot be both an EAV column and another role"
        )
    names = df[var_col]
    empty = names.isna().to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise UserError(
            f"{path}: column '{var_col}' is empty in row {row + 1} (patient "
            f"{df[id_col].iloc[row]}; {int(empty.sum())} rows without a variable name)"
        )
    names = names.astype(str)
    values = _numeric_values(df, path, id_col, names, spec)
    known = sorted(names.unique()) if variables is None else list(variables)
    codes = pd.Categorical(names, categories=known).codes.astype(np.int64)  # -1: not used
    used = (codes >= 0) & ~np.isnan(values)
    pair = df.groupby([id_col, time_col], sort=False, dropna=False).ngroup().to_numpy()
    if duplicates == "error" and used.any():
        seen = pd.DataFrame({"pair": pair[used], "var": codes[used]})
        repeated = seen.duplicated().to_numpy()
        if repeated.any():
            row = int(np.flatnonzero(used)[np.flatnonzero(repeated)[0]])
            raise UserError(
                f"{path}: row {row + 1} repeats variable '{names.iloc[row]}' at time "
                f"{df[time_col].iloc[row]} for patient {df[id_col].iloc[row]} "
                f"({int(repeated.sum())} such rows); set data.duplicates=aggregate to combine "
                "them as values within one grid step are"
            )
    first = ~pd.Series(pair).duplicated().to_numpy()
    head = df.loc[first, [id_col, time_col, *carry]].reset_index(drop=True)
    observations = LongValues(
        row=pair[used].astype(np.int64),
        column=codes[used],
        value=values[used].astype(np.float32),
    )
    return head, observations, known


def _numeric_values(
    df: pd.DataFrame, path: str | Path, id_col: str, names: pd.Series, spec: EAVSpec
) -> np.ndarray:
    """The value column as float64 (NaN: empty or dropped), non-numbers handled by spec."""
    raw = df[spec.value_col]
    if pd.api.types.is_bool_dtype(raw):
        raw = raw.astype("float64")
    if pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        numeric = pd.to_numeric(raw, errors="coerce")
        bad = (numeric.isna() & raw.notna() & (raw.astype(str).str.strip() != "")).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            counts = names[bad].value_counts()
            by_variable = ", ".join(f"'{v}' {n}" for v, n in counts.head(5).items())
            where = (
                f"{int(bad.sum())} values of column '{spec.value_col}' are not numbers (by "
                f"variable: {by_variable}); the first is in row {row + 1}, variable "
                f"'{names.iloc[row]}', patient {df[id_col].iloc[row]}"
            )
            if spec.non_numeric == "error":
                raise UserError(f"{path}: {where}; set data.eav.non_numeric=drop to leave them out")
            log.warning("%s: %s; left out (data.eav.non_numeric=drop)", path, where)
        values = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
    infinite = np.isinf(values)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise UserError(
            f"{path}: column '{spec.value_col}' is infinite in row {row + 1} (variable "
            f"'{names.iloc[row]}', patient {df[id_col].iloc[row]}; {int(infinite.sum())} rows)"
        )
    return values
