"""The report's figures, drawn for a clinical reader: plain axis names, numbers on the plot.

Figures are built with ``matplotlib.figure.Figure`` directly, which renders with the Agg
backend and never touches pyplot's global state or a display, so it runs on servers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from patientcnn.files import atomic_write
from patientcnn.report.bootstrap import format_interval as fmt

COLORS = ("#1f4e9c", "#e07b00", "#2e8b57", "#9c1f6e", "#555555")


def save(fig: Figure, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def _square(title: str) -> tuple[Figure, object]:
    fig = Figure(figsize=(5.6, 5.4), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    return fig, ax


def roc_plot(
    path: Path,
    y: np.ndarray,
    probs: dict[str, np.ndarray],
    cis: dict,
    threshold: float,
    patients: str = "test patients",
) -> Path:
    fig, ax = _square(f"ROC curve ({patients})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance (AUROC 0.5)")
    for color, (label, prob) in zip(COLORS, probs.items(), strict=False):
        fpr, tpr, _ = roc_curve(y, prob)
        ax.plot(fpr, tpr, color=color, label=f"{label}: AUROC {fmt(cis[label]['auroc'])}")
    first = next(iter(cis))
    spec, sens = cis[first]["specificity"]["value"], cis[first]["sensitivity"]["value"]
    if spec is not None and sens is not None:
        ax.plot(1 - spec, sens, "o", color=COLORS[0], label=f"{first} at threshold {threshold:g}")
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("Sensitivity (true positive rate)")
    ax.legend(loc="lower right", fontsize=8)
    return save(fig, path)


def pr_plot(
    path: Path,
    y: np.ndarray,
    probs: dict[str, np.ndarray],
    cis: dict,
    patients: str = "test patients",
) -> Path:
    fig, ax = _square(f"Precision-recall curve ({patients})")
    prevalence = float(np.mean(y))
    ax.axhline(
        prevalence, color="grey", linestyle=":", label=f"chance (prevalence {prevalence:.3f})"
    )
    for color, (label, prob) in zip(COLORS, probs.items(), strict=False):
        precision, recall, _ = precision_recall_curve(y, prob)
        ax.plot(
            recall,
            precision,
            color=color,
            drawstyle="steps-post",
            label=f"{label}: AUPRC {fmt(cis[label]['auprc'])}",
        )
    ax.set_xlabel("Sensitivity (recall)")
    ax.set_ylabel("Positive predictive value (precision)")
    ax.legend(loc="lower left", fontsize=8)
    return save(fig, path)


def calibration_plot(
    path: Path, y: np.ndarray, probs: dict[str, np.ndarray], cis: dict, groups: int = 10
) -> Path:
    """Reliability diagram: patients sorted into groups of equal size by predicted risk."""
    fig, ax = _square(f"Calibration ({groups} equal-sized risk groups)")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for color, (label, prob) in zip(COLORS, probs.items(), strict=False):
        order = np.argsort(prob, kind="stable")
        parts = [p for p in np.array_split(order, min(groups, len(order))) if len(p)]
        predicted = [prob[p].mean() for p in parts]
        observed = [y[p].mean() for p in parts]
        ax.plot(
            predicted,
            observed,
            "o-",
            color=color,
            markersize=4,
            label=f"{label}: Brier {fmt(cis[label]['brier'])}",
        )
    ax.set_xlabel("Mean predicted risk in the group")
    ax.set_ylabel("Observed outcome rate in the group")
    ax.legend(loc="upper left", fontsize=8)
    return save(fig, path)


def confusion_plot(path: Path, y: np.ndarray, prob: np.ndarray, threshold: float, ci: dict) -> Path:
    """The 2x2 table at the threshold, with the four rates a clinician acts on beside it."""
    y = np.asarray(y).astype(bool)
    flagged = prob >= threshold
    cells = np.array([[(y & flagged).sum(), (y & ~flagged).sum()],
                      [(~y & flagged).sum(), (~y & ~flagged).sum()]])  # fmt: skip
    fig = Figure(figsize=(8.4, 4.0), layout="constrained")
    ax, side = fig.subplots(1, 2, width_ratios=[1, 1.1])
    ax.imshow(cells / max(len(y), 1), cmap="Blues", vmin=0, vmax=1)
    names = (("true positive", "false negative"), ("false positive", "true negative"))
    for i in range(2):
        for j in range(2):
            share = cells[i, j] / max(cells[i].sum(), 1)
            dark = cells[i, j] / max(len(y), 1) > 0.5
            ax.text(j, i, f"{cells[i, j]}\n{names[i][j]}\n{share:.0%} of row", ha="center",
                    va="center", color="white" if dark else "black", fontsize=9)  # fmt: skip
    ax.set_xticks([0, 1], [f"risk >= {threshold:g}", f"risk < {threshold:g}"])
    ax.set_yticks([0, 1], [f"outcome\n(n={cells[0].sum()})", f"no outcome\n(n={cells[1].sum()})"])
    ax.set_xlabel("Model says")
    ax.set_title(f"Test patients at threshold {threshold:g}")
    side.axis("off")
    lines = [
        ("Sensitivity", "share of outcome patients flagged", "sensitivity"),
        ("Specificity", "share of others not flagged", "specificity"),
        ("PPV", "share of flagged who have the outcome", "ppv"),
        ("NPV", "share of not flagged without it", "npv"),
    ]
    text = "\n\n".join(f"{name}: {fmt(ci[key])}\n  {meaning}" for name, meaning, key in lines)
    side.text(0, 0.5, text + "\n\n(bootstrap intervals in brackets)", va="center", fontsize=9.5)
    return save(fig, path)


def histogram_plot(
    path: Path, y: np.ndarray, prob: np.ndarray, threshold: float, patients: str = "test patients"
) -> Path:
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    bins = np.linspace(0, 1, 26)
    y = np.asarray(y).astype(bool)
    for mask, label, color in ((~y, "no outcome", COLORS[0]), (y, "outcome", COLORS[1])):
        weights = np.full(mask.sum(), 100 / max(mask.sum(), 1))
        ax.hist(prob[mask], bins=bins, weights=weights, alpha=0.55, color=color,
                label=f"{label} (n={mask.sum()})")  # fmt: skip
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("Predicted risk")
    ax.set_ylabel("% of patients in the group")
    ax.set_title(f"Predicted risk by actual outcome ({patients})")
    ax.legend(fontsize=8)
    return save(fig, path)


def importance_plot(path: Path, importance: dict, time_label: str) -> Path:
    """Bars: AUROC lost when a feature (left) or a block of time steps (right) is shuffled."""
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.3])
    features = sorted(importance["features"].items(), key=lambda kv: kv[1]["mean"])
    left.barh(
        [name for name, _ in features],
        [v["mean"] for _, v in features],
        xerr=[v["sd"] for _, v in features],
        color=COLORS[0],
    )
    left.set_title("By feature")
    blocks = importance["time_blocks"]
    right.bar(
        [b["steps"] for b in blocks],
        [b["mean"] for b in blocks],
        yerr=[b["sd"] for b in blocks],
        color=COLORS[2],
    )
    right.set_title("By time window")
    right.set_xlabel(time_label)
    right.tick_params(axis="x", labelrotation=45 if len(blocks) > 8 else 0)
    left.set_xlabel("Drop in validation AUROC when shuffled")
    right.set_ylabel("Drop in validation AUROC when shuffled")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"What the model relies on (validation AUROC {importance['baseline']:.3f}; "
        f"mean of {importance['repeats']} shuffles, bars = 1 sd)"
    )
    return save(fig, path)


def attribution_plot(path: Path, summary: dict, time_label: str) -> Path:
    """Heat-maps of integrated-gradient attributions: the cohort's mean absolute value per
    feature and step (left), then each example patient's signed map (red: towards the
    outcome, blue: away from it)."""
    panels = 1 + len(summary["examples"])
    fig = Figure(
        figsize=(5.2 * panels, 0.45 * len(summary["features"]) + 2.6), layout="constrained"
    )
    axes = fig.subplots(1, panels, squeeze=False)[0]
    cohort = axes[0].imshow(summary["mean_abs"], aspect="auto", cmap="viridis")
    axes[0].set_title(f"Mean |attribution|, {summary['patients']} patients")
    fig.colorbar(cohort, ax=axes[0], shrink=0.8)
    for ax, example in zip(axes[1:], summary["examples"], strict=True):
        values = example["map"]
        bound = float(np.abs(values).max()) or 1.0
        image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)
        ax.set_title(example["title"], fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    for ax in axes:
        ax.set_yticks(range(len(summary["features"])), summary["features"])
        ax.set_xlabel(time_label)
    return save(fig, path)
