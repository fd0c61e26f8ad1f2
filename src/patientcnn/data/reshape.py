"""Long (patient, time, features...) rows -> a (patients, timesteps, features) array.

Vectorised: patients are factorised to integer codes, each row's time becomes a step
index on a regular grid, and all values are scattered into one preallocated array in a
single fancy-index assignment (no per-patient Python loop). Rows may come in any order.
Several rows in one bin are combined per feature (mean, last, min or max) with a sparse
product or ``ufunc.at``, again without a loop over patients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from patientcnn.errors import UserError

ALIGNMENTS = ("start", "end")
DEFAULT_MAX_STEPS = 20_000  # a stay longer than this on the grid is almost always a bad time
MEMORY_SHARE = 0.5  # default limit: this share of the memory available when the run starts
GRID_COPIES = 3  # the grid, its preprocessed copy and the tensors made from it
AGGREGATIONS = ("mean", "last", "min", "max")


@dataclass
class GridSpec:
    """How times become steps: ``step`` time units per bin, ``length`` bins kept.

    Time zero is each patient's first row, or the value of ``anchor_col`` (e.g. the
    admission time) when one is named. ``length=None`` takes the longest stay.
    ``align='start'`` keeps the first ``length`` bins from time zero and pads at the end;
    ``'end'`` keeps the last bins of the stay (with an anchor: the ``length`` bins just
    before it) and pads in front. ``agg`` combines rows that share a bin: one of
    AGGREGATIONS for every feature, or a dict feature -> aggregation (others: mean).
    """

    step: float = 1.0
    length: int | None = None
    align: str = "start"
    anchor_col: str | None = None
    agg: str | dict[str, str] = "mean"
    # resource limits, checked before the grid is allocated (not part of the fitted state)
    max_steps: int | None = DEFAULT_MAX_STEPS
    memory_limit_gb: float | None = None

    def __post_init__(self) -> None:
        if not self.step > 0:
            raise UserError(f"data.grid.step must be positive, got {self.step}")
        if self.length is not None and int(self.length) < 1:
            raise UserError(f"data.grid.length must be at least 1, got {self.length}")
        if self.align not in ALIGNMENTS:
            raise UserError(f"data.grid.align must be one of {ALIGNMENTS}, got {self.align!r}")
        if self.anchor_col is not None and self.length is None:
            raise UserError(
                "data.grid.length must be set with data.grid.anchor_col: the window is "
                "length x step time units after (align=start) or before (align=end) the anchor"
            )
        if self.max_steps is not None and int(self.max_steps) < 1:
            raise UserError(f"data.grid.max_steps must be at least 1 or null, got {self.max_steps}")
        if self.memory_limit_gb is not None and not float(self.memory_limit_gb) > 0:
            raise UserError(
                f"data.grid.memory_limit_gb must be positive or null, got {self.memory_limit_gb}"
            )
        chosen = self.agg.values() if isinstance(self.agg, dict) else [self.agg]
        wrong = [a for a in chosen if a not in AGGREGATIONS]
        if wrong:
            raise UserError(
                f"data.grid.agg must be one of {AGGREGATIONS} (or a dict feature: aggregation), "
                f"got {wrong[0]!r}"
            )

    def state(self) -> dict:
        return {
            "step": float(self.step),
            "length": self.length,
            "align": self.align,
            "anchor_col": self.anchor_col,
            "agg": dict(self.agg) if isinstance(self.agg, dict) else self.agg,
        }

    def aggregations(self, features: list[str]) -> list[str]:
        """One aggregation per feature; a dict naming an unknown feature is a UserError."""
        if not isinstance(self.agg, dict):
            return [self.agg] * len(features)
        unknown = sorted(set(self.agg) - set(features))
        if unknown:
            raise UserError(
                f"data.grid.agg names {', '.join(unknown)}, which are not features "
                f"(features: {', '.join(features)})"
            )
        return [self.agg.get(name, "mean") for name in features]


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

    def select_features(self, names: list[str]) -> PatientArrays:
        """The same patients and stays with only the channels ``names``, in that order."""
        index = [self.features.index(name) for name in names]
        return PatientArrays(self.x[:, :, index], self.lengths, self.ids, list(names), self.align)


@dataclass
class LongValues:
    """Observations one per (row, feature) instead of a (rows, features) matrix: an EAV
    table's values, where a (rows x features) matrix would be almost all empty. ``row``
    indexes the (patient, time) rows given to ``to_arrays``."""

    row: np.ndarray  # (M,) int64
    column: np.ndarray  # (M,) int64: index into the features
    value: np.ndarray  # (M,) float32


def to_arrays(
    ids: pd.Series | np.ndarray | pd.Categorical,
    hours: np.ndarray,
    values: np.ndarray | LongValues,
    features: list[str],
    grid: GridSpec,
    anchor: np.ndarray | None = None,
) -> PatientArrays:
    """Scatter rows onto the grid, combining rows that share a bin with ``grid.agg``.

    ``hours`` is each row's time (steps, hours, or hours since an epoch); ``anchor``,
    when given, is each row's patient's time zero in the same units. Without it a
    patient's grid starts at their first row. With an anchor only rows inside the window
    are kept, and a stay runs from the anchor to its last row (align=start) or from its
    first row to the anchor (align=end). ``values`` may be ``LongValues``: then memory
    follows the observations, not rows x features.
    """
    codes, uniques = factorize_ids(ids)
    long = isinstance(values, LongValues)
    n_patients, n_features = len(uniques), len(features) if long else values.shape[1]
    aggs = grid.aggregations(list(features))

    if anchor is None:
        start = np.full(n_patients, np.inf)
        np.minimum.at(start, codes, hours)
        origin = start[codes]
    else:
        origin = anchor
    steps = np.floor((hours - origin) / grid.step + 1e-9)
    # far beyond any grid, and within int64: a time of 1e300 must not wrap around
    bins = np.clip(steps, -(2**62), 2**62).astype(np.int64)

    if anchor is None:
        span = np.zeros(n_patients, dtype=np.int64)
        np.maximum.at(span, codes, bins + 1)
        if grid.length is None:
            check_span(span, bins, codes, uniques, grid)
        length = int(grid.length) if grid.length is not None else int(span.max())
        lengths = np.minimum(span, length)
        if grid.align == "end":
            bins = bins + (length - span)[codes]  # each stay ends at the last step
    else:
        length = int(grid.length)
        if grid.align == "end":
            bins = bins + length  # the window is the `length` bins just before the anchor
        lengths = _anchored_lengths(codes, bins, n_patients, length, grid.align)
    keep = (bins >= 0) & (bins < length)
    if long:
        inside = keep[values.row]
        cell_row, column = values.row[inside], values.column[inside]
        long_value = values.value[inside]
    elif not keep.all():
        codes, bins, values, hours = codes[keep], bins[keep], values[keep], hours[keep]

    longest = None if anchor is not None or grid.length is not None else int(np.argmax(span))
    check_size(
        n_patients,
        length,
        n_features,
        grid,
        None if longest is None else f"patient {uniques[longest]}, {int(span[longest])} steps",
    )
    flat = codes * length + bins
    size = n_patients * length
    if long:  # one cell per (bin, feature); aggregated over the observations only
        cell = flat[cell_row] * n_features + column
        x = _aggregate_cells(cell, hours[cell_row], long_value, column, size * n_features, aggs)
    elif _all_distinct(flat, size):
        x = np.full((size, n_features), np.nan, dtype=np.float32)
        x[flat] = values
    else:
        x = _aggregate(flat, hours, values, size, aggs)
    return PatientArrays(
        x.reshape(n_patients, length, n_features),
        lengths,
        np.asarray(uniques),
        list(features),
        grid.align,
    )


def _anchored_lengths(
    codes: np.ndarray, bins: np.ndarray, n_patients: int, length: int, align: str
) -> np.ndarray:
    """Window steps inside the stay: anchor to last row (start), first row to anchor (end).

    Rows beyond the window on the far side still count, so a stay that goes on past the
    window fills all of it; rows on the near side of the anchor do not.
    """
    if align == "end":
        first = np.full(n_patients, length, dtype=np.int64)
        inside = bins < length
        np.minimum.at(first, codes[inside], bins[inside])
        return length - np.maximum(first, 0)
    last = np.zeros(n_patients, dtype=np.int64)
    inside = bins >= 0
    np.maximum.at(last, codes[inside], bins[inside] + 1)
    return np.minimum(last, length)


def _all_distinct(flat: np.ndarray, size: int) -> bool:
    return int(np.bincount(flat, minlength=size).max(initial=0)) <= 1


def _aggregate(
    flat: np.ndarray, hours: np.ndarray, values: np.ndarray, size: int, aggs: list[str]
) -> np.ndarray:
    """Per bin and feature, combine the non-missing values (NaN where there are none).

    No sort and no loop over patients: means for all features in one sparse product,
    min/max with one unbuffered ``ufunc.at`` per feature, 'last' with two.
    """
    means = [j for j, agg in enumerate(aggs) if agg == "mean"]
    if len(means) == len(aggs):
        return _bin_means(flat, values, size)
    out = np.full((size, values.shape[1]), np.nan, dtype=np.float32)
    if means:
        out[:, means] = _bin_means(flat, values[:, means], size)
    for j, agg in enumerate(aggs):
        if agg == "mean":
            continue
        column = np.ascontiguousarray(values[:, j])
        if agg == "last":
            out[:, j] = _bin_last(flat, hours, column, size)
        else:  # fmin/fmax skip NaN, so a bin stays NaN only when nothing was observed
            result = np.full(size, np.nan, dtype=np.float32)
            (np.fmin if agg == "min" else np.fmax).at(result, flat, column)
            out[:, j] = result
    return out


def _aggregate_cells(
    cell: np.ndarray,
    hours: np.ndarray,
    value: np.ndarray,
    column: np.ndarray,
    n_cells: int,
    aggs: list[str],
) -> np.ndarray:
    """Flat (bins x features) grid of observations given per cell: each cell's values
    combined by its feature's aggregation, computed over the occupied cells only."""
    out = np.full(n_cells, np.nan, dtype=np.float32)
    if _all_distinct_cells(cell):
        out[cell] = value
        return out
    kind = np.asarray(aggs, dtype=object)[column]
    for agg in sorted(set(aggs)):
        chosen = kind == agg
        occupied, index = np.unique(cell[chosen], return_inverse=True)
        block = value[chosen][:, None]
        out[occupied] = _aggregate(index, hours[chosen], block, len(occupied), [agg])[:, 0]
    return out


def _all_distinct_cells(cell: np.ndarray) -> bool:
    return len(np.unique(cell)) == len(cell)


def _bin_means(flat: np.ndarray, block: np.ndarray, size: int) -> np.ndarray:
    """(bins, features) means: a sparse bins x rows indicator times values and presence.

    Sums and counts are float64 (one column at a time, to bound memory) and the mean is
    rounded to float32 once, as the DuckDB engine's SQL does: both give the same numbers.
    """
    rows = sparse.csc_matrix(
        (np.ones(len(flat), dtype=np.float64), flat, np.arange(len(flat) + 1)),
        shape=(size, len(flat)),
    )
    out = np.empty((size, block.shape[1]), dtype=np.float32)
    for j in range(block.shape[1]):
        column = block[:, j]
        seen = ~np.isnan(column)
        sums = rows @ np.where(seen, column, 0).astype(np.float64)
        counts = rows @ seen.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = sums / counts  # 0 / 0 = NaN: nothing observed in that bin
    return out


def _bin_last(flat: np.ndarray, hours: np.ndarray, column: np.ndarray, size: int) -> np.ndarray:
    """The value observed latest in each bin; of rows with the same time, the later row."""
    seen = np.flatnonzero(~np.isnan(column))
    latest = np.full(size, -np.inf)
    np.maximum.at(latest, flat[seen], hours[seen])
    candidates = seen[hours[seen] == latest[flat[seen]]]
    row = np.full(size, -1, dtype=np.int64)
    np.maximum.at(row, flat[candidates], candidates)
    result = np.full(size, np.nan, dtype=np.float32)
    has = row >= 0
    result[has] = column[row[has]]
    return result


def factorize_ids(ids: pd.Series | np.ndarray | pd.Categorical) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes per row and the distinct ids in ``id_order``. Categorical ids
    (``tables.read_rows``: factorized when read) are not hashed again."""
    if isinstance(getattr(ids, "dtype", None), pd.CategoricalDtype):
        codes, uniques = _used_categories(pd.Categorical(ids))
    else:
        codes, uniques = pd.factorize(np.asarray(ids, dtype=object))
    order = id_order(uniques)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], np.asarray(uniques, dtype=object)[order]


def _used_categories(ids: pd.Categorical) -> tuple[np.ndarray, np.ndarray]:
    """Codes and categories of the categories some row has (rows may have been dropped
    since the ids were factorized), by counting codes rather than sorting them."""
    codes = ids.codes.astype(np.int64)
    uniques = np.asarray(ids.categories, dtype=object)
    used = np.bincount(codes[codes >= 0], minlength=len(uniques)) > 0
    if used.all():
        return codes, uniques
    renumber = np.append(np.cumsum(used) - 1, -1)  # code -1 (missing) stays -1
    return renumber[codes], uniques[used]


def id_order(ids: np.ndarray) -> np.ndarray:
    """The order patients are kept in: ids made only of digits in numeric order ('2'
    before '10'; of '7' and '007' the shorter first), any other ids as text."""
    text = pd.Series(np.asarray(ids, dtype=object)).astype(str)
    if len(text) and text.str.fullmatch(r"0|[1-9]\d{0,17}").all():  # plain integers
        return np.argsort(text.to_numpy(dtype=object).astype(np.int64), kind="stable")
    if len(text) and text.str.fullmatch(r"\d+").all():
        stripped = text.str.lstrip("0")
        keys = pd.DataFrame(
            {"n": stripped.str.len(), "s": stripped, "z": text.str.len(), "t": text}
        )
        return keys.sort_values(["n", "s", "z", "t"], kind="stable").index.to_numpy()
    return np.argsort(text.to_numpy(dtype=object), kind="stable")


def available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_limit(grid: GridSpec) -> tuple[int | None, str]:
    """The byte limit for the grid and how it was set (for the message)."""
    if grid.memory_limit_gb is not None:
        return int(float(grid.memory_limit_gb) * 2**30), "data.grid.memory_limit_gb"
    available = available_memory()
    if available is None:
        return None, ""
    return int(available * MEMORY_SHARE), f"{MEMORY_SHARE:.0%} of the available memory"


def grid_bytes(n_patients: int, length: int, n_features: int) -> int:
    """Estimated peak bytes of a (N, L, C) float32 grid and what is made from it."""
    return GRID_COPIES * n_patients * length * (n_features * 4 + 2) + n_patients * length * 8


def check_size(
    n_patients: int, length: int, n_features: int, grid: GridSpec, longest: str | None = None
) -> None:
    """Stop before allocating a grid that would not fit the memory limit; ``longest`` names
    the stay that set the length, when the data did."""
    limit, source = memory_limit(grid)
    needed = grid_bytes(n_patients, length, n_features)
    if limit is not None and needed > limit:
        why = f" (the length is the longest stay: {longest})" if longest else ""
        raise UserError(
            f"the (patients, timesteps, features) grid ({n_patients}, {length}, {n_features})"
            f"{why} would need about {_size(needed)}, more than the limit of "
            f"{_size(limit)} ({source}); shorten it with data.grid.length or a "
            "larger data.grid.step, or raise data.grid.memory_limit_gb"
        )


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**29 else f"{n_bytes / 2**20:.1f} MiB"


def check_span(
    span: np.ndarray, bins: np.ndarray, codes: np.ndarray, uniques: np.ndarray, grid: GridSpec
) -> None:
    """With ``length=null`` the longest stay sets the grid: one far-off time (a typo, a
    time in another unit) must not make every patient that long."""
    if grid.max_steps is None or not len(span):
        return
    longest = int(np.argmax(span))
    if int(span[longest]) <= int(grid.max_steps):
        return
    mine = np.flatnonzero(codes == longest)
    row = int(mine[np.argmax(bins[mine])])
    raise UserError(
        f"patient {uniques[longest]} spans {int(span[longest])} grid steps (its row {row + 1} "
        f"lies that far from its first), more than data.grid.max_steps={grid.max_steps}; "
        "check that row's time, or set data.grid.length (steps kept per patient), a larger "
        "data.grid.step, or a larger data.grid.max_steps"
    )
