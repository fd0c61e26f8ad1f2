"""The report of a training run: CNN, baselines and importance on the run's own split."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from patientcnn.errors import UserError
from patientcnn.inference import batched_logits, probabilities
from patientcnn.report.baselines import fit_baselines
from patientcnn.report.bootstrap import weighted_metrics
from patientcnn.report.build import write_report
from patientcnn.report.importance import Predict, permutation_importance
from patientcnn.report.subgroups import subgroups_from

log = logging.getLogger(__name__)

# a training run's out-of-fold rows (train.py writes it; the report of a run without test
# patients is drawn from it)
VALIDATION_PREDICTIONS = "validation_predictions.csv"
DEFAULTS = {
    "enabled": True,
    "resamples": 1000,
    "level": 0.95,
    "seed": 0,
    "baselines": True,
    "importance": True,
    "importance_repeats": 2,
    "time_blocks": 6,
    "subgroups": [],
    "explanations": True,
    "explanation_patients": 200,
}


def report_settings(settings: Mapping | None) -> dict:
    """The ``report`` config with its defaults; unknown keys are an error."""
    cfg = {**DEFAULTS, **(settings or {})}
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise UserError(f"unknown report setting(s) {unknown}; known: {sorted(DEFAULTS)}")
    return cfg


def test_subgroups(settings: Mapping | None, datamodule) -> dict[str, np.ndarray] | None:
    """``report.subgroups`` read for the test patients from the static covariate table or
    the per-patient table that holds their labels (the labels table, or the
    measurements), before any training, so a misspelt column stops the run at once. None:
    no subgroups asked for, or no report."""
    cfg = report_settings(settings)
    columns = list(cfg["subgroups"] or [])
    if not (cfg["enabled"] and columns):
        return None
    if datamodule.test_measurements is not None:
        source = datamodule.test_labels or datamodule.test_measurements
        static = datamodule.test_static or datamodule.static
    else:
        source = datamodule.labels or datamodule.measurements
        static = datamodule.static
    return subgroups_from([static, source], datamodule.spec.id_col, columns, datamodule.test_ids)


def report_training_run(
    settings: Mapping | None,
    model: torch.nn.Module,
    datamodule,
    run_dir: Path,
    threshold: float = 0.5,
    subgroups: dict[str, np.ndarray] | None = None,
) -> dict:
    """Write ``run_dir/report/`` for the trained model; return the keys to add to metrics.json.

    ``model(x, valid)`` returns the calibrated logit (the ensemble of the bundle). The
    baselines are fitted on the datamodule's training patients (every development
    patient, as the ensemble used them all) and, like the permutation importance, scored
    on the test patients, which nothing was fitted on.
    """
    cfg = report_settings(settings)
    if not cfg["enabled"]:
        return {}
    split = {
        name: [t.cpu().numpy() for t in datamodule.tensors[name]] for name in datamodule.tensors
    }
    x_test, valid_test, y_test, static_test = split["test"]
    static_test = static_test if static_test.shape[1] else None
    predict = predictor(model, static=static_test)  # the test patients' covariates, in order
    record: dict = {}
    extra = {}
    if cfg["baselines"]:
        pos_weight = float(getattr(model, "hparams", {}).get("pos_weight", 1.0))
        x, valid, y, static = split["train"]
        probs = fit_baselines(
            (x, valid, y),
            {"test": (x_test, valid_test)},
            pos_weight,
            cfg["seed"],
            static={"train": static, "test": split["test"][3]},
        )
        record["baselines"] = {
            name: _point_metrics({s: split[s][2] for s in by_split}, by_split, threshold)
            for name, by_split in probs.items()
        }
        extra = {name: by_split["test"] for name, by_split in probs.items()}
    importance = None
    if cfg["importance"] and len(np.unique(split["test"][2])) < 2:
        log.warning("permutation importance skipped: the test patients share one outcome")
    elif cfg["importance"]:
        importance = permutation_importance(
            predict,
            x_test,
            valid_test,
            y_test,
            channels=list(datamodule.preprocessor.output_features),
            n_blocks=cfg["time_blocks"],
            repeats=cfg["importance_repeats"],
            seed=cfg["seed"],
        )
        record["importance"] = importance
    explanations = None
    if cfg["explanations"]:
        from patientcnn.explain import attribution_summary

        explanations = attribution_summary(
            model,
            x_test,
            valid_test,
            y_test,
            predict(x_test, valid_test),
            threshold,
            list(datamodule.preprocessor.output_features),
            np.asarray(datamodule.test_ids),
            cfg["explanation_patients"],
            cfg["seed"],
            static=static_test,
        )
    grid = datamodule.spec.grid
    folder = Path(run_dir) / "report"
    intervals = write_report(
        folder,
        y_test,
        predict(x_test, valid_test),
        threshold,
        title="Evaluation report: test patients of this training run",
        extra_models=extra,
        importance=importance,
        time_label=f"time step ({grid.align}-aligned; 1 step = {grid.step:g} time "
        f"unit{'' if grid.step == 1 else 's'})",
        n_resamples=cfg["resamples"],
        seed=cfg["seed"],
        level=cfg["level"],
        notes=(
            "Baselines: logistic regression and gradient boosting on per-feature mean, std, "
            "min, max, last value and slope"
            + (" and the static covariates" if static_test is not None else "")
            + ", fitted on the same training patients with the same preprocessing and "
            "class weight as the CNN.",
        )
        if extra
        else (),
        subgroups=subgroups,
        explanations=explanations,
    )
    if "subgroups" in intervals:
        record["subgroups"] = intervals.pop("subgroups")
    record["confidence_intervals"] = intervals
    record["report"] = str(folder / "report.html")
    log.info("evaluation report: %s", folder / "report.html")
    return record


def report_out_of_fold(
    settings: Mapping | None, y: np.ndarray, prob: np.ndarray, run_dir: Path, threshold: float
) -> dict:
    """Write ``run_dir/report/`` from the out-of-fold probabilities of a run without test
    patients (a cohort under 1,000 trains on every patient); return the keys to add to
    metrics.json.

    Every patient was scored by the networks and partners that did not train on them, so
    the curves, the calibration and the intervals are honest; the final ensemble itself
    has no held-out patients, so the parts that need it (baselines, permutation
    importance, attributions, subgroups) are left out and the page says so.
    """
    cfg = report_settings(settings)
    if not cfg["enabled"]:
        return {}
    folder = Path(run_dir) / "report"
    intervals = write_report(
        folder,
        y,
        prob,
        threshold,
        title="Evaluation report: out-of-fold predictions of this training run",
        n_resamples=cfg["resamples"],
        seed=cfg["seed"],
        level=cfg["level"],
        patients="out-of-fold patients",
        notes=(
            "No test patients: each patient here was scored by the networks and "
            f"partners that did not train on them ({VALIDATION_PREDICTIONS} has the rows). "
            "Baselines, permutation importance, attributions and subgroups need patients "
            "the final ensemble never saw: pass your own test table "
            "(data.test_measurements=... data.test_labels=...) or hold some out "
            "(data.split.test=0.2), or score another cohort with scripts/evaluate.py.",
        ),
    )
    log.info("evaluation report (out of fold): %s", folder / "report.html")
    return {"confidence_intervals": intervals, "report": str(folder / "report.html")}


def predictor(
    model: torch.nn.Module, batch_size: int | str = "auto", static: np.ndarray | None = None
) -> Predict:
    """``model(x, valid[, static]) -> logits`` as a numpy function of ``(x, valid)``
    returning probabilities; ``static``: the (N, S) covariates of the patients it is
    called with (the same patients in the same order: shuffling the series between
    patients, as permutation importance does, keeps each patient's covariates)."""
    model.eval()
    device = next(model.parameters()).device
    covariates = torch.as_tensor(static) if static is not None else None

    def predict(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        logits = batched_logits(
            model, torch.as_tensor(x), torch.as_tensor(valid), batch_size, device, covariates
        )
        return probabilities(logits)

    return predict


def _point_metrics(
    labels: dict[str, np.ndarray], probs: dict[str, np.ndarray], threshold: float
) -> dict[str, float | None]:
    """``{"val/auroc": ..., "test/auroc": ...}`` like metrics.json["metrics"]; None if undefined."""
    out = {}
    for split, prob in probs.items():
        y = labels[split]
        values = weighted_metrics(y, prob, np.ones((1, len(y))), threshold)
        out |= {
            f"{split}/{k}": float(v[0]) if np.isfinite(v[0]) else None for k, v in values.items()
        }
    return out
