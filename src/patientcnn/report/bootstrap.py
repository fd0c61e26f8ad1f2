"""Clinical metrics with bootstrap confidence intervals, vectorised over resamples.

A resample draws patients with replacement; drawing patient ``i`` k times is the same as
giving it weight k. So every metric is written once for a matrix of patient weights
(resamples x patients): the point estimate is the row of ones, and 1000 resamples are one
pass of numpy instead of 1000 calls into scikit-learn. All models are scored on the
same resamples, so their intervals (and the paired differences) are comparable.
"""

from __future__ import annotations

import numpy as np

from patientcnn.errors import UserError
from patientcnn.metrics import METRICS, weighted_metrics  # noqa: F401  (re-exported)

# resamples x patients cells scored at once; bounds memory on large external cohorts
_CHUNK_CELLS = 4_000_000


def resample_weights(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(R, n) counts of how often each patient is drawn in each resample."""
    draws = rng.integers(0, n, size=(n_resamples, n))
    offsets = (np.arange(n_resamples) * n)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=n_resamples * n).reshape(n_resamples, n)


def bootstrap(
    y: np.ndarray,
    probs: dict[str, np.ndarray],
    threshold: float = 0.5,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, dict[str, float]]]:
    """Point estimate and percentile interval of each metric, for each model in ``probs``.

    Returns ``{model: {metric: {"value", "low", "high"}}}``; the first model is the
    reference, and each other model also gets ``auroc_difference`` (its AUROC minus the
    reference's, paired on the same resamples). Resamples in which a metric is undefined
    (no positive patient drawn, no patient above the threshold) are left out of that
    metric's interval; a metric undefined on the data itself is reported as None.
    """
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0 or not np.isin(y, (0, 1)).all():
        raise UserError("the report needs a non-empty vector of 0/1 labels")
    if not 0 < level < 1:
        raise UserError(f"report.level must lie between 0 and 1, got {level}")
    if n_resamples < 1:
        raise UserError(f"report.resamples must be at least 1, got {n_resamples}")
    probs = {name: np.asarray(p, dtype=np.float64) for name, p in probs.items()}
    for name, p in probs.items():
        if p.shape != y.shape or not np.isfinite(p).all():
            raise UserError(f"model {name}: expected {len(y)} finite probabilities")

    n = len(y)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n)
    draws: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in probs}
    for start in range(0, n_resamples, chunk):
        weights = resample_weights(n, min(chunk, n_resamples - start), rng).astype(np.float64)
        for name, p in probs.items():
            draws[name].append(weighted_metrics(y, p, weights, threshold))
    ones = np.ones((1, n))
    tail = 100 * (1 - level) / 2
    result: dict[str, dict[str, dict[str, float]]] = {}
    reference = None
    for name, p in probs.items():
        point = weighted_metrics(y, p, ones, threshold)
        samples = {k: np.concatenate([d[k] for d in draws[name]]) for k in METRICS}
        if reference is None:
            reference = (point["auroc"], samples["auroc"])
        else:
            point["auroc_difference"] = point["auroc"] - reference[0]
            samples["auroc_difference"] = samples["auroc"] - reference[1]
        result[name] = {k: percentile_interval(point[k][0], samples[k], tail) for k in samples}
    return result


def percentile_interval(value: float, samples: np.ndarray, tail: float) -> dict[str, float | None]:
    samples = samples[np.isfinite(samples)]
    if not np.isfinite(value) or len(samples) == 0:
        return {"value": None, "low": None, "high": None}
    low, high = np.percentile(samples, [tail, 100 - tail])
    return {"value": float(value), "low": float(low), "high": float(high)}


def format_interval(ci: dict[str, float | None], digits: int = 3) -> str:
    """'0.812 (0.774 to 0.851)', or 'n/a' for a metric undefined on these patients."""
    if ci["value"] is None:
        return "n/a"
    return f"{ci['value']:.{digits}f} ({ci['low']:.{digits}f} to {ci['high']:.{digits}f})"
