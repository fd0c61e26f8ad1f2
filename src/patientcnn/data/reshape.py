"""Long (patient, time, features...) rows -> a (patients, timesteps, features) array.

Vectorised: patients are factorised to integer codes, each row's time becomes a step
index on a regular grid, and all values are scattered into one preallocated array in a
single fancy-index assignment (no per-patient Python loop). Rows may come in any order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from patientcnn.errors import UserError

ALIGNMENTS = ("start", "end")


@dataclass
class GridSpec:
    """How times become steps: ``step`` time units per bin, ``length`` bins kept.

    ``length=None`` takes the longest stay. ``align='start'`` keeps each stay's first
    ``length`` bins and pads at the end; ``'end'`` keeps the last bins and pads in front.
    """

    step: float = 1.0
    length: int | None = None
    align: str = "start"

    def __post_init__(self) -> None:
        if not self.step > 0:
            raise UserError(f"data.grid.step must be positive, got {self.step}")
        if self.length is not None and int(self.length) < 1:
            raise UserError(f"data.grid.length must be at least 1, got {self.length}")
        if self.align not in ALIGNMENTS:
            raise UserError(f"data.grid.align must be one of {ALIGNMENTS}, got {self.align!r}")

    def state(self) -> dict:
        return {"step": float(self.step), "length": self.length, "align": self.align}


@dataclass
class PatientArrays:
    """The reshaped cohort. ``x`` holds NaN where a value was not measured or is padding."""

    x: np.ndarray  # (N, L, C) float32
    lengths: np.ndarray  # (N,) int64: grid steps from first to last kept row
    ids: np.ndarray  # (N,) patient ids, sorted
    features: list[str]
    align: str = "start"

    @property
    def valid(self) -> np.ndarray:
        """(N, L) bool: True on steps inside the patient's stay, False on padding."""
        steps = np.arange(self.x.shape[1])
        if self.align == "end":
            return steps[None, :] >= (self.x.shape[1] - self.lengths)[:, None]
        return steps[None, :] < self.lengths[:, None]

    def subset(self, index: np.ndarray) -> PatientArrays:
        return PatientArrays(
            self.x[index], self.lengths[index], self.ids[index], self.features, self.align
        )


def to_arrays(
    ids: pd.Series | np.ndarray,
    hours: np.ndarray,
    values: np.ndarray,
    features: list[str],
    grid: GridSpec,
) -> PatientArrays:
    """Scatter rows onto the grid; several rows in one bin are averaged per feature.

    ``hours`` is each row's time (steps, hours, or hours since an epoch); a patient's
    grid starts at their first row.
    """
    codes, uniques = pd.factorize(np.asarray(ids), sort=True)
    n_patients, n_features = len(uniques), values.shape[1]

    start = np.full(n_patients, np.inf)
    np.minimum.at(start, codes, hours)
    bins = np.floor((hours - start[codes]) / grid.step + 1e-9).astype(np.int64)
    span = np.zeros(n_patients, dtype=np.int64)
    np.maximum.at(span, codes, bins + 1)

    length = int(grid.length) if grid.length is not None else int(span.max())
    if grid.align == "end":
        bins = bins + (length - span)[codes]  # each stay ends at the last step
        keep = bins >= 0
    else:
        keep = bins < length
    if not keep.all():
        codes, bins, values = codes[keep], bins[keep], values[keep]

    flat = codes * length + bins
    x = np.full((n_patients * length, n_features), np.nan, dtype=np.float32)
    if _all_distinct(flat, n_patients * length):
        x[flat] = values
    else:
        x[:] = _bin_means(flat, values, n_patients * length)
    return PatientArrays(
        x.reshape(n_patients, length, n_features),
        np.minimum(span, length),
        np.asarray(uniques),
        list(features),
        grid.align,
    )


def _all_distinct(flat: np.ndarray, size: int) -> bool:
    return int(np.bincount(flat, minlength=size).max(initial=0)) <= 1


def _bin_means(flat: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Per-bin mean of the non-missing values of each feature (NaN where none)."""
    out = np.full((size, values.shape[1]), np.nan, dtype=np.float32)
    for j in range(values.shape[1]):
        column = values[:, j]
        seen = ~np.isnan(column)
        counts = np.bincount(flat[seen], minlength=size)
        sums = np.bincount(flat[seen], weights=column[seen], minlength=size)
        has = counts > 0
        out[has, j] = sums[has] / counts[has]
    return out
