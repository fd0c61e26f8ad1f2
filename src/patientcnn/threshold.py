"""Choosing the decision threshold on validation patients, never on test patients.

``fixed`` keeps a given value (0.5 by default); ``youden`` maximises sensitivity +
specificity - 1; ``sensitivity`` takes the highest threshold whose sensitivity reaches
a target (for screening, where missing a positive costs most).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

from patientcnn.errors import UserError

RULES = ("fixed", "youden", "sensitivity")


def choose_threshold(
    y: np.ndarray,
    probabilities: np.ndarray,
    rule: str = "fixed",
    value: float = 0.5,
    sensitivity: float = 0.9,
) -> float:
    """The threshold on ``probabilities`` that ``rule`` picks for labels ``y``."""
    if rule not in RULES:
        raise UserError(f"threshold.rule must be one of {', '.join(RULES)}, got {rule!r}")
    if rule == "fixed":
        if not 0.0 <= float(value) <= 1.0:
            raise UserError(f"threshold.value must be between 0 and 1, got {value}")
        return float(value)
    if len(np.unique(y)) < 2:
        raise UserError(
            f"threshold.rule={rule} needs validation patients of both outcomes; use rule=fixed"
        )
    fpr, tpr, thresholds = roc_curve(y, probabilities, drop_intermediate=False)
    finite = np.isfinite(thresholds)  # the first threshold is +inf: nobody positive
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if rule == "youden":
        return float(thresholds[np.argmax(tpr - fpr)])
    if not 0.0 < float(sensitivity) <= 1.0:
        raise UserError(f"threshold.sensitivity must be in (0, 1], got {sensitivity}")
    # thresholds fall and sensitivity rises along the curve: the first that reaches it
    return float(thresholds[np.argmax(tpr >= float(sensitivity) - 1e-12)])
