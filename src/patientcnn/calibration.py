"""Turning ensemble logits into probabilities that mean what they say.

A network trained to a low training loss is over-confident on new patients, and an
ensemble's mean logit is not a calibrated log-odds either. The calibration maps the
logit z to ``scale * z + shift`` before the sigmoid, fitted on logits of patients the
network did not train on (the out-of-fold or validation patients):

- ``platt``: scale and shift (Platt 1999, with his smoothed targets, so that a few
  perfectly separated validation patients do not send the scale to infinity);
- ``temperature``: scale only (Guo et al. 2017), which never moves the 0 logit;
- ``none``: scale 1, shift 0.

The scale is kept >= 0: a network whose validation logits run against the outcome has
shown no skill, and then predicts the validation prevalence for everyone instead of
inverting its ranking. Either way the ranking (AUROC) of a positive scale is unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from patientcnn.errors import UserError

METHODS = ("platt", "temperature", "none")
MAX_SCALE = 100.0


def fit_calibration(logits: np.ndarray, y: np.ndarray, method: str = "platt") -> dict:
    """``{"method", "scale", "shift"}`` fitted on held-out ``logits`` and 0/1 outcomes ``y``."""
    if method not in METHODS:
        raise UserError(f"calibration must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "none" or len(y) == 0:
        return {"method": method, "scale": 1.0, "shift": 0.0}
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    target = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        scale, shift = params[0], params[1] if method == "platt" else 0.0
        s = scale * z + shift
        p = 1.0 / (1.0 + np.exp(-s))
        # cross-entropy with soft targets, written stably: log(1 + e^s) - t * s
        value = np.mean(np.logaddexp(0.0, s) - target * s)
        grad_s = (p - target) / len(z)
        grad = np.array([np.sum(grad_s * z), np.sum(grad_s) if method == "platt" else 0.0])
        return float(value), grad

    prior = float(np.log((n_pos + 1) / (n_neg + 1)))
    start = np.array([1.0, prior if method == "platt" else 0.0])
    bounds = [(0.0, MAX_SCALE), (None, None) if method == "platt" else (0.0, 0.0)]
    result = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds)
    scale, shift = float(result.x[0]), float(result.x[1]) if method == "platt" else 0.0
    return {"method": method, "scale": scale, "shift": shift}


def calibrated(logits: np.ndarray, calibration: dict) -> np.ndarray:
    """Calibrated logits: ``scale * logits + shift``."""
    return calibration["scale"] * np.asarray(logits) + calibration["shift"]
