"""A seeded, ICU-like synthetic cohort written as the same tables a user supplies.

Some patients deteriorate: from an onset hour that differs between patients, their vitals
drift (heart and respiratory rate up, blood pressure and saturation down, lactate up).
Their outcome risk rises with the severity of that drift. Every patient also has a
personal baseline level, so a patient's average alone says little: the signal is the
trend after the onset, which is what a temporal convolution can see. The true risk of
every patient is written too, and its AUROC is the ceiling any model can reach.

``irregular=True`` writes the same cohort as a raw export would look: date-time stamps
at irregular minutes since a per-patient admission time, rows dropped, stays that end
early; the grid and the preprocessing have to undo that.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from patientcnn.files import atomic_write, write_json

# name, typical value, spread, direction of deterioration, strength, is a lab (sparse)
SIGNALS = [
    ("heart_rate", 85.0, 14.0, +1, 1.0, False),
    ("resp_rate", 18.0, 4.0, +1, 0.8, False),
    ("map", 80.0, 10.0, -1, 0.9, False),
    ("spo2", 96.0, 2.0, -1, 0.6, False),
    ("temperature", 37.0, 0.6, +1, 0.4, False),
    ("lactate", 1.5, 0.8, +1, 0.9, True),
    ("wbc", 9.0, 3.0, +1, 0.3, True),
    ("creatinine", 1.0, 0.3, +1, 0.5, True),
]
BASE_RISK = 0.03  # outcome risk of a patient who does not deteriorate
RISK_SLOPE = 5.7  # log-odds per unit of deterioration severity
LAB_OBSERVED = 0.3  # a lab is drawn in about one hour out of three


def make_cohort(
    n_patients: int = 3000,
    n_steps: int = 48,
    n_features: int = 6,
    prevalence: float = 0.15,
    missing_rate: float = 0.1,
    trend_strength: float = 2.5,
    seed: int = 0,
    irregular: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return (measurements, labels, truth) as long-format DataFrames."""
    rng = np.random.default_rng(seed)
    n, length = int(n_patients), int(n_steps)
    signals = [*SIGNALS, *[(f"signal_{k}", 0.0, 1.0, +1, 0.0, False) for k in range(8, n_features)]]
    signals = signals[:n_features]

    severity_range = np.linspace(0.3, 1.0, 1001)
    intercept = np.log(BASE_RISK / (1 - BASE_RISK))
    mean_risk_if_deteriorating = _sigmoid(intercept + RISK_SLOPE * severity_range).mean()
    fraction = np.clip((prevalence - BASE_RISK) / (mean_risk_if_deteriorating - BASE_RISK), 0, 1)

    deteriorates = rng.random(n) < fraction
    severity = np.where(deteriorates, rng.uniform(0.3, 1.0, n), 0.0)
    onset = rng.integers(length // 6, length - max(length // 6, 2), n)
    true_risk = _sigmoid(intercept + RISK_SLOPE * severity)
    label = (rng.random(n) < true_risk).astype(np.int64)

    hours = np.arange(length)
    ramp = np.clip((hours[None, :] - onset[:, None]) / (length - onset[:, None]), 0, 1)
    drift = trend_strength * severity[:, None] * ramp  # (n, L) in units of the spread

    values = np.empty((n, length, len(signals)))
    for j, (_, centre, spread, direction, strength, is_lab) in enumerate(signals):
        baseline = rng.normal(0.0, 1.0, n)[:, None]
        noise = _ar1(rng, n, length, phi=0.8, scale=0.5)
        z = baseline + noise + direction * strength * drift
        column = centre + spread * z
        observed_p = LAB_OBSERVED if is_lab else 1.0 - missing_rate
        column[rng.random((n, length)) > observed_p] = np.nan
        values[:, :, j] = column

    ids = np.array([f"P{i:05d}" for i in range(n)])
    measurements = pd.DataFrame(
        values.reshape(n * length, -1).round(3), columns=[s[0] for s in signals]
    )
    measurements.insert(0, "time", np.tile(hours, n))
    measurements.insert(0, "patient_id", np.repeat(ids, length))
    labels = pd.DataFrame({"patient_id": ids, "label": label})
    truth = pd.DataFrame({"patient_id": ids, "true_risk": true_risk})
    if irregular:
        measurements = _as_raw_export(measurements, rng, n, length)
    return measurements, labels, truth


def _as_raw_export(
    measurements: pd.DataFrame, rng: np.random.Generator, n: int, length: int
) -> pd.DataFrame:
    """Hourly rows -> a raw export: charttime/admit_time, ~30% of rows gone, shorter stays."""
    patient = np.repeat(np.arange(n), length)
    hour = measurements["time"].to_numpy()
    stay_end = rng.integers(length // 2, length + 1, n)[patient]
    keep = (hour == 0) | ((rng.random(len(hour)) > 0.3) & (hour < stay_end))
    admit = pd.Timestamp("2130-01-01") + pd.to_timedelta(
        rng.integers(0, 365 * 24 * 60, n), unit="min"
    )
    minutes = hour * 60 + rng.integers(0, 60, len(hour))  # somewhere inside the hour
    out = measurements.drop(columns="time")
    out.insert(1, "charttime", admit[patient] + pd.to_timedelta(minutes, unit="min"))
    out.insert(2, "admit_time", admit[patient])
    return out[keep].sample(frac=1.0, random_state=0).reset_index(drop=True)


def write_cohort(folder: str | Path, **params: object) -> dict:
    """Write measurements.csv, labels.csv, truth.csv and cohort.json; return the summary."""
    folder = Path(folder)
    measurements, labels, truth = make_cohort(**params)
    for name, table in (("measurements", measurements), ("labels", labels), ("truth", truth)):
        atomic_write(folder / f"{name}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False))
    summary = {
        "params": dict(params),
        "n_patients": len(labels),
        "prevalence": float(labels["label"].mean()),
        "ceiling_auroc": float(roc_auc_score(labels["label"], truth["true_risk"])),
        "missing_fraction": float(measurements.select_dtypes("number").isna().to_numpy().mean()),
    }
    write_json(folder / "cohort.json", summary)
    return summary


def read_summary(folder: str | Path) -> dict | None:
    path = Path(folder) / "cohort.json"
    return json.loads(path.read_text()) if path.exists() else None


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _ar1(rng: np.random.Generator, n: int, length: int, phi: float, scale: float) -> np.ndarray:
    """Stationary AR(1) noise with marginal std ``scale``: smooth, like a monitored vital."""
    out = np.empty((n, length))
    out[:, 0] = rng.normal(0, scale, n)
    innovation = scale * np.sqrt(1 - phi**2)
    for t in range(1, length):
        out[:, t] = phi * out[:, t - 1] + rng.normal(0, innovation, n)
    return out
