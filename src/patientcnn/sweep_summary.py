"""One table of every trial in a sweep folder, best first, and a plot per swept setting.

A trial is a folder holding Hydra's ``.hydra/overrides.yaml``; its status comes from what
the train task left there: ``metrics.json`` (ok), ``error.txt`` (failed, e.g. a conv
stack that does not fit) or neither (incomplete: interrupted or crashed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from patientcnn.errors import UserError  # noqa: E402
from patientcnn.exit_policy import FAILED_TRIAL_FILE  # noqa: E402
from patientcnn.files import atomic_write, csv_safe  # noqa: E402

LOG_SCALE_SPAN = 100.0  # plot a numeric setting on a log axis when max/min exceeds this
PANELS_PER_ROW = 4
SHOWN_METRICS = ("val/auroc", "val/auprc", "test/auroc", "test/auprc", "test/brier")


def collect_trials(sweep_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per trial and the names of the swept settings (overrides that vary)."""
    trial_dirs = sorted(p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml"))
    if not trial_dirs:
        raise UserError(f"{sweep_dir}: no trials found (no */.hydra/overrides.yaml below it)")
    rows = [_trial_row(d, sweep_dir) for d in trial_dirs]
    settings = [k for r in rows for k in r.pop("_overrides")]
    settings = list(dict.fromkeys(settings))
    table = pd.DataFrame(rows)
    swept = [s for s in settings if len(rows) == 1 or table[s].astype(str).nunique() > 1]
    table["overrides"] = [
        " ".join(f"{s}={_short(r[s])}" for s in swept if pd.notna(r[s])) for r in rows
    ]
    return table, swept


def _short(value: str) -> str:
    """Optuna's 0.00023270677083837802 as 0.0002327; integers and words unchanged."""
    try:
        return f"{float(value):.4g}" if any(c in value for c in ".eE") else value
    except ValueError:
        return value


def _trial_row(trial_dir: Path, sweep_dir: Path) -> dict:
    overrides = yaml.safe_load((trial_dir / ".hydra/overrides.yaml").read_text()) or []
    pairs = dict(o.split("=", 1) for o in overrides if "=" in o)
    config = yaml.safe_load((trial_dir / ".hydra/config.yaml").read_text()) or {}
    row: dict = {"trial": str(trial_dir.relative_to(sweep_dir)), **pairs, "_overrides": pairs}
    row["objective_name"] = config.get("objective", "val/auroc")
    start = (trial_dir / ".hydra/config.yaml").stat().st_mtime
    metrics_file, error_file = trial_dir / "metrics.json", trial_dir / FAILED_TRIAL_FILE
    if metrics_file.exists():
        metrics = json.loads(metrics_file.read_text())["metrics"]
        row |= {"status": "ok", "objective": metrics.get(row["objective_name"], math.nan)}
        row |= {k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))}
        row["duration_s"] = round(metrics_file.stat().st_mtime - start, 1)
    elif error_file.exists():
        row |= {"status": "failed", "error": error_file.read_text().strip()}
        row["duration_s"] = round(error_file.stat().st_mtime - start, 1)
    else:
        row["status"] = "incomplete"
    return row


def rank(table: pd.DataFrame, maximize: bool = True) -> pd.DataFrame:
    """Finished trials best first, then failed, then incomplete; columns in reading order."""
    order = {"ok": 0, "failed": 1, "incomplete": 2}
    table = table.assign(_order=table["status"].map(order))
    table = table.sort_values(["_order", "objective"], ascending=[True, not maximize])
    metrics = sorted(c for c in table.columns if c.startswith(("val/", "test/")))
    first = ["trial", "status", "objective", "overrides", *metrics, "duration_s", "error"]
    columns = [c for c in first if c in table.columns]
    return table[columns].reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    cells = table.astype(object).where(table.notna(), "")
    text = cells.map(lambda v: f"{v:.4g}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def plot_objective(table: pd.DataFrame, swept: list[str], objective: str, path: Path) -> None:
    """Objective against each swept setting, one panel each, finished trials only."""
    done = table[table["status"] == "ok"]
    ncols = min(max(len(swept), 1), PANELS_PER_ROW)
    nrows = math.ceil(max(len(swept), 1) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3 * nrows), squeeze=False)
    for ax in axes.flat[len(swept) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, swept, strict=False):
        values = pd.to_numeric(done[name], errors="coerce")
        if values.notna().all() and len(values):
            ax.scatter(values, done["objective"])
            if values.min() > 0 and values.max() / values.min() > LOG_SCALE_SPAN:
                ax.set_xscale("log")
        else:
            ax.scatter(done[name].astype(str), done["objective"])
        ax.set_xlabel(name)
        ax.set_ylabel(objective)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def sweep_maximizes(sweep_dir: Path) -> bool:
    """The Optuna sweeper's direction from the sweep's multirun.yaml; grid sweeps maximise."""
    multirun = sweep_dir / "multirun.yaml"
    if not multirun.exists():
        return True
    sweeper = (yaml.safe_load(multirun.read_text()) or {}).get("hydra", {}).get("sweeper", {})
    return str(sweeper.get("direction", "maximize")) != "minimize"


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The columns worth reading on a screen: the CSV keeps every metric."""
    keep = ["trial", "status", "objective", "overrides", *SHOWN_METRICS, "duration_s", "error"]
    return table[[c for c in keep if c in table.columns]]


def summarize(sweep_dir: Path, maximize: bool = True) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Write summary.csv (every metric), summary.md (the ``shown`` columns) and summary.png
    into ``sweep_dir``; return the full table, best first."""
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir}: not a folder; pass a sweep folder like outputs/sweeps/...")
    table, swept = collect_trials(sweep_dir)
    objective = str(table["objective_name"].iloc[0])
    if "objective" not in table.columns:
        table["objective"] = math.nan
    ranked = rank(table, maximize)
    paths = {ext: sweep_dir / f"summary.{ext}" for ext in ("csv", "md", "png")}
    atomic_write(paths["csv"], lambda tmp: csv_safe(ranked).to_csv(tmp, index=False))
    markdown = f"Objective: {objective} ({'max' if maximize else 'min'}imised)\n\n"
    markdown += to_markdown(shown(ranked))
    atomic_write(paths["md"], lambda tmp: tmp.write_text(markdown))
    plot_objective(table, swept, objective, paths["png"])
    return ranked, paths
