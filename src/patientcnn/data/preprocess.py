"""Imputation and standardisation fitted on training patients only.

The fitted state is plain lists and strings, so it travels inside the checkpoint and
loads with ``torch.load(weights_only=True)``; ``from_state`` rebuilds the object.
"""

from __future__ import annotations

import logging

import numpy as np

from patientcnn.errors import UserError

log = logging.getLogger(__name__)

IMPUTE_STRATEGIES = ("ffill", "mean", "zero")
STD_FLOOR = 1e-8  # a feature whose standard deviation is at most this is constant


class Preprocessor:
    """Impute missing values, standardise each feature, optionally add mask and time channels.

    ``impute='ffill'`` carries the last observation forward within a patient (never
    backwards in time), at most ``max_gap`` steps (or ``max_gap_hours``, with ``step``
    hours per grid step), and falls back to the training mean before the first
    observation and after a longer gap; ``'mean'`` uses the training mean, ``'zero'`` a
    literal 0 before standardising. ``missing_indicators`` adds one 0/1 "observed"
    channel per feature and ``time_since_observed`` one channel with the time since the
    feature was last observed (before the first observation: since the stay began, plus
    one step), as the MIMIC-III benchmark's discretiser and GRU-D do; that channel is
    standardised with training statistics too. Every channel is 0 on padding steps, so
    the model's masking removes them.
    """

    def __init__(
        self,
        impute: str = "ffill",
        standardize: bool = True,
        missing_indicators: bool = False,
        max_gap: int | None = None,
        max_gap_hours: float | None = None,
        time_since_observed: bool = False,
        step: float = 1.0,
    ) -> None:
        if impute not in IMPUTE_STRATEGIES:
            raise UserError(
                f"data.preprocess.impute must be one of {IMPUTE_STRATEGIES}, got {impute!r}"
            )
        if max_gap is not None and max_gap_hours is not None:
            raise UserError("set data.preprocess.max_gap (steps) or max_gap_hours, not both")
        if max_gap_hours is not None:
            if not max_gap_hours >= 0:
                raise UserError(f"data.preprocess.max_gap_hours must be >= 0, got {max_gap_hours}")
            max_gap = int(np.floor(max_gap_hours / step + 1e-9))
        if max_gap is not None and (not isinstance(max_gap, int) or max_gap < 0):
            raise UserError(f"data.preprocess.max_gap must be a whole number >= 0, got {max_gap!r}")
        self.impute = impute
        self.standardize = bool(standardize)
        self.missing_indicators = bool(missing_indicators)
        self.max_gap = max_gap
        self.time_since_observed = bool(time_since_observed)
        self.step = float(step)
        self.features: list[str] | None = None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.since_mean: np.ndarray | None = None
        self.since_std: np.ndarray | None = None

    def fit(
        self, x: np.ndarray, features: list[str], valid: np.ndarray | None = None
    ) -> Preprocessor:
        """Learn per-feature statistics from observed values of (training) patients.

        ``valid`` (N, L) marks the stay's steps; it matters only for the statistics of
        the time-since-observed channels (padding would otherwise count as time).
        """
        counts = (~np.isnan(x)).sum(axis=(0, 1))
        self.mean, std = observed_moments(x)
        self.std = checked_std(features, counts, std)
        self.features = list(features)
        if self.time_since_observed:
            valid = np.ones(x.shape[:2], dtype=bool) if valid is None else valid
            since = time_since_observed(x, valid, self.step)[valid]
            self.since_mean = since.mean(axis=0, dtype=np.float64)
            self.since_std = _safe_std(since.std(axis=0, dtype=np.float64))
        return self

    @property
    def output_features(self) -> list[str]:
        self._check_fitted()
        names = list(self.features)
        if self.missing_indicators:
            names += [f"{name}__observed" for name in self.features]
        if self.time_since_observed:
            names += [f"{name}__time_since_observed" for name in self.features]
        return names

    def transform(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(N, L, C) with NaN -> (N, L, C') float32 with no NaN; ``valid`` is (N, L)."""
        self._check_fitted()
        if x.shape[2] != len(self.features):
            raise UserError(
                f"expected {len(self.features)} features ({', '.join(self.features)}), got {x.shape[2]}"
            )
        observed = ~np.isnan(x)
        out = forward_fill(x, self.max_gap) if self.impute == "ffill" else x.copy()
        fallback = 0.0 if self.impute == "zero" else self.mean
        out = np.where(np.isnan(out), fallback, out)
        if self.standardize:
            out = (out - self.mean) / self.std
        parts = [out]
        if self.missing_indicators:
            parts.append(observed)
        if self.time_since_observed:
            since = time_since_observed(x, valid, self.step)
            if self.standardize:
                since = (since - self.since_mean) / self.since_std
            parts.append(since)
        out = np.concatenate(parts, axis=2) if len(parts) > 1 else out
        return np.where(valid[:, :, None], out, 0.0).astype(np.float32)

    def state(self) -> dict:
        self._check_fitted()
        return {
            "impute": self.impute,
            "standardize": self.standardize,
            "missing_indicators": self.missing_indicators,
            "max_gap": self.max_gap,
            "time_since_observed": self.time_since_observed,
            "step": self.step,
            "features": list(self.features),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "since_mean": None if self.since_mean is None else self.since_mean.tolist(),
            "since_std": None if self.since_std is None else self.since_std.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict) -> Preprocessor:
        obj = cls(
            state["impute"],
            state["standardize"],
            state["missing_indicators"],
            max_gap=state.get("max_gap"),
            time_since_observed=state.get("time_since_observed", False),
            step=state.get("step", 1.0),
        )
        obj.features = list(state["features"])
        obj.mean = np.asarray(state["mean"], dtype=np.float64)
        obj.std = np.asarray(state["std"], dtype=np.float64)
        if state.get("since_mean") is not None:
            obj.since_mean = np.asarray(state["since_mean"], dtype=np.float64)
            obj.since_std = np.asarray(state["since_std"], dtype=np.float64)
        return obj

    def _check_fitted(self) -> None:
        if self.features is None:
            raise RuntimeError("Preprocessor is not fitted; call fit() on training patients first")


def last_observed(x: np.ndarray) -> np.ndarray:
    """(N, L, C) int64: the step of each feature's latest observation at or before t, or -1."""
    steps = np.arange(x.shape[1])[None, :, None]
    last = np.where(~np.isnan(x), steps, -1)
    np.maximum.accumulate(last, axis=1, out=last)
    return last


def forward_fill(x: np.ndarray, max_gap: int | None = None) -> np.ndarray:
    """Carry each feature's last observed value forward along time (axis 1), vectorised.

    Only past steps are read. With ``max_gap`` a value is carried at most that many
    steps; later steps stay NaN (and get the fallback).
    """
    last = last_observed(x)
    filled = np.take_along_axis(x, np.maximum(last, 0), axis=1)
    stale = last < 0
    if max_gap is not None:
        stale |= np.arange(x.shape[1])[None, :, None] - last > max_gap
    return np.where(stale, np.nan, filled)


def time_since_observed(x: np.ndarray, valid: np.ndarray, step: float) -> np.ndarray:
    """(N, L, C) float32 time since each feature was last observed: steps times ``step``.

    Before a feature's first observation it is the time since the stay's first step plus
    one step, so the value depends only on the stay, never on the padding around it.
    """
    stay_start = np.where(valid.any(axis=1), valid.argmax(axis=1), 0)[:, None, None]
    last = np.maximum(last_observed(x), stay_start - 1)
    steps = np.arange(x.shape[1])[None, :, None]
    return ((steps - last) * step).astype(np.float32)


def observed_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C,) mean and standard deviation of each feature's observed values, in float64 one
    channel at a time (np.nanstd would round the deviations to float32): the streaming fit
    over a memory-mapped cohort (``patientcnn.data.mapped``) gives the same numbers."""
    channels = x.shape[-1]
    mean, std = np.zeros(channels), np.zeros(channels)
    for j in range(channels):
        values = x[..., j][~np.isnan(x[..., j])].astype(np.float64)
        if len(values):
            mean[j] = values.mean()
            std[j] = np.sqrt(((values - mean[j]) ** 2).mean())
    return mean, std


def checked_std(features: list[str], counts: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The standard deviations to divide by, after checking each feature's training values:
    one never observed is refused (nothing to standardise or learn from); one that takes a
    single value is kept (the checkpoint's features stay the table's) but named in a
    warning, since it is 0 for every patient after standardising and carries nothing."""
    empty = [name for name, n in zip(features, counts, strict=True) if n == 0]
    if empty:
        raise UserError(
            f"feature(s) {', '.join(empty)} have no observed value in the training patients; "
            "drop them with data.features=[...]"
        )
    constant = [name for name, s in zip(features, std, strict=True) if not s > STD_FLOOR]
    if constant:
        log.warning(
            "feature(s) %s take one value in every training patient: nothing to learn from "
            "(kept, as 0 after standardising); drop them with data.features=[...]",
            ", ".join(constant),
        )
    return _safe_std(std)


def _safe_std(std: np.ndarray) -> np.ndarray:
    return np.where(std > STD_FLOOR, std, 1.0).astype(np.float64)
