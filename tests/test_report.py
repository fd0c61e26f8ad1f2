"""The evaluation report: metrics, intervals, baselines, importance, files, end to end."""

import re

import numpy as np
import pytest
from conftest import read_metrics, train_run
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from patientcnn.metrics import calibration_metrics
from patientcnn.report import write_report
from patientcnn.report.baselines import summary_statistics
from patientcnn.report.bootstrap import METRICS, bootstrap, weighted_metrics
from patientcnn.report.importance import channel_groups, permutation_importance

FILES = ("report.md", "report.html", "roc.png", "pr.png", "calibration.png", "confusion.png")


def cohort(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a useful but imperfect risk score, rounded so that scores tie."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    return y, np.round(1 / (1 + np.exp(-(1.5 * y + rng.normal(size=n) - 1.5))), 2)


def table(report_md: str) -> dict[str, list[tuple[float, float, float] | None]]:
    """Row label -> (value, low, high) per model column, parsed from the Markdown table."""
    rows = {}
    for line in report_md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        numbers = [re.fullmatch(r"(-?[\d.]+) \((-?[\d.]+) to (-?[\d.]+)\)", c) for c in cells[1:]]
        if line.startswith("|") and any(numbers):
            rows[cells[0]] = [tuple(map(float, m.groups())) if m else None for m in numbers]
    return rows


def assert_table_matches(report_md: str, models: dict) -> None:
    rows = table(report_md)
    for key, (label, _) in METRICS.items():
        for column, ci in zip(rows[label], models.values(), strict=True):
            expected = (ci[key]["value"], ci[key]["low"], ci[key]["high"])
            if expected[0] is None:  # undefined (e.g. PPV with no patient called positive)
                assert column is None, (label, column)
                continue
            assert column == pytest.approx(expected, abs=5.01e-4), (label, column, expected)


def test_point_estimates_match_scikit_learn():
    y, p = cohort(400)
    got = {k: v[0] for k, v in weighted_metrics(y, p, np.ones((1, len(y))), 0.3).items()}
    flagged = p >= 0.3
    assert got["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert got["auprc"] == pytest.approx(average_precision_score(y, p))
    assert got["brier"] == pytest.approx(brier_score_loss(y, p))
    assert got["sensitivity"] == pytest.approx(flagged[y == 1].mean())
    assert got["specificity"] == pytest.approx((~flagged)[y == 0].mean())
    assert got["ppv"] == pytest.approx(y[flagged].mean())
    assert got["npv"] == pytest.approx(1 - y[~flagged].mean())
    bins = np.minimum((p * 10).astype(int), 9)
    gaps = [abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).mean() for b in set(bins)]
    assert got["ece"] == pytest.approx(sum(gaps))


def test_resample_weights_are_the_resampled_patients():
    """A weight row scores exactly like the resampled cohort it stands for."""
    y, p = cohort(300)
    draw = np.random.default_rng(3).integers(0, len(y), len(y))
    weights = np.bincount(draw, minlength=len(y))[None, :].astype(float)
    got = weighted_metrics(y, p, weights, 0.5)
    assert got["auroc"][0] == pytest.approx(roc_auc_score(y[draw], p[draw]))
    assert got["auprc"][0] == pytest.approx(average_precision_score(y[draw], p[draw]))


def test_intervals_contain_the_estimate_and_narrow_with_more_patients():
    widths = {}
    for n in (200, 2000):
        y, p = cohort(n, seed=n)
        result = bootstrap(y, {"cnn": p}, threshold=0.3, n_resamples=300, seed=1)["cnn"]
        for key in METRICS:
            assert result[key]["low"] <= result[key]["value"] <= result[key]["high"], key
        widths[n] = {k: result[k]["high"] - result[k]["low"] for k in METRICS}
    for key in METRICS:
        assert widths[2000][key] < widths[200][key], key


def test_bootstrap_is_seeded_and_pairs_models():
    y, p = cohort(300)
    first = bootstrap(y, {"a": p, "b": p}, n_resamples=100, seed=7)
    assert first == bootstrap(y, {"a": p, "b": p}, n_resamples=100, seed=7)
    assert first != bootstrap(y, {"a": p, "b": p}, n_resamples=100, seed=8)
    # the same model twice differs by exactly 0 on every paired resample
    assert first["b"]["auroc_difference"] == {"value": 0.0, "low": 0.0, "high": 0.0}


def test_summary_statistics_ignore_padding():
    x = np.array([[[1.0, 3.0, 5.0, 99.0]]])  # one patient, one channel, last step padding
    valid = np.array([[True, True, True, False]])
    mean, std, low, high, last, slope = summary_statistics(x, valid)[0]
    assert (mean, low, high, last, slope) == (3.0, 1.0, 5.0, 5.0, 2.0)
    assert std == pytest.approx(np.std([1.0, 3.0, 5.0]))


def test_importance_finds_the_feature_and_hours_that_drive_the_prediction():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3, 12)).astype(np.float32)
    y = (x[:, 1, 8:].mean(axis=1) + 0.3 * rng.normal(size=300) > 0).astype(int)

    def predict(xs, valid):  # a model that reads only channel 1, steps 8-11
        return 1 / (1 + np.exp(-xs[:, 1, 8:].mean(axis=1)))

    result = permutation_importance(
        predict, x, np.ones((300, 12), bool), y, ["a", "b", "c"], n_blocks=3
    )
    assert result["features"]["b"]["mean"] > 0.2
    assert result["features"]["a"]["mean"] == result["features"]["c"]["mean"] == 0.0
    assert [b["steps"] for b in result["time_blocks"]] == ["0-3", "4-7", "8-11"]
    assert [b["mean"] > 0.2 for b in result["time_blocks"]] == [False, False, True]


def test_write_report_for_any_labels_and_probabilities(tmp_path):
    """The entry point external evaluation uses: labels + probabilities in, report out."""
    y, p = cohort(250)
    record = write_report(
        tmp_path / "ext",
        y,
        p,
        threshold=0.35,
        title="External cohort",
        extra_models={"logistic_regression": np.clip(p + 0.1, 0, 1)},
        n_resamples=200,
    )
    for name in FILES:
        assert (tmp_path / "ext" / name).stat().st_size > 0, name
    assert not (tmp_path / "ext" / "importance.png").exists()
    text = (tmp_path / "ext" / "report.md").read_text()
    assert "External cohort" in text and "threshold" in text.lower() and "0.35" in text
    assert_table_matches(text, record["models"])
    assert "data:image/png;base64," in (tmp_path / "ext" / "report.html").read_text()
    assert record["models"]["cnn"]["auroc"]["value"] == pytest.approx(roc_auc_score(y, p))
    slope = calibration_metrics(y, p)["calibration_slope"]
    assert "Calibration slope / intercept" in text and f"CNN {slope:.2f}" in text
    assert text.count("AUROC minus") == 2  # the paired row and the guide's line on it


def test_a_report_without_other_models_does_not_explain_a_paired_row(tmp_path):
    y, p = cohort(120)
    write_report(tmp_path / "alone", y, p, n_resamples=50)
    text = (tmp_path / "alone" / "report.md").read_text()
    assert "How to read this" in text and "AUROC minus" not in text


def test_training_run_writes_a_report_that_matches_metrics_json(tmp_path):
    proc, out = train_run(tmp_path, "report.resamples=200")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_metrics(out)
    for name in (*FILES, "histogram.png", "importance.png"):
        assert (out / "report" / name).stat().st_size > 0, name
    cis = record["confidence_intervals"]
    assert cis["resamples"] == 200 and cis["threshold"] == 0.5
    assert list(cis["models"]) == ["cnn", "gradient_boosting", "logistic_regression"]
    # the report's CNN is the checkpoint's ensemble: its AUROC is metrics.json's test/auroc
    metrics = record["metrics"]
    assert cis["models"]["cnn"]["auroc"]["value"] == pytest.approx(metrics["test/auroc"], abs=1e-4)
    for name in ("logistic_regression", "gradient_boosting"):
        baseline = record["baselines"][name]
        assert baseline["test/auroc"] == cis["models"][name]["auroc"]["value"]
    ordered = {k: cis["models"][k] for k in ("cnn", "logistic_regression", "gradient_boosting")}
    assert_table_matches((out / "report" / "report.md").read_text(), ordered)
    importance = record["importance"]
    assert set(importance["features"]) == set(record["cohort"]["features"])


def test_missingness_channels_are_shuffled_with_their_feature():
    """A feature's __observed and __time_since_observed channels would otherwise carry
    its information through the shuffle (and show up as features of their own)."""
    channels = ["hr", "lactate", "hr__observed", "lactate__observed"]
    channels += ["hr__time_since_observed", "lactate__time_since_observed"]
    assert channel_groups(channels) == {"hr": [0, 2, 4], "lactate": [1, 3, 5]}


def test_calibration_metrics_read_calibrated_and_over_confident_risks():
    from patientcnn.metrics import calibration_metrics

    rng = np.random.default_rng(0)
    risk = rng.uniform(0.02, 0.98, 20_000)
    y = rng.uniform(size=risk.size) < risk
    good = calibration_metrics(y, risk)
    assert good["ece"] < 0.02
    assert good["calibration_slope"] == pytest.approx(1.0, abs=0.1)
    assert good["calibration_intercept"] == pytest.approx(0.0, abs=0.1)
    logit = np.log(risk / (1 - risk))
    sharp = calibration_metrics(y, 1 / (1 + np.exp(-2 * logit)))  # logits doubled
    assert sharp["calibration_slope"] == pytest.approx(0.5, abs=0.05)
    assert sharp["ece"] > 0.05
    # undefined: risks that separate the outcomes, or one outcome only
    separated = calibration_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert np.isnan(separated["calibration_slope"]) and separated["ece"] == pytest.approx(0.15)
    assert np.isnan(calibration_metrics(np.zeros(3), np.full(3, 0.2))["calibration_slope"])
