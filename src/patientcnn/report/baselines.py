"""Two classical baselines the CNN has to beat, on the same patients and the same input.

Both see the CNN's preprocessed tensors (imputed and standardised with statistics from
the training patients), reduced to six numbers per channel over each patient's real
steps: mean, std, min, max, last value and least-squares slope per step. They are fitted
on the training patients with the CNN's positive-class weight, so scores at a threshold
are comparable; if the CNN does not beat them, the convolution is not earning its keep.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from patientcnn.models.summary import statistics


def summary_statistics(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N, C, L) values and (N, L) real-step mask -> (N, C * 6) per-channel statistics:
    the ``summary`` network's (``patientcnn.models.summary.statistics``), one definition."""
    with torch.no_grad():
        stats = statistics(torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(valid))
    return stats.numpy()


def fit_baselines(
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    evaluate: dict[str, tuple[np.ndarray, np.ndarray]],
    pos_weight: float,
    seed: int = 0,
    static: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Fit both baselines on ``train`` = (x, valid, y); return {model: {split: probabilities}}.

    ``static``: the encoded static covariates of ``"train"`` and of each evaluated split,
    appended to the summary statistics (the CNN reads them too)."""
    static = static or {}
    x, valid, y = train
    y = np.asarray(y).astype(int)
    features = _with_static(summary_statistics(x, valid), static.get("train"))
    weight = np.where(y == 1, pos_weight, 1.0)
    models = {
        "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "gradient_boosting": HistGradientBoostingClassifier(
            max_iter=150, learning_rate=0.05, max_leaf_nodes=15, random_state=seed
        ),
    }
    fit_args = {
        "logistic_regression": {"logisticregression__sample_weight": weight},
        "gradient_boosting": {"sample_weight": weight},
    }
    inputs = {
        split: _with_static(summary_statistics(xs, vs), static.get(split))
        for split, (xs, vs) in evaluate.items()
    }
    out: dict[str, dict[str, np.ndarray]] = {}
    # One thread: on a few thousand rows OpenMP threads gain nothing, and on a busy
    # machine they spin against each other (40x slower on 2 shared cores, measured).
    with threadpool_limits(limits=1):
        for name, model in models.items():
            model.fit(features, y, **fit_args[name])
            out[name] = {split: model.predict_proba(f)[:, 1] for split, f in inputs.items()}
    return out


def _with_static(features: np.ndarray, static: np.ndarray | None) -> np.ndarray:
    if static is None or not static.shape[1]:
        return features
    return np.hstack([features, np.asarray(static, dtype=np.float64)])
