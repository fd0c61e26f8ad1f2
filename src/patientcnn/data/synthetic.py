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

``static=True`` gives every patient an age and a sex (``static.csv``, age empty for 3 %
of them). Both move the outcome risk (older and male: higher), and in women the vitals
show a deterioration at ``WEAK_SIGNAL`` of its strength, so the series predict worse
for them: the subgroup a report by sex should reveal. ``eav=True`` writes the
measurements as an entity-attribute-value export (``patient_id, time, variable,
value``, one row per observed value), as MIMIC ``chartevents`` comes. Both are opt-in;
without them the cohort is the same, draw for draw, as before they existed.
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
AGE_MEAN, AGE_SD = 64.0, 15.0  # static=True: age in years, clipped to 18-95
AGE_EFFECT = 0.7  # log-odds per decade of age above the mean
SEX_EFFECT = 0.4  # log-odds: + for men, - for women
WEAK_SIGNAL = 0.4  # women's vitals show this share of the deterioration
AGE_MISSING = 0.03  # share of patients whose age is not recorded


def make_cohort(
    n_patients: int = 3000,
    n_steps: int = 48,
    n_features: int = 6,
    prevalence: float = 0.15,
    missing_rate: float = 0.1,
    trend_strength: float = 2.5,
    seed: int = 0,
    irregular: bool = False,
    static: bool = False,
    eav: bool = False,
) -> dict[str, pd.DataFrame]:
    """The cohort's tables as DataFrames: ``measurements``, ``labels``, ``truth`` (and
    ``static`` with ``static=True``); ``missing_fraction`` of the wide measurements."""
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
    logit = intercept + RISK_SLOPE * severity
    shown = np.ones(n)  # the share of the deterioration the vitals show
    if static:  # its own generator: the draws below are the same with or without it
        covariates, effect, shown = _static_covariates(np.random.default_rng([seed, 14]), n)
        logit = logit + effect
    true_risk = _sigmoid(logit)
    label = (rng.random(n) < true_risk).astype(np.int64)

    hours = np.arange(length)
    ramp = np.clip((hours[None, :] - onset[:, None]) / (length - onset[:, None]), 0, 1)
    drift = trend_strength * severity[:, None] * ramp  # (n, L) in units of the spread
    if static:
        drift = drift * shown[:, None]

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
    tables = {"labels": labels, "truth": truth}
    tables["missing_fraction"] = float(
        measurements.select_dtypes("number").isna().to_numpy().mean()
    )
    if static:
        tables["static"] = covariates.assign(patient_id=ids)[["patient_id", "age", "sex"]]
    tables["measurements"] = _as_eav(measurements) if eav else measurements
    return tables


def _static_covariates(
    rng: np.random.Generator, n: int
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Age and sex per patient, their effect on the outcome's log-odds, and the share of
    the deterioration each patient's vitals show (``WEAK_SIGNAL`` in women)."""
    age = np.clip(np.round(rng.normal(AGE_MEAN, AGE_SD, n)), 18, 95)
    female = rng.random(n) < 0.5
    effect = AGE_EFFECT * (age - AGE_MEAN) / 10 + np.where(female, -SEX_EFFECT, SEX_EFFECT)
    recorded = pd.array(age.astype(np.int64), dtype="Int64")
    recorded[rng.random(n) < AGE_MISSING] = pd.NA
    covariates = pd.DataFrame({"age": recorded, "sex": np.where(female, "F", "M")})
    return covariates, effect, np.where(female, WEAK_SIGNAL, 1.0)


def _as_eav(measurements: pd.DataFrame) -> pd.DataFrame:
    """A wide table as EAV rows: one per observed (patient, time, variable) value."""
    keys = [
        c for c in measurements.columns if c in ("patient_id", "time", "charttime", "admit_time")
    ]
    long = measurements.melt(id_vars=keys, var_name="variable", value_name="value")
    long = long.dropna(subset=["value"])
    return long.sort_values(keys[:2], kind="stable").reset_index(drop=True)


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
    """Write measurements.csv, labels.csv, truth.csv (static.csv with ``static=True``) and
    cohort.json; return the summary."""
    folder = Path(folder)
    tables = make_cohort(**params)
    labels, truth = tables["labels"], tables["truth"]
    for name in ("measurements", "labels", "truth", "static"):
        if name in tables:
            table = tables[name]
            atomic_write(folder / f"{name}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False))
    summary = {
        "params": dict(params),
        "n_patients": len(labels),
        "prevalence": float(labels["label"].mean()),
        "ceiling_auroc": float(roc_auc_score(labels["label"], truth["true_risk"])),
        "missing_fraction": tables["missing_fraction"],
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
