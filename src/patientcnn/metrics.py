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
}


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
        }


def point_metrics(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The metrics of ``METRICS`` plus F1 and log loss for one set of patients; NaN if undefined."""
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
    return values


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
