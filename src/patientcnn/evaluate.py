"""External validation: the checkpoint alone scores a new labelled cohort with training's metrics.

The metrics are those of training (``patientcnn.metrics.point_metrics``: AUROC, AUPRC,
Brier score, log loss, and sensitivity, specificity, PPV, NPV, accuracy and F1 at the
checkpoint's threshold), so a run on the training run's own test patients reproduces
its ``test/*`` numbers. Patients without a single observed
value of the model's features are left out, as in ``predict`` (a warning lists them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patientcnn.checkpoint import Bundle
from patientcnn.data.cohort import load_cohort
from patientcnn.errors import UserError
from patientcnn.inference import (
    Scorer,
    check_input_columns,
    check_threshold,
    probabilities,
    unusable,
    warn_skipped,
)
from patientcnn.metrics import point_metrics

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Metrics plus the per-patient labels and probabilities they came from (for reports)."""

    metrics: dict[str, float]
    ids: np.ndarray
    labels: np.ndarray  # (N,) int 0/1
    probabilities: np.ndarray  # (N,) float64
    threshold: float
    skipped: list

    def record(self, checkpoint: str | Path, measurements: str | Path) -> dict:
        """What metrics.json holds."""
        return {
            "metrics": self.metrics,
            "threshold": self.threshold,
            "checkpoint": str(checkpoint),
            "cohort": {
                "measurements": str(measurements),
                "patients": int(len(self.labels)),
                "prevalence": float(self.labels.mean()),
                "skipped_patients": len(self.skipped),
            },
        }


def evaluate_cohort(
    bundle: Bundle,
    measurements: str | Path,
    labels: str | Path | None,
    label_col: str | None = None,
    positive_label: object | None = None,
    threshold: float | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    static: str | Path | None = None,
) -> Evaluation:
    """Score a labelled cohort (labels in a table, or a column of the measurements);
    ``static``: its static covariate table, required exactly when the model was trained
    with static covariates."""
    scorer = Scorer.from_bundle(bundle, device=device, batch_size=batch_size)
    threshold = check_threshold(bundle.threshold if threshold is None else threshold)
    label_col = label_col or scorer.columns["label_col"]
    check_input_columns(Path(measurements), scorer, expected=(label_col,))
    static_table = scorer.read_static(static)
    spec = scorer.table_spec(label_col=label_col, positive_label=positive_label)
    cohort = load_cohort(measurements, labels, spec)
    empty = unusable(cohort.arrays)
    skipped = cohort.arrays.ids[empty].tolist()
    if skipped:
        warn_skipped(skipped, Path(measurements), "are left out of the metrics")
    keep = np.flatnonzero(~empty)
    arrays, y = cohort.arrays.subset(keep), cohort.y[keep]
    if len(np.unique(y)) < 2:
        raise UserError(
            f"{measurements}: the evaluated patients all have the same outcome; AUROC and "
            "AUPRC need patients of both outcomes"
        )
    covariates = scorer.static_inputs(static_table, arrays.ids, static)
    prob = probabilities(scorer.logits(arrays, covariates))
    metrics = point_metrics(y, prob, threshold)
    return Evaluation(metrics, arrays.ids, y, prob, threshold, skipped)
