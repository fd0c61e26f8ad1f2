"""Turning ensemble logits into probabilities that mean what they say.

A network trained to a low training loss is over-confident on new patients, and an
ensemble's mean logit is not a calibrated log-odds either. The calibration maps the
logit z to ``scale * z + shift`` before the sigmoid, fitted on logits of patients the
network did not train on (the out-of-fold or validation patients):

- ``platt``: scale and shift (Platt 1999, with his smoothed targets, so that a few
  perfectly separated validation patients do not send the scale to infinity);
- ``temperature``: scale only (Guo et al. 2017), which never moves the 0 logit;
- ``isotonic``: the best non-decreasing step function of the logit (Zadrozny and Elkan
  2002), stored as knots and applied as the straight lines between them (flat beyond the
  ends), so that exported graphs need only clamps and sums. It can follow any monotone
  miscalibration but needs more validation patients than the two-parameter maps;
- ``none``: scale 1, shift 0.

The scale is kept >= 0: a network whose validation logits run against the outcome has
shown no skill, and then predicts the validation prevalence for everyone instead of
inverting its ranking. Either way the ranking (AUROC) of a positive scale is unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from patientcnn.errors import UserError

METHODS = ("platt", "temperature", "isotonic", "none")
PROB_FLOOR = 1e-4  # isotonic probabilities are kept in [PROB_FLOOR, 1 - PROB_FLOOR]
MAX_SCALE = 100.0


def fit_calibration(logits: np.ndarray, y: np.ndarray, method: str = "platt") -> dict:
    """``{"method", "scale", "shift"}`` fitted on held-out ``logits`` and 0/1 outcomes ``y``."""
    if method not in METHODS:
        raise UserError(f"calibration must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "none" or len(y) == 0:
        return {"method": method, "scale": 1.0, "shift": 0.0}
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=PROB_FLOOR, y_max=1 - PROB_FLOOR, out_of_bounds="clip")
        iso.fit(z, y.astype(np.float64))
        knots = [iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist()]
        return {"method": method, "scale": 1.0, "shift": 0.0, "knots": knots}
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    target = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    prior = float(np.log((n_pos + 1) / (n_neg + 1)))
    scale, shift = logistic_fit(
        z,
        target,
        start=(1.0, prior if method == "platt" else 0.0),
        bounds=[(0.0, MAX_SCALE), (None, None) if method == "platt" else (0.0, 0.0)],
    )
    return {"method": method, "scale": scale, "shift": shift}


def logistic_fit(
    z: np.ndarray, target: np.ndarray, start=(1.0, 0.0), bounds=None
) -> tuple[float, float]:
    """(a, b) minimising the cross-entropy of ``sigmoid(a * z + b)`` against ``target``
    (0/1 outcomes, or Platt's soft targets), within ``bounds`` (L-BFGS-B)."""
    z = np.asarray(z, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        s = params[0] * z + params[1]
        p = 1.0 / (1.0 + np.exp(-s))
        # cross-entropy written stably: log(1 + e^s) - t * s
        value = np.mean(np.logaddexp(0.0, s) - target * s)
        grad_s = (p - target) / len(z)
        return float(value), np.array([np.sum(grad_s * z), np.sum(grad_s)])

    start = np.asarray(start, dtype=np.float64)
    result = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds)
    return float(result.x[0]), float(result.x[1])


def calibrated(logits: np.ndarray, calibration: dict) -> np.ndarray:
    """Calibrated logits: ``scale * logits + shift``, or the isotonic knots' line through
    the logit, as a logit. ``models.ensemble.EnsembleNet`` computes the same in torch."""
    z = np.asarray(logits, dtype=np.float64)
    if calibration.get("knots"):
        knots_x, knots_p = calibration["knots"]
        p = np.interp(z, knots_x, knots_p)
        return np.log(p) - np.log1p(-p)
    return calibration["scale"] * z + calibration["shift"]


def describe(calibration: dict) -> str:
    if calibration.get("knots"):
        return f"isotonic, {len(calibration['knots'][0])} knots"
    return f"probability = sigmoid({calibration['scale']:.3f} x logit {calibration['shift']:+.3f})"
