"""Scoring and validating new patients with nothing but a checkpoint."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import read_metrics, run_cli, train_run
from hydra.utils import execution_whitelist, instantiate
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from patientcnn.checkpoint import load_bundle
from patientcnn.data.synthetic import write_cohort
from patientcnn.errors import UserError
from patientcnn.evaluate import evaluate_cohort
from patientcnn.predict import predict_file
from patientcnn.threshold import choose_threshold
from patientcnn.train import TRUSTED_TARGETS

FEATURES = ["heart_rate", "resp_rate", "map", "spo2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch small-preset model with a Youden threshold; afterwards the training run and
    its data are deleted, so only the checkpoint (and a copy of the test patients) is left."""
    root = tmp_path_factory.mktemp("trained")
    proc, run = train_run(root, "threshold.rule=youden")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with execution_whitelist(TRUSTED_TARGETS):
        datamodule = instantiate(OmegaConf.load(run / "config.yaml").data, _convert_="all")
    datamodule.setup()
    test_ids = set(datamodule.cohort.arrays.ids[datamodule.index["test"]])
    measurements = pd.read_csv(datamodule.measurements)
    labels = pd.read_csv(datamodule.labels)
    kept = root / "kept"
    kept.mkdir()
    measurements[measurements["patient_id"].isin(test_ids)].to_csv(kept / "test_m.csv", index=False)
    labels[labels["patient_id"].isin(test_ids)].to_csv(kept / "test_y.csv", index=False)
    shutil.copy(run / "checkpoints" / "best.ckpt", kept / "model.ckpt")
    shutil.copy(run / "metrics.json", kept / "metrics.json")
    shutil.rmtree(run)
    shutil.rmtree(root / "data")
    return kept


@pytest.fixture(scope="module")
def second_cohort(tmp_path_factory):
    """Another hospital: other patients, rows shuffled, Parquet, an extra text column."""
    folder = tmp_path_factory.mktemp("second")
    write_cohort(folder, n_patients=120, n_steps=24, n_features=4, seed=7)
    m = pd.read_csv(folder / "measurements.csv").sample(frac=1.0, random_state=3)
    m["ward"] = "icu"
    m.to_parquet(folder / "m.parquet")
    return folder


def test_training_stores_the_threshold_chosen_on_validation(trained):
    record = json.loads((trained / "metrics.json").read_text())
    bundle = load_bundle(trained / "model.ckpt")
    assert record["threshold"]["rule"] == "youden"
    assert bundle.threshold == pytest.approx(record["threshold"]["value"])
    assert torch.load(trained / "model.ckpt", weights_only=True)["patientcnn"][
        "threshold_rule"
    ] == ("youden")


def test_scores_a_second_file_with_only_the_checkpoint(trained, second_cohort, tmp_path):
    out = tmp_path / "preds.csv"
    proc = run_cli(
        "scripts/predict.py",
        f"checkpoint={trained / 'model.ckpt'}",
        f"input={second_cohort / 'm.parquet'}",
        f"output={out}",
        "progress=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ignoring column(s) the model does not use: ward" in proc.stdout
    preds = pd.read_csv(out)
    assert list(preds.columns) == ["patient_id", "probability", "predicted_label"]
    assert sorted(preds["patient_id"]) == [f"P{i:05d}" for i in range(120)]
    assert preds["probability"].between(0, 1).all()
    threshold = load_bundle(trained / "model.ckpt").threshold
    assert (preds["predicted_label"] == (preds["probability"] >= threshold)).all()
    # the log says where the threshold came from
    assert "the checkpoint's, rule youden on validation patients" in proc.stdout + proc.stderr


def test_agrees_with_the_in_training_test_metrics(trained, tmp_path):
    trained_metrics = read_metrics(trained)["metrics"]
    proc = run_cli(
        "scripts/evaluate.py",
        f"checkpoint={trained / 'model.ckpt'}",
        f"data.measurements={trained / 'test_m.csv'}",
        f"data.labels={trained / 'test_y.csv'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_metrics(tmp_path / "eval")
    metrics = record["metrics"]
    for name in ("auroc", "auprc", "accuracy", "f1", "brier", "loss"):
        assert metrics[name] == pytest.approx(trained_metrics[f"test/{name}"], abs=1e-5), name
    # the external evaluation leaves a report whose numbers are those of metrics.json
    assert (tmp_path / "eval" / "report" / "report.html").exists()
    cnn = record["confidence_intervals"]["models"]["cnn"]["auroc"]
    assert cnn["value"] == pytest.approx(metrics["auroc"], abs=1e-6)
    assert cnn["low"] <= cnn["value"] <= cnn["high"]
    # the prediction path gives the same probabilities
    summary = predict_file(
        trained / "model.ckpt", trained / "test_m.csv", tmp_path / "p.parquet", progress=False
    )
    preds = pd.read_parquet(summary.output)
    y = pd.read_csv(trained / "test_y.csv").set_index("patient_id")["label"]
    auroc = roc_auc_score(y.loc[preds["patient_id"]], preds["probability"])
    assert auroc == pytest.approx(trained_metrics["test/auroc"], abs=1e-5)


def test_evaluate_returns_labels_and_probabilities(trained):
    result = evaluate_cohort(
        load_bundle(trained / "model.ckpt"), trained / "test_m.csv", trained / "test_y.csv"
    )
    assert len(result.ids) == len(result.labels) == len(result.probabilities) == 80
    assert set(np.unique(result.labels)) == {0, 1}
    assert roc_auc_score(result.labels, result.probabilities) == pytest.approx(
        result.metrics["auroc"], abs=1e-6
    )


def test_chunks_of_whole_patients_match_one_pass(trained, small_cohort, tmp_path):
    shuffled = pd.read_csv(small_cohort / "measurements.csv").sample(frac=1.0, random_state=0)
    shuffled.to_csv(tmp_path / "m.csv", index=False)
    ckpt = trained / "model.ckpt"
    whole = predict_file(ckpt, tmp_path / "m.csv", tmp_path / "a.csv", progress=False)
    chunked = predict_file(
        ckpt, tmp_path / "m.csv", tmp_path / "b.csv", chunk_rows=1000, progress=False
    )
    a = pd.read_csv(whole.output).set_index("patient_id")
    b = pd.read_csv(chunked.output).set_index("patient_id")
    assert len(b) == len(a) == 300 and not b.index.duplicated().any()
    assert np.allclose(b.loc[a.index, "probability"], a["probability"], atol=1e-6)
    assert list(tmp_path.glob(".*")) == []  # no temporary files left behind


def test_the_duckdb_engine_scores_as_the_chunks(trained, small_cohort, tmp_path):
    shuffled = pd.read_csv(small_cohort / "measurements.csv").sample(frac=1.0, random_state=0)
    shuffled.to_parquet(tmp_path / "m.parquet", index=False)
    ckpt = trained / "model.ckpt"
    chunks = predict_file(ckpt, tmp_path / "m.parquet", tmp_path / "a.csv", progress=False)
    mapped = predict_file(
        ckpt, tmp_path / "m.parquet", tmp_path / "b.csv", progress=False, engine="duckdb"
    )
    a, b = (
        pd.read_csv(chunks.output, dtype={"patient_id": str}),
        pd.read_csv(mapped.output, dtype={"patient_id": str}),
    )
    assert list(b["patient_id"]) == list(a["patient_id"]) and len(a) == 300
    np.testing.assert_allclose(b["probability"], a["probability"], rtol=1e-5)
    assert (b["predicted_label"] == a["predicted_label"]).all()
    with pytest.raises(UserError, match="engine must be one of"):
        predict_file(ckpt, tmp_path / "m.parquet", tmp_path / "c.csv", engine="spark")


def test_threshold_override(trained, small_cohort, tmp_path):
    m = small_cohort / "measurements.csv"
    everyone = predict_file(trained / "model.ckpt", m, tmp_path / "a.csv", threshold=0.0)
    assert everyone.predicted_positive == everyone.patients == 300
    with pytest.raises(UserError, match="threshold must be a probability"):
        predict_file(trained / "model.ckpt", m, tmp_path / "b.csv", threshold=1.5)


def test_patients_without_measurements_are_listed_and_get_no_row(
    trained, small_cohort, tmp_path, caplog
):
    m = pd.read_csv(small_cohort / "measurements.csv")
    m.loc[m["patient_id"].isin(["P00003", "P00007"]), FEATURES] = np.nan
    m.to_csv(tmp_path / "m.csv", index=False)
    summary = predict_file(trained / "model.ckpt", tmp_path / "m.csv", tmp_path / "p.csv")
    assert summary.skipped == ["P00003", "P00007"]
    assert "2 patient(s)" in caplog.text and "P00003, P00007" in caplog.text
    preds = pd.read_csv(tmp_path / "p.csv")
    assert len(preds) == 298 and not preds["patient_id"].isin(["P00003", "P00007"]).any()


def test_existing_output_is_kept_unless_overwrite(trained, small_cohort, tmp_path):
    out = tmp_path / "p.csv"
    out.write_text("precious\n")
    args = [
        f"checkpoint={trained / 'model.ckpt'}",
        f"input={small_cohort / 'measurements.csv'}",
        f"output={out}",
    ]
    proc = run_cli("scripts/predict.py", *args, cwd=tmp_path)
    assert proc.returncode == 2 and "overwrite=true" in proc.stderr
    assert out.read_text() == "precious\n"
    proc = run_cli("scripts/predict.py", *args, "overwrite=true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(pd.read_csv(out)) == 300


def test_an_interrupted_run_leaves_no_file(trained, small_cohort, tmp_path, monkeypatch):
    """Interrupted after the first chunk was written: neither output nor temporary file."""
    import patientcnn.inference as inference  # predict_file imports it when it runs

    calls = []

    def interrupt_second_chunk(arrays):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return np.zeros(len(arrays.ids), dtype=bool)

    monkeypatch.setattr(inference, "unusable", interrupt_second_chunk)
    out = tmp_path / "out" / "p.csv"
    with pytest.raises(KeyboardInterrupt):
        predict_file(
            trained / "model.ckpt", small_cohort / "measurements.csv", out, chunk_rows=1000
        )
    assert len(calls) == 2 and list(out.parent.iterdir()) == []


def test_a_bad_value_in_a_chunk_names_the_file_and_patient(trained, small_cohort, tmp_path):
    m = pd.read_csv(small_cohort / "measurements.csv")
    m["map"] = m["map"].map(lambda v: None if pd.isna(v) else str(v))
    m.loc[len(m) - 1, "map"] = "high"
    m.to_parquet(tmp_path / "m.parquet")
    with pytest.raises(UserError, match=r"m\.parquet: column 'map' is not a number.*P00299") as err:
        predict_file(
            trained / "model.ckpt", tmp_path / "m.parquet", tmp_path / "p.csv", chunk_rows=1000
        )
    assert "high" not in str(err.value) and not (tmp_path / "p.csv").exists()


def _drop_features(src, dst):
    pd.read_csv(src).drop(columns=["map", "spo2"]).to_csv(dst, index=False)


def _garbage(src, dst):
    dst.with_suffix(".parquet").write_bytes(b"PAR1 this is not parquet")


def _no_id(src, dst):
    pd.read_csv(src).rename(columns={"patient_id": "stay"}).to_csv(dst, index=False)


def test_missing_features_are_one_message_and_exit_2(trained, small_cohort, tmp_path):
    _drop_features(small_cohort / "measurements.csv", tmp_path / "m.csv")
    proc = run_cli(
        "scripts/predict.py",
        f"checkpoint={trained / 'model.ckpt'}",
        f"input={tmp_path / 'm.csv'}",
        f"output={tmp_path / 'p.csv'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "needs feature column(s) that are missing: map, spo2" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize(
    "damage,message",
    [
        (_drop_features, "needs feature column(s) that are missing: map, spo2"),
        (_garbage, "cannot be read as a table"),
        (_no_id, "no id column 'patient_id'"),
    ],
)
def test_bad_input_names_the_file(trained, small_cohort, tmp_path, damage, message):
    damage(small_cohort / "measurements.csv", tmp_path / "m.csv")
    source = next(tmp_path.glob("m.*"))
    with pytest.raises(UserError) as err:
        predict_file(trained / "model.ckpt", source, tmp_path / "p.csv")
    assert message in str(err.value) and str(source) in str(err.value)
    assert not (tmp_path / "p.csv").exists()


def test_threshold_rules():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    assert choose_threshold(y, p) == 0.5
    assert choose_threshold(y, p, rule="youden") == pytest.approx(0.7)
    assert choose_threshold(y, p, rule="sensitivity", sensitivity=1.0) == pytest.approx(0.4)
    assert choose_threshold(y, p, rule="sensitivity", sensitivity=0.5) == pytest.approx(0.8)
    with pytest.raises(UserError, match="threshold.rule"):
        choose_threshold(y, p, rule="best")


def test_the_inference_batch_is_sized_by_time_steps_on_a_cpu():
    from patientcnn.errors import UserError
    from patientcnn.inference import CPU_BATCH_STEPS, inference_batch

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert inference_batch("auto", 301, cpu) == CPU_BATCH_STEPS // 301 == 108
    assert inference_batch("auto", 10, cpu) == 1024  # at most 1024 patients
    assert inference_batch("auto", 100_000, cpu) == 1  # at least one
    assert inference_batch("auto", 301, gpu) == 1024
    assert inference_batch(7, 301, cpu) == 7  # a number is kept
    for bad in (0, -3, 2.5, True, "many"):
        with pytest.raises(UserError, match="batch_size"):
            inference_batch(bad, 301, cpu)
