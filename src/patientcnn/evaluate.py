"""External validation: the checkpoint alone scores a new labelled cohort with training's metrics.

The metrics are those of training (``classification_metrics``: AUROC, AUPRC, accuracy
and F1 at 0.5, Brier score, and the same weighted BCE loss), so a run on the training
run's own test patients reproduces its ``test/*`` numbers; sensitivity, specificity and
accuracy at the checkpoint's threshold are added. Patients without a single observed
value of the model's features are left out, as in ``predict`` (a warning lists them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from patientcnn.checkpoint import Bundle
from patientcnn.data.cohort import load_cohort
from patientcnn.errors import UserError
from patientcnn.inference import Scorer, unusable
from patientcnn.models.classifier import classification_metrics
from patientcnn.predict import check_input_columns, check_threshold, warn_skipped

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
    batch_size: int = 1024,
) -> Evaluation:
    """Score a labelled cohort (labels in a table, or a column of the measurements)."""
    scorer = Scorer.from_bundle(bundle, device=device, batch_size=batch_size)
    threshold = check_threshold(bundle.threshold if threshold is None else threshold)
    columns = scorer.columns
    label_col = label_col or columns["label_col"]
    check_input_columns(Path(measurements), scorer, expected=(label_col,))
    cohort = load_cohort(
        measurements,
        labels,
        id_col=columns["id_col"],
        time_col=columns["time_col"],
        label_col=label_col,
        features=scorer.features,
        grid=scorer.grid,
        positive_label=positive_label,
    )
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
    logits = torch.from_numpy(scorer.logits(arrays))
    target = torch.from_numpy(y)
    probabilities = torch.sigmoid(logits)
    metrics = training_metrics(logits, target, float(bundle.hparams.get("pos_weight", 1.0)))
    metrics |= threshold_metrics(probabilities.numpy(), y, threshold)
    return Evaluation(metrics, arrays.ids, y, probabilities.double().numpy(), threshold, skipped)


def training_metrics(logits: torch.Tensor, y: torch.Tensor, pos_weight: float) -> dict[str, float]:
    """Exactly what training logs for a split, without the split prefix."""
    metrics = classification_metrics("")
    metrics.update(torch.sigmoid(logits.float()), y.int())
    values = {k: float(v) for k, v in metrics.compute().items()}
    values["loss"] = float(
        F.binary_cross_entropy_with_logits(
            logits.float(), y.float(), pos_weight=torch.tensor(pos_weight)
        )
    )
    return values


def threshold_metrics(probabilities: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    predicted = probabilities >= threshold
    positives, negatives = y == 1, y == 0
    return {
        "sensitivity_at_threshold": float(predicted[positives].mean()),
        "specificity_at_threshold": float((~predicted[negatives]).mean()),
        "accuracy_at_threshold": float((predicted == positives).mean()),
    }
