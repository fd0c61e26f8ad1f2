"""The synthetic cohort with static covariates and as an EAV export (opt-in), and the
data config that trains on it end to end (data=synthetic_eav)."""

from __future__ import annotations

import numpy as np
from conftest import read_metrics, run_cli
from sklearn.metrics import roc_auc_score

from patientcnn.checkpoint import load_bundle
from patientcnn.data.synthetic import make_cohort


def test_the_synthetic_static_cohort_is_opt_in_and_weaker_in_women():
    plain = make_cohort(n_patients=2000, n_steps=24, n_features=4, seed=3)
    both = make_cohort(n_patients=2000, n_steps=24, n_features=4, seed=3, static=True)
    static = both["static"].set_index("patient_id")
    assert list(static.columns) == ["age", "sex"] and set(static["sex"]) == {"F", "M"}
    assert 0 < static["age"].isna().mean() < 0.1
    men = static.index[static["sex"] == "M"]
    wide = plain["measurements"].set_index("patient_id")
    np.testing.assert_array_equal(
        both["measurements"].set_index("patient_id").loc[men].to_numpy(), wide.loc[men].to_numpy()
    )  # the opt-in draws from its own generator: the rest of the cohort is unchanged
    risk = both["truth"].set_index("patient_id")["true_risk"]
    older = static["age"].astype(float) > 75
    assert risk[older].mean() > risk[~older & static["age"].notna()].mean()
    # the vitals show the deterioration weaker in women: their trend ranks the outcome worse
    m = both["measurements"]
    vitals = ["heart_rate", "resp_rate", "map"]
    change = (
        m[m["time"] >= 18].groupby("patient_id")[vitals].mean()
        - m[m["time"] < 6].groupby("patient_id")[vitals].mean()
    ) / m[vitals].std()
    trend = change["heart_rate"] + change["resp_rate"] - change["map"]
    y = both["labels"].set_index("patient_id")["label"]
    by_sex = {}
    for sex in ("F", "M"):
        group = static.index[static["sex"] == sex]
        by_sex[sex] = roc_auc_score(y[group], trend[group])
    assert by_sex["F"] < by_sex["M"] - 0.05
    eav = make_cohort(n_patients=50, n_steps=6, n_features=3, seed=3, static=True, eav=True)
    rows = eav["measurements"]
    assert list(rows.columns) == ["patient_id", "time", "variable", "value"]
    assert rows["value"].notna().all() and set(rows["variable"]) == {
        "heart_rate",
        "resp_rate",
        "map",
    }


def test_the_synthetic_eav_config_trains_with_subgroups_by_sex(tmp_path):
    """The README's command on a small version of the cohort: EAV + static + report by sex."""
    out = tmp_path / "run"
    proc = run_cli(
        "train.py",
        "data=synthetic_eav",
        "data.synthetic.n_patients=240",
        "data.synthetic.n_steps=12",
        "data.synthetic.n_features=3",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={out}",
        "recipe.steps=10",
        "data.cv_folds=1",
        "data.split.test=0.25",
        "partner.rocket.features=500",
        "report.subgroups=[sex]",
        "report.resamples=20",
        "report.baselines=false",
        "report.importance=false",
        "report.explanations=false",
        "logger=none",
        "trainer.enable_progress_bar=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_metrics(out)
    assert set(metrics["subgroups"]["sex"]["groups"]) == {"F", "M"}
    assert metrics["cohort"]["static_features"] == ["age", "sex=F", "sex=M"]
    assert (tmp_path / "data" / "synthetic" / "eav_static" / "static.csv").exists()
    bundle = load_bundle(out / "checkpoints" / "best.ckpt")
    assert bundle.data["eav"]["variable_col"] == "variable"
    assert bundle.data["static"]["columns"] == ["age", "sex"]
