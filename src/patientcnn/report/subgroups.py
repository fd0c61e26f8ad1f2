"""Does the model work equally well for women and men, for the old and the young?

For each subgroup column (a per-patient column of the static covariate table or of the
labels table, e.g. sex or an age band) and each of its values: the number of patients,
the prevalence, AUROC, AUPRC, sensitivity and specificity at the threshold, and the
calibration slope and intercept, each with a bootstrap interval over the group's own
patients; then the largest gap between the groups of the column for each figure. Groups
too small for stable figures are flagged, never hidden: a missing group would hide
exactly the patients a reader should worry about.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from patientcnn.data import tables
from patientcnn.data.tables import table_columns
from patientcnn.errors import UserError
from patientcnn.metrics import calibration_metrics
from patientcnn.report.bootstrap import bootstrap, percentile_interval, resample_weights

FIGURES = ("auroc", "auprc", "sensitivity", "specificity")
CALIBRATION = ("calibration_slope", "calibration_intercept")
SMALL_GROUP = 30  # fewer patients than this, or
SMALL_CLASS = 5  # fewer of either outcome than this: the group is flagged
CALIBRATION_RESAMPLES = 200  # a logistic fit per resample: fewer resamples than the rest
MISSING = "(missing)"


def subgroups_from(
    sources: list[str | Path | None], id_col: str, columns: list[str], ids: np.ndarray
) -> dict[str, np.ndarray]:
    """``read_subgroups`` from several per-patient tables: each column from the first of
    ``sources`` that has it (the static covariate table, then the labels table), else
    from the last one (whose reader names a missing column). None sources are skipped."""
    *earlier, last = [s for s in sources if s is not None]
    wanted: dict[str | Path, list[str]] = {}
    for column in columns:
        source = next((s for s in earlier if column in table_columns(s)), last)
        wanted.setdefault(source, []).append(column)
    absent = [c for c in wanted.get(last, []) if earlier and c not in _columns(last)]
    if absent:
        raise UserError(
            f"report.subgroups column '{absent[0]}' is in none of "
            f"{', '.join(map(str, [*earlier, last]))}; name a per-patient column of one of them"
        )
    groups = {}
    for source, names in wanted.items():
        groups |= read_subgroups(source, id_col, names, ids)
    return {column: groups[column] for column in columns}


def _columns(source: str | Path) -> list[str]:
    try:
        return table_columns(source)
    except UserError:  # an array file has no columns; read_subgroups names the problem
        return []


def read_subgroups(
    path: str | Path, id_col: str, columns: list[str], ids: np.ndarray
) -> dict[str, np.ndarray]:
    """Per column, each patient's group (as text; empty cells become '(missing)'), in the
    order of ``ids``, from a per-patient table (the labels table, or measurements whose
    column is constant within each patient)."""
    df = tables.read_table(path, id_col)
    for column in columns:
        tables.require_columns(
            df,
            path,
            {"subgroup": column},
            fix="report.subgroups takes per-patient columns of the static table "
            "(data.static) or of the labels table.",
        )
    tables.check_ids(tables.TableRows(df, path, id_col))
    groups = {}
    for column in columns:
        values = df[[id_col, column]].astype({column: "string"}).fillna(MISSING)
        values = values.drop_duplicates()
        clash = values[id_col].duplicated()
        if clash.any():
            patient = values.loc[clash, id_col].iloc[0]
            raise UserError(
                f"{path}: report.subgroups column '{column}' has more than one value for "
                f"patient {patient}; a subgroup is one value per patient"
            )
        per_patient = values.set_index(id_col)[column]
        aligned = per_patient.reindex(pd.Index(ids, dtype=object))
        groups[column] = aligned.fillna(MISSING).astype(str).to_numpy()
    return groups


def subgroup_figures(
    y: np.ndarray,
    prob: np.ndarray,
    groups: dict[str, np.ndarray],
    threshold: float,
    n_resamples: int,
    seed: int,
    level: float,
) -> dict:
    """``{column: {"groups": {value: {figure: interval, ...}}, "largest_gap": {...}}}``."""
    y = np.asarray(y).astype(int)
    prob = np.asarray(prob, dtype=np.float64)
    result = {}
    for column, values in groups.items():
        rows = {}
        for value in sorted(set(values.tolist())):
            member = values == value
            yg, pg = y[member], prob[member]
            n_pos = int(yg.sum())
            row = {
                "patients": int(member.sum()),
                "prevalence": float(yg.mean()),
                "small": bool(
                    member.sum() < SMALL_GROUP or min(n_pos, len(yg) - n_pos) < SMALL_CLASS
                ),
            }
            cis = bootstrap(yg, {"model": pg}, threshold, n_resamples, seed, level)["model"]
            row |= {k: cis[k] for k in FIGURES}
            row |= calibration_intervals(
                yg, pg, min(n_resamples, CALIBRATION_RESAMPLES), seed, level
            )
            rows[value] = row
        gaps = {}
        for figure in ("prevalence", *FIGURES, *CALIBRATION):
            points = [
                r[figure] if figure == "prevalence" else r[figure]["value"] for r in rows.values()
            ]
            points = [p for p in points if p is not None]
            gaps[figure] = float(max(points) - min(points)) if len(points) >= 2 else None
        result[column] = {"groups": rows, "largest_gap": gaps}
    return result


def calibration_intervals(
    y: np.ndarray, prob: np.ndarray, n_resamples: int, seed: int, level: float
) -> dict[str, dict]:
    """Calibration slope and intercept with percentile intervals over resamples."""
    point = calibration_metrics(y, prob)
    rng = np.random.default_rng(seed)
    samples = {k: [] for k in CALIBRATION}
    for weights in resample_weights(len(y), n_resamples, rng):
        drawn = np.repeat(np.arange(len(y)), weights)
        figures = calibration_metrics(y[drawn], prob[drawn])
        for k in CALIBRATION:
            samples[k].append(figures[k])
    tail = 100 * (1 - level) / 2
    return {k: percentile_interval(point[k], np.asarray(samples[k]), tail) for k in CALIBRATION}
