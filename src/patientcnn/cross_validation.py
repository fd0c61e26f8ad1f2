"""K-fold cross-validation: one fit per fold, the mean metrics as the sweep's objective.

With a few hundred patients one validation split is noisy enough that a sweep chases the
noise; the mean over K patient-level folds is steadier. The test patients are the same
for every fold, so the per-fold test metrics are comparable.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, open_dict

from patientcnn.files import atomic_write, write_json

log = logging.getLogger(__name__)


def cross_validate(cfg: DictConfig, fit: Callable[[DictConfig], dict[str, float]]) -> dict:
    """Run ``fit`` on each of ``cfg.data.cv_folds`` folds in ``<output_dir>/fold_<i>``.

    Writes ``cv_folds.csv`` (one row per fold, plus mean and std) and ``metrics.json``
    (the mean metrics and the per-fold ones) to the run directory; returns the means.
    """
    output_dir = Path(cfg.paths.output_dir)
    folds = int(cfg.data.cv_folds)
    rows = []
    for fold in range(folds):
        fold_cfg = copy.deepcopy(cfg)
        with open_dict(fold_cfg):
            fold_cfg.paths.output_dir = str(output_dir / f"fold_{fold}")
            fold_cfg.data.fold = fold
        log.info("cross-validation fold %d of %d", fold + 1, folds)
        rows.append({"fold": fold, **fit(fold_cfg)})
    table = pd.DataFrame(rows).set_index("fold")
    mean, std = table.mean(), table.std(ddof=1)
    summary = pd.concat([table, mean.to_frame("mean").T, std.to_frame("std").T])
    summary.index.name = "fold"
    atomic_write(output_dir / "cv_folds.csv", lambda tmp: summary.to_csv(tmp))
    metrics = {k: float(v) for k, v in mean.items()}
    record = {
        "metrics": metrics,
        "std": {k: float(v) for k, v in std.items()},
        "cv_folds": folds,
        "folds": [{k: float(v) for k, v in row.items()} for row in rows],
    }
    write_json(output_dir / "metrics.json", record)
    log.info(
        "cross-validation over %d folds: %s",
        folds,
        ", ".join(f"{k}={mean[k]:.4f}±{std[k]:.4f}" for k in sorted(mean.index) if "auroc" in k),
    )
    return metrics
