"""Which signals and which hours drive the prediction: permutation importance.

Shuffling one feature (or one block of time steps) across patients keeps its
distribution but breaks its link to the outcome; the drop in AUROC on the validation
patients is how much the model relies on it. Unlike gradients this measures the model's
actual ranking of patients, in the unit clinicians already read (AUROC), and it works
for any model given as a ``predict(x, valid) -> probabilities`` function.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

from patientcnn.errors import UserError

Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]


DERIVED_SUFFIXES = ("__time_since_observed", "__observed")  # channels preprocess adds


def channel_groups(channels: list[str]) -> dict[str, list[int]]:
    """Feature name -> its channel indices; the missingness channels a feature gets from
    preprocessing (``__observed``, ``__time_since_observed``) go with it."""
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(channels):
        for suffix in DERIVED_SUFFIXES:
            if name.endswith(suffix):
                name = name.removesuffix(suffix)
                break
        groups.setdefault(name, []).append(index)
    return groups


def time_blocks(length: int, n_blocks: int) -> list[tuple[int, int]]:
    """Split ``length`` steps into at most ``n_blocks`` contiguous [start, stop) blocks."""
    edges = np.unique(np.linspace(0, length, min(n_blocks, length) + 1).round().astype(int))
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def permutation_importance(
    predict: Predict,
    x: np.ndarray,
    valid: np.ndarray,
    y: np.ndarray,
    channels: list[str],
    n_blocks: int = 6,
    repeats: int = 2,
    seed: int = 0,
) -> dict:
    """AUROC drop when each feature, and each block of time steps, is shuffled across patients.

    ``x`` is (N, C, L) as the model takes it. Returns plain types (for metrics.json):
    ``{"metric", "baseline", "repeats", "features": {name: {"mean", "sd"}},
    "time_blocks": [{"steps": "first-last", "mean", "sd"}, ...]}`` in time order.
    """
    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        raise UserError("permutation importance needs both outcomes among the validation patients")
    if repeats < 1 or n_blocks < 1:
        raise UserError("report.importance_repeats and report.time_blocks must be at least 1")
    rng = np.random.default_rng(seed)
    baseline = float(roc_auc_score(y, predict(x, valid)))
    targets = {
        "features": {name: (idx, slice(None)) for name, idx in channel_groups(channels).items()},
        "time_blocks": {
            f"{start}-{stop - 1}": (slice(None), slice(start, stop))
            for start, stop in time_blocks(x.shape[2], n_blocks)
        },
    }
    drops: dict[str, dict[str, list[float]]] = {kind: {} for kind in targets}
    for _ in range(repeats):
        shuffled = x[rng.permutation(len(x))]
        for kind, parts in targets.items():
            for name, (chan, steps) in parts.items():
                permuted = x.copy()
                permuted[:, chan, steps] = shuffled[:, chan, steps]
                score = roc_auc_score(y, predict(permuted, valid))
                drops[kind].setdefault(name, []).append(baseline - float(score))
    summary = {
        name: {"mean": float(np.mean(values)), "sd": float(np.std(values))}
        for name, values in drops["features"].items()
    }
    blocks = [
        {"steps": name, "mean": float(np.mean(values)), "sd": float(np.std(values))}
        for name, values in drops["time_blocks"].items()
    ]
    return {
        "metric": "AUROC",
        "baseline": baseline,
        "repeats": int(repeats),
        "features": summary,
        "time_blocks": blocks,
    }
