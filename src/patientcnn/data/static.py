"""Static covariates: one row per patient (age, sex, admission type...), read and encoded.

The table (CSV or Parquet) is keyed by the measurements' id column; its other columns,
or the ones chosen (``data.static_columns``), are the covariates. A numeric column is
imputed with the training median and standardised; a text column (or one listed in
``data.static_categorical``, for categories coded as numbers) is one-hot encoded, with a
``(missing)`` level when training patients had empty cells. ``StaticEncoder`` is fitted
on the development (training) patients only, as the series' ``Preprocessor`` is; its
state is plain numbers, strings and lists, so it travels inside the checkpoint and
``from_state`` rebuilds it.

Every problem is one ``UserError`` naming the file, the column and the patient; cell
values are never shown except the category levels a model has not seen (they are
labels such as ``elective``, which the user needs to find the mismatch).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from patientcnn.data import tables
from patientcnn.errors import UserError

log = logging.getLogger(__name__)

MISSING = "(missing)"  # the level of an empty categorical cell
SHOWN = 3  # patients or values named in a message; the count is always given
MANY_LEVELS = 50  # a categorical column with more levels than this gets a warning


def read_static(
    path: str | Path,
    id_col: str,
    columns: list[str] | None = None,
    exclude: tuple[str, ...] = (),
    hint: str = "Set data.static_columns to the right names",
) -> pd.DataFrame:
    """The static table indexed by patient id (text, exactly as written), holding the
    ``columns`` (None: every column but the id and ``exclude``, e.g. the label column,
    which must never become a covariate). ``hint`` ends the message of a missing column."""
    df = tables.read_table(path, id_col)
    tables.require_columns(df, path, {"id": id_col})
    tables.check_ids(tables.TableRows(df, path, id_col))
    repeated = df[id_col].duplicated()
    if repeated.any():
        patient = df.loc[repeated, id_col].iloc[0]
        raise UserError(
            f"{path}: patient {patient} has more than one row ({int(repeated.sum())} repeated "
            "rows in all); a static table holds one row per patient"
        )
    available = [c for c in df.columns if c != id_col]
    if columns:
        columns = [str(c) for c in columns]
        absent = [c for c in columns if c not in df.columns]
        if absent:
            shown = ", ".join(available[:20]) + (" ..." if len(available) > 20 else "")
            raise UserError(
                f"{path}: no static column(s) {', '.join(absent)}; columns are: {shown}. " + hint
            )
        refused = [c for c in columns if c == id_col or c in exclude]
        if refused:
            raise UserError(
                f"{path}: column '{refused[0]}' is the id, label or split column and cannot "
                "be a static covariate; leave it out of data.static_columns"
            )
    else:
        columns = [c for c in available if c not in exclude]
        if not columns:
            raise UserError(f"{path}: the static table has no column besides '{id_col}'")
    return df.set_index(id_col)[list(columns)]


def static_rows(table: pd.DataFrame, ids: np.ndarray, path: str | Path) -> pd.DataFrame:
    """The rows of ``ids``, in their order; a patient without a row is an error naming them."""
    wanted = pd.Index(np.asarray(ids, dtype=object))
    missing = wanted.difference(table.index)
    if len(missing):
        shown = ", ".join(map(str, missing[:SHOWN])) + (" ..." if len(missing) > SHOWN else "")
        raise UserError(
            f"{path}: {len(missing)} patient(s) have no row in the static table (e.g. {shown}); "
            "every scored patient needs one (leave a cell empty for an unknown value)"
        )
    return table.reindex(wanted)


class StaticEncoder:
    """Impute, standardise and one-hot encode static covariates; fitted on training patients.

    ``columns``: the covariates, in this order (None: every column of the table given to
    ``fit``). ``categorical``: columns one-hot encoded even though they hold numbers (e.g.
    admission type coded 1, 2, 3); text and true/false columns always are.

    Numeric columns: an empty cell gets the training median, then each column is
    standardised with the mean and standard deviation of its training values.
    Categorical columns: one 0/1 column per level seen in training (``(missing)`` among
    them when a training patient had an empty cell); a level not seen in training, or an
    empty cell when training had none, is all zeros, with a warning naming the column
    and example values.
    """

    def __init__(
        self, columns: list[str] | None = None, categorical: list[str] | None = None
    ) -> None:
        self.columns = [str(c) for c in columns] if columns else None
        self.categorical = [str(c) for c in categorical] if categorical else []
        self.numeric: dict[str, dict[str, float]] | None = None  # name -> median, mean, std
        self.levels: dict[str, list[str]] | None = None  # name -> its levels, in order
        self.order: list[str] | None = None  # the fitted columns, in the output's order

    def fit(self, table: pd.DataFrame, path: str | Path = "static table") -> StaticEncoder:
        """Learn the statistics and levels from ``table``: the rows (indexed by id) of the
        patients preprocessing is fitted on (the development patients), never the test
        patients'."""
        columns = self.columns or list(table.columns)
        unknown = [c for c in columns if c not in table.columns]
        if unknown:
            raise UserError(f"{path}: no static column(s) {', '.join(unknown)}")
        stray = [c for c in self.categorical if c not in columns]
        if stray:
            raise UserError(
                f"data.static_categorical names '{stray[0]}', which is not one of the static "
                f"columns ({', '.join(columns)})"
            )
        numeric, levels = {}, {}
        for name in columns:
            column = table[name]
            if self._is_categorical(column, name):
                text = _as_text(column)
                seen = sorted(text.dropna().unique().tolist(), key=str)
                if not seen:
                    raise UserError(
                        f"{path}: static column '{name}' is empty for every training patient; "
                        "leave it out of data.static_columns"
                    )
                if text.isna().any():
                    seen.append(MISSING)
                if len(seen) > MANY_LEVELS:
                    log.warning(
                        "%s: static column '%s' has %d levels among the training patients, "
                        "each one input of the network; an identifier or free text? leave it "
                        "out with data.static_columns",
                        path,
                        name,
                        len(seen),
                    )
                levels[name] = [str(level) for level in seen]
            else:
                values = _as_numbers(column, path, name)
                observed = values[~np.isnan(values)]
                if not len(observed):
                    raise UserError(
                        f"{path}: static column '{name}' is empty for every training patient; "
                        "leave it out of data.static_columns"
                    )
                std = float(observed.std())
                numeric[name] = {
                    "median": float(np.median(observed)),
                    "mean": float(observed.mean()),
                    "std": std if std > 1e-8 else 1.0,
                }
        self.order, self.numeric, self.levels = list(columns), numeric, levels
        return self

    @property
    def output_features(self) -> list[str]:
        """The encoded columns in input order: a numeric column as itself, a categorical
        one as ``column=level`` per level."""
        self._check_fitted()
        names = []
        for name in self.order:
            if name in self.numeric:
                names.append(name)
            else:
                names += [f"{name}={level}" for level in self.levels[name]]
        return names

    def transform(self, table: pd.DataFrame, path: str | Path = "static table") -> np.ndarray:
        """(N, S) float32 encoded covariates of ``table``'s rows (one per patient, indexed
        by id), with the training statistics and levels."""
        self._check_fitted()
        absent = [c for c in self.order if c not in table.columns]
        if absent:
            raise UserError(
                f"{path}: the model needs static column(s) that are missing: {', '.join(absent)}"
            )
        parts = []
        for name in self.order:
            if name in self.numeric:
                stats = self.numeric[name]
                values = _as_numbers(table[name], path, name)
                values = np.where(np.isnan(values), stats["median"], values)
                parts.append(((values - stats["mean"]) / stats["std"])[:, None])
                continue
            levels = self.levels[name]
            text = _as_text(table[name])
            if MISSING in levels:
                text = text.fillna(MISSING)
            known = text.isin(levels).to_numpy()
            if not known.all():
                unseen = text[~known]
                values = sorted({MISSING if pd.isna(v) else str(v) for v in unseen}, key=str)
                log.warning(
                    "%s: static column '%s' has %d patient(s) with a value not seen in "
                    "training (%s%s); they get no level of this column (all zeros), e.g. "
                    "patient %s",
                    path,
                    name,
                    len(unseen),
                    ", ".join(repr(v) for v in values[:SHOWN]),
                    " ..." if len(values) > SHOWN else "",
                    unseen.index[0],
                )
            onehot = text.to_numpy(dtype=object)[:, None] == np.asarray(levels, dtype=object)
            parts.append(onehot.astype(np.float64))
        out = np.concatenate(parts, axis=1) if parts else np.zeros((len(table), 0))
        return out.astype(np.float32)

    def state(self) -> dict:
        self._check_fitted()
        return {
            "columns": list(self.order),
            "categorical": list(self.categorical),
            "numeric": {k: dict(v) for k, v in self.numeric.items()},
            "levels": {k: list(v) for k, v in self.levels.items()},
        }

    @classmethod
    def from_state(cls, state: dict) -> StaticEncoder:
        obj = cls(state["columns"], state.get("categorical"))
        obj.order = [str(c) for c in state["columns"]]
        obj.numeric = {
            str(k): {s: float(v[s]) for s in ("median", "mean", "std")}
            for k, v in state["numeric"].items()
        }
        obj.levels = {str(k): [str(level) for level in v] for k, v in state["levels"].items()}
        return obj

    def _is_categorical(self, column: pd.Series, name: str) -> bool:
        return (
            name in self.categorical
            or pd.api.types.is_bool_dtype(column)
            or not tables.looks_numeric(column)
        )

    def _check_fitted(self) -> None:
        if self.order is None:
            raise RuntimeError("StaticEncoder is not fitted; call fit() on training patients first")


def _as_text(column: pd.Series) -> pd.Series:
    """Category levels as text, the same however the file stored them: whole numbers as
    integers (``2.0`` in a CSV column with gaps is ``2``), booleans as True/False, an empty
    cell missing."""
    if pd.api.types.is_bool_dtype(column):
        return column.map(str).astype(object)
    return pd.Series(tables.ids_as_text(column), index=column.index, dtype=object)


def _as_numbers(column: pd.Series, path: str | Path, name: str) -> np.ndarray:
    """A numeric column as float64 with NaN for empty cells; a cell that is not a number,
    or is infinite, is an error naming the column and the patient."""
    if pd.api.types.is_bool_dtype(column):
        column = column.astype("float64")
    parsed = pd.to_numeric(column, errors="coerce") if not _numeric(column) else column
    values = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
    present = column.notna().to_numpy() & (column.astype(str).str.strip() != "").to_numpy()
    for bad, problem in (
        (np.isnan(values) & present, "is not a number"),
        (np.isinf(values), "is infinite"),
    ):
        if bad.any():
            more = f" ({int(bad.sum())} patients in all)" if bad.sum() > 1 else ""
            raise UserError(
                f"{path}: static column '{name}' {problem} for patient "
                f"{column.index[np.flatnonzero(bad)[0]]}{more}"
            )
    return values


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
