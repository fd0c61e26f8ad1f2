"""Bootstrap intervals: weight-matrix scoring of all resamples against a scikit-learn loop."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from benchmarks._common import best_time, peak_mb
from patientcnn.report.bootstrap import bootstrap


def scikit_learn_loop(y: np.ndarray, prob: np.ndarray, n_resamples: int) -> None:
    """The textbook bootstrap: draw patients, call scikit-learn, repeat."""
    rng = np.random.default_rng(0)
    for _ in range(n_resamples):
        draw = rng.integers(0, len(y), len(y))
        if y[draw].min() == y[draw].max():
            continue
        roc_auc_score(y[draw], prob[draw])
        average_precision_score(y[draw], prob[draw])
        brier_score_loss(y[draw], prob[draw])


def run(quick: bool) -> list[dict]:
    n_patients, n_resamples = (450, 200) if quick else (450, 1000)  # the default test split
    rng = np.random.default_rng(0)
    y = (rng.random(n_patients) < 0.15).astype(int)
    prob = 1 / (1 + np.exp(-(2 * y + rng.normal(size=n_patients) - 2)))

    def vectorised() -> None:
        bootstrap(y, {"m": prob}, 0.5, n_resamples)

    rows = []
    for case, fn, repeat in (
        ("weighted, all resamples at once (patientcnn)", vectorised, 3),
        (
            "per-resample scikit-learn loop (3 metrics)",
            lambda: scikit_learn_loop(y, prob, n_resamples),
            1,
        ),
    ):
        seconds = best_time(fn, repeat=repeat)
        unit = f"resamples/s ({n_patients} patients)"
        rows.append(
            {"section": "bootstrap", "case": case, "value": n_resamples / seconds, "unit": unit}
        )
    rows[0]["peak_mb"] = peak_mb(vectorised)
    for row in rows:
        row["ratio"] = rows[0]["value"] / row["value"]  # how many times faster patientcnn is
    return rows
