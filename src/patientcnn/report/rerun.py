"""The full report of a finished training run, written after the fact.

A sweep writes only a cheap report per trial (no baselines, no permutation importance,
fewer resamples: ``configs/hparams_search/optuna.yaml``), because 20 trials of the full
report cost more than the training. The trial that wins then gets the full report here:
its data config (the run's config.yaml) rebuilds the same split and preprocessing, its
checkpoint the same ensemble, and ``report_training_run`` writes what training would
have written with the full settings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from patientcnn.checkpoint import load_bundle
from patientcnn.config import configured
from patientcnn.errors import UserError
from patientcnn.report.training import (
    DEFAULTS,
    VALIDATION_PREDICTIONS,
    report_out_of_fold,
    report_training_run,
    test_subgroups,
)

log = logging.getLogger(__name__)


def report_finished_run(run_dir: Path, out_dir: Path, settings: dict | None = None) -> Path:
    """Write ``out_dir/report/`` for the run in ``run_dir`` with the report ``settings``
    (default: the full report of ``configs/train.yaml``, keeping the run's subgroups);
    return the report.html path."""
    run_dir = Path(run_dir)
    config_file, metrics_file = run_dir / "config.yaml", run_dir / "metrics.json"
    for needed in (config_file, metrics_file):
        if not needed.is_file():
            raise UserError(f"{run_dir}: not a finished training run (no {needed.name})")
    cfg = OmegaConf.load(config_file)
    run_report = OmegaConf.to_container(cfg.get("report") or {}, resolve=True)
    settings = {**DEFAULTS, "subgroups": run_report.get("subgroups", []), **(settings or {})}
    settings["enabled"] = True
    record = json.loads(metrics_file.read_text())
    if not any(k.startswith("test/") for k in record.get("metrics", {})):
        # the rows and the threshold are in the run folder: no need for the checkpoint
        threshold = float(record["threshold"]["value"])
        return _out_of_fold_report(run_dir, Path(out_dir), settings, threshold)
    bundle = load_bundle(record["checkpoint"])
    datamodule = configured(cfg.data, "data", _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    subgroups = test_subgroups(settings, datamodule)
    datamodule.select(np.arange(len(datamodule.y_dev)), None)
    report = report_training_run(
        settings, bundle.build_model(), datamodule, Path(out_dir), bundle.threshold, subgroups
    )
    return Path(report["report"])


def _out_of_fold_report(run_dir: Path, out_dir: Path, settings: dict, threshold: float) -> Path:
    """A run without test patients: its report is drawn from its out-of-fold rows."""
    import pandas as pd

    rows = run_dir / VALIDATION_PREDICTIONS
    if not rows.is_file():
        raise UserError(
            f"{run_dir}: the run has no test patients and no {VALIDATION_PREDICTIONS}, so "
            "there is nothing to report"
        )
    oof = pd.read_csv(rows)
    report = report_out_of_fold(
        settings, oof["label"].to_numpy(), oof["probability"].to_numpy(), out_dir, threshold
    )
    return Path(report["report"])
