"""One evaluation report from labels and predicted probabilities: the reusable entry point.

Training calls it for the test split; external evaluation calls it the same way for a new
cohort, so every report a reader sees has the same figures and the same table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patientcnn.metrics import calibration_metrics
from patientcnn.report import plots
from patientcnn.report.bootstrap import METRICS, bootstrap, format_interval
from patientcnn.report.subgroups import (
    CALIBRATION,
    FIGURES,
    SMALL_CLASS,
    SMALL_GROUP,
    subgroup_figures,
)
from patientcnn.report.writer import Block, write_documents

LABELS = {
    "cnn": "CNN",
    "logistic_regression": "Logistic regression",
    "gradient_boosting": "Gradient boosting",
}

READING_GUIDE = (
    "**How to read this.** AUROC: the chance that a random patient with the outcome gets a "
    "higher risk than a random patient without it (0.5 = chance). AUPRC: average PPV over "
    "all sensitivities (chance = the prevalence). Brier score: mean squared difference "
    "between predicted risk and outcome (lower is better). ECE: the mean gap between "
    "predicted risk and the observed rate of the outcome over ten bins of risk (0 = a "
    "predicted 30 % means 30 %; lower is better). Sensitivity, specificity, PPV, "
    "NPV and accuracy count patients flagged at the threshold. The range in brackets is the "
    "interval of the same number over bootstrap resamples of the patients: a comparison "
    "whose intervals overlap heavily may be chance."
)
PAIRED_ROW_GUIDE = (
    " The 'AUROC minus' row is paired (same resamples), so an interval that excludes 0 is a "
    "real difference on these patients."
)


def write_report(
    output_dir: str | Path,
    y_true: np.ndarray,
    prob: np.ndarray,
    threshold: float = 0.5,
    title: str = "Evaluation report",
    *,
    model_name: str = "cnn",
    extra_models: dict[str, np.ndarray] | None = None,
    importance: dict | None = None,
    time_label: str = "time steps",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    notes: tuple[str, ...] = (),
    patients: str = "test patients",
    subgroups: dict[str, np.ndarray] | None = None,
    explanations: dict | None = None,
) -> dict:
    """Write PNGs, report.md and report.html to ``output_dir``; return the interval record.

    ``prob`` is the main model's predicted probability per patient, ``extra_models`` maps
    other model names (e.g. baselines) to theirs for the same patients, and
    ``importance`` is ``permutation_importance``'s result; ``patients`` names the
    patients in the figure titles. ``subgroups`` maps a column name to each patient's
    group (``report.subgroups``): the report then gives the main model's figures per
    group. ``explanations`` is ``explain.attribution_summary``'s result: the report
    then shows the attribution maps. The returned plain dict (for metrics.json) holds
    each model's point estimates and bootstrap intervals, and the subgroup figures.
    """
    folder = Path(output_dir)
    y = np.asarray(y_true).astype(int)
    keys = [model_name, *(extra_models or {})]
    probs = {model_name: np.asarray(prob, dtype=np.float64)} | {
        k: np.asarray(v, dtype=np.float64) for k, v in (extra_models or {}).items()
    }
    cis = bootstrap(y, probs, threshold, n_resamples, seed, level)
    record = {
        "level": level,
        "resamples": int(n_resamples),
        "seed": int(seed),
        "threshold": float(threshold),
        "patients": len(y),
        "prevalence": float(y.mean()),
        "models": cis,
    }
    label = {k: LABELS.get(k, k.replace("_", " ")) for k in keys}
    shown = {label[k]: probs[k] for k in keys}
    shown_cis = {label[k]: cis[k] for k in keys}
    figures = [
        ("ROC curve", plots.roc_plot(folder / "roc.png", y, shown, shown_cis, threshold, patients)),
        ("Precision-recall curve", plots.pr_plot(folder / "pr.png", y, shown, shown_cis, patients)),
        ("Calibration", plots.calibration_plot(folder / "calibration.png", y, shown, shown_cis)),
        (
            f"Confusion matrix at threshold {threshold:g}",
            plots.confusion_plot(
                folder / "confusion.png", y, probs[model_name], threshold, cis[model_name]
            ),
        ),
        (
            "Predicted risk by outcome",
            plots.histogram_plot(
                folder / "histogram.png", y, probs[model_name], threshold, patients
            ),
        ),
    ]
    blocks: list[Block] = [
        ("h1", title),
        ("p", _cohort_line(record)),
        *(("p", note) for note in notes),
        ("h2", "Results"),
        ("table", ["Metric", *label.values()], _table_rows(label, cis)),
        ("p", _calibration_line(label, y, probs)),
        ("p", READING_GUIDE + (PAIRED_ROW_GUIDE if len(label) > 1 else "")),
        ("h2", "Figures"),
        ("figures", [(cap, path.name) for cap, path in figures]),
    ]
    if subgroups:
        record["subgroups"] = subgroup_figures(
            y, probs[model_name], subgroups, threshold, n_resamples, seed, level
        )
        blocks += _subgroup_blocks(record["subgroups"], label[model_name])
    if importance is not None:
        plots.importance_plot(folder / "importance.png", importance, time_label)
        blocks += [
            ("h2", "What the model looks at"),
            ("p", _importance_line(importance)),
            ("figures", [("Permutation importance", "importance.png")]),
        ]
    if explanations is not None and "unavailable" in explanations:
        blocks += [
            ("h2", "Which measurements at which times drove the risk"),
            ("p", f"No integrated-gradient attributions: {explanations['unavailable']}."),
        ]
    elif explanations is not None:
        plots.attribution_plot(folder / "attributions.png", explanations, time_label)
        blocks += [
            ("h2", "Which measurements at which times drove the risk"),
            ("p", _attribution_line(explanations)),
            ("figures", [("Integrated-gradient attributions", "attributions.png")]),
        ]
    write_documents(blocks, folder)
    return record


def _table_rows(label: dict[str, str], cis: dict) -> list[list[str]]:
    """One row per metric, one column per model (in ``label``'s order, reference first)."""
    keys = list(label)
    rows = [
        [name] + [format_interval(cis[k][metric]) for k in keys]
        for metric, (name, _) in METRICS.items()
    ]
    if len(keys) > 1:
        rows.append(
            [f"AUROC minus {label[keys[0]]}", "-"]
            + [format_interval(cis[k]["auroc_difference"]) for k in keys[1:]]
        )
    return rows


def _cohort_line(record: dict) -> str:
    positives = round(record["prevalence"] * record["patients"])
    return (
        f"{record['patients']} patients, {positives} with the outcome (prevalence "
        f"{record['prevalence']:.1%}). Threshold for flagging a patient: predicted risk >= "
        f"{record['threshold']:g}. Brackets: {record['level']:.0%} percentile bootstrap "
        f"intervals over {record['resamples']} resamples of the patients (seed {record['seed']})."
    )


def _calibration_line(label: dict[str, str], y: np.ndarray, probs: dict) -> str:
    """Calibration slope and intercept of each model, as one sentence."""
    parts = []
    for key, name in label.items():
        c = calibration_metrics(y, probs[key])
        slope, intercept = c["calibration_slope"], c["calibration_intercept"]
        parts.append(
            f"{name} {slope:.2f} / {intercept:+.2f}"
            if np.isfinite(slope)
            else f"{name} undefined (its risks separate the outcomes)"
        )
    return (
        "Calibration slope / intercept (logistic regression of the outcome on the logit of "
        "the predicted risk; 1 / 0 when a predicted 30 % means 30 %, a slope below 1 means "
        "over-confident risks): " + "; ".join(parts) + "."
    )


def _importance_line(importance: dict) -> str:
    top = max(importance["features"].items(), key=lambda kv: kv[1]["mean"])
    return (
        "Each bar is the drop in validation AUROC when one feature (left), or every feature "
        "within one time window (right), is shuffled between patients: the longer the bar, "
        f"the more the model relies on it. The largest is {top[0]} "
        f"({top[1]['mean']:.3f}). Bars near 0 mean the model ignores that input."
    )


def _subgroup_blocks(figures: dict, model: str) -> list[Block]:
    """A table per subgroup column: one row per group, then the largest gap per figure."""
    names = {
        "auroc": "AUROC",
        "auprc": "AUPRC",
        "sensitivity": "Sensitivity",
        "specificity": "Specificity",
        "calibration_slope": "Calibration slope",
        "calibration_intercept": "Calibration intercept",
    }
    shown = (*FIGURES, *CALIBRATION)
    blocks: list[Block] = [
        ("h2", "Subgroups"),
        (
            "p",
            f"The {model}'s figures within each group, with bootstrap intervals over the "
            f"group's own patients. Groups marked 'few patients' have fewer than "
            f"{SMALL_GROUP} patients or fewer than {SMALL_CLASS} of either outcome: their "
            "intervals are wide and their gaps may be chance.",
        ),
    ]
    for column, result in figures.items():
        rows = []
        for value, row in result["groups"].items():
            rows.append(
                [
                    value + (" (few patients)" if row["small"] else ""),
                    str(row["patients"]),
                    f"{row['prevalence']:.1%}",
                    *(format_interval(row[k]) for k in shown),
                ]
            )
        gaps = result["largest_gap"]
        rows.append(
            [
                "largest gap",
                "-",
                "-" if gaps["prevalence"] is None else f"{gaps['prevalence']:.1%}",
                *("n/a" if gaps[k] is None else f"{gaps[k]:.3f}" for k in shown),
            ]
        )
        blocks += [
            ("h3", f"By {column}"),
            ("table", [column, "Patients", "Prevalence", *(names[k] for k in shown)], rows),
        ]
    return blocks


def _attribution_line(summary: dict) -> str:
    top = summary["features"][int(np.argmax(summary["mean_abs"].sum(axis=1)))]
    return (
        "Integrated gradients: how much each measurement at each time step moved a "
        "patient's logit, compared with a patient at the training mean of every feature "
        "(a patient's values add up to their logit's difference from that baseline; the "
        f"largest deviation from that sum here is {summary['max_delta']:.2g}). The left map "
        "averages the size of the attributions over the patients; the others are single "
        "patients, red pushing towards the outcome and blue away from it. The largest on "
        f"average is {top}. What is attributed: {summary['attributed']}."
    )
