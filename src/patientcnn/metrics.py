"""Every metric, defined once: training curves, test figures, bootstrap intervals, sweeps.

``weighted_metrics`` is the definition: each metric written for a matrix of patient
weights (resamples x patients), so the point estimate (one row of ones) and 1000
bootstrap resamples are the same code. ``point_metrics`` is that row as plain floats,
plus F1 and the log loss. ``classification_metrics`` is the torchmetrics collection the
LightningModule logs while it trains (the same definitions, accumulated over batches).
"""

from __future__ import annotations

import numpy as np

# name -> (label shown to readers, higher is better)
METRICS = {
    "auroc": ("AUROC", True),
    "auprc": ("AUPRC", True),
    "brier": ("Brier score", False),
    "sensitivity": ("Sensitivity", True),
    "specificity": ("Specificity", True),
    "ppv": ("PPV", True),
    "npv": ("NPV", True),
    "accuracy": ("Accuracy", True),
    "ece": ("ECE (10 bins)", False),
}
ECE_BINS = 10


def weighted_metrics(
    y: np.ndarray, prob: np.ndarray, weights: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """Every metric of ``METRICS`` for each row of ``weights`` (R, N); NaN where undefined.

    AUROC counts tied scores as half (the Mann-Whitney statistic); AUPRC is average
    precision with tied scores forming one threshold, as scikit-learn and torchmetrics do.
    """
    y = y.astype(bool)
    w_pos = weights * y
    w_neg = weights * ~y
    n_pos, n_neg = w_pos.sum(axis=1), w_neg.sum(axis=1)
    total = n_pos + n_neg

    order = np.argsort(-prob, kind="stable")
    sorted_prob = prob[order]
    starts = np.flatnonzero(np.r_[True, sorted_prob[1:] != sorted_prob[:-1]])
    tp = np.cumsum(np.add.reduceat(w_pos[:, order], starts, axis=1), axis=1)
    fp_group = np.add.reduceat(w_neg[:, order], starts, axis=1)
    fp = np.cumsum(fp_group, axis=1)
    tp_group = np.diff(tp, axis=1, prepend=0.0)
    # negatives scored strictly lower than each tie group, plus half of the tied ones
    neg_below = n_neg[:, None] - fp + 0.5 * fp_group
    pred = prob >= threshold
    tp_t, fp_t = (w_pos * pred).sum(axis=1), (w_neg * pred).sum(axis=1)
    tn_t, fn_t = n_neg - fp_t, n_pos - tp_t
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        return {
            "auroc": (tp_group * neg_below).sum(axis=1) / (n_pos * n_neg),
            "auprc": np.where(n_pos > 0, (tp_group * precision).sum(axis=1) / n_pos, np.nan),
            "brier": (weights * (prob - y) ** 2).sum(axis=1) / total,
            "sensitivity": tp_t / n_pos,
            "specificity": tn_t / n_neg,
            "ppv": tp_t / (tp_t + fp_t),
            "npv": tn_t / (tn_t + fn_t),
            "accuracy": (tp_t + tn_t) / total,
            "ece": expected_calibration_error(y, prob, weights),
        }


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row of ``weights`` (R, N): the patient-weighted mean over ``ECE_BINS`` equal-width
    bins of predicted risk of |mean predicted risk - observed rate|."""
    which = np.minimum((np.asarray(prob) * ECE_BINS).astype(int), ECE_BINS - 1)
    gap = weights * (np.asarray(prob, dtype=np.float64) - np.asarray(y, dtype=np.float64))
    per_bin = np.stack([gap[:, which == b].sum(axis=1) for b in range(ECE_BINS)], axis=1)
    return np.abs(per_bin).sum(axis=1) / weights.sum(axis=1)


def point_metrics(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The metrics of ``METRICS`` plus F1, log loss and ``calibration_metrics`` for one set
    of patients; NaN where undefined."""
    y = np.asarray(y).astype(int)
    prob = np.asarray(prob, dtype=np.float64)
    values = {
        k: float(v[0])
        for k, v in weighted_metrics(y, prob, np.ones((1, len(y))), threshold).items()
    }
    sens, ppv = values["sensitivity"], values["ppv"]
    values["f1"] = 2 * sens * ppv / (sens + ppv) if sens + ppv > 0 else 0.0
    clipped = np.clip(prob, 1e-7, 1 - 1e-7)
    values["loss"] = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))
    return values | calibration_metrics(y, prob)


def logit_log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of sigmoid(logits) against 0/1 outcomes, computed from the logits
    (stable far beyond the probabilities' float precision)."""
    z = np.asarray(logits, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - np.asarray(y, dtype=np.float64) * z))


def calibration_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Does a predicted 30 % mean 30 %? Three numbers, NaN where undefined.

    - ``ece``: expected calibration error (``expected_calibration_error``);
    - ``calibration_slope`` and ``calibration_intercept``: the logistic regression of the
      outcome on logit(predicted risk); 1 and 0 when calibrated, a slope below 1 means
      over-confident risks. Undefined with one outcome only, or when the risks separate
      the outcomes perfectly (the slope then runs to infinity).
    """
    from patientcnn.calibration import logistic_fit

    y = np.asarray(y).astype(np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    ece = float(expected_calibration_error(y, prob, np.ones((1, len(y))))[0]) if len(y) else np.nan
    slope = intercept = float("nan")
    z = np.log(np.clip(prob, 1e-7, 1 - 1e-7) / np.clip(1 - prob, 1e-7, 1 - 1e-7))
    pos, neg = z[y == 1], z[y == 0]
    separated = len(pos) and len(neg) and (pos.min() > neg.max() or pos.max() < neg.min())
    if len(pos) and len(neg) and not separated:
        slope, intercept = logistic_fit(z, y)
    return {"ece": ece, "calibration_slope": slope, "calibration_intercept": intercept}


def classification_metrics(prefix: str):
    """AUROC, AUPRC, accuracy and F1 at 0.5, and the Brier score, accumulated over batches."""
    from torchmetrics import MeanSquaredError, MetricCollection
    from torchmetrics.classification import (
        BinaryAccuracy,
        BinaryAUROC,
        BinaryAveragePrecision,
        BinaryF1Score,
    )

    return MetricCollection(
        {
            "auroc": BinaryAUROC(),
            "auprc": BinaryAveragePrecision(),
            "accuracy": BinaryAccuracy(),
            "f1": BinaryF1Score(),
            "brier": MeanSquaredError(),
        },
        prefix=prefix,
    )
