"""Static covariates: encoding fitted on development patients only, every network family
reading them, the bundle carrying the encoder, predict/evaluate/export using it."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pandas as pd
import pytest
import torch
from cli_batch import run_batch
from conftest import ROOT, read_metrics, run_cli
from hydra.utils import execution_whitelist, instantiate
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from patientcnn.checkpoint import bundle_from_networks, load_bundle, save_bundle
from patientcnn.config import TRUSTED_TARGETS
from patientcnn.data.datamodule import PatientDataModule
from patientcnn.data.preprocess import Preprocessor
from patientcnn.data.reshape import GridSpec
from patientcnn.data.static import MISSING, StaticEncoder, read_static, static_rows
from patientcnn.errors import UserError
from patientcnn.explain import integrated_gradients
from patientcnn.export import export_checkpoint
from patientcnn.models.ensemble import EnsembleNet
from patientcnn.models.layers import PooledHead, describe_head
from patientcnn.models.registry import create_network
from patientcnn.predict import predict_file
from patientcnn.report.subgroups import subgroups_from

SMALL = {
    "cnn": {"channels": [8, 8], "kernel_size": 3, "dilation": [1, 2]},
    "resnet": {"channels": [8, 8]},
    "inceptiontime": {"depth": 3, "width": 4, "bottleneck": 4, "kernel_size": 8},
    "tcn": {"depth": 2, "width": 8},
    "rocket": {"features": 336, "first_difference": True},
    "summary": {},
}
CLOSED_FORM = ("rocket", "summary")
STEPS = 10


def static_signal_cohort(folder, n: int = 400, seed: int = 0) -> dict:
    """A cohort whose outcome depends only on the static table: the series are noise, the
    risk comes from a category ('group') and a number ('score', empty for some patients).
    Written as m.csv, y.csv, s.csv (static, rows shuffled) in ``folder``."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"{i:04d}" for i in range(n)])  # leading zeros: ids stay text
    group = rng.choice(["a", "b", "c"], n, p=[0.3, 0.4, 0.3])
    score = rng.normal(0.0, 1.0, n)
    logit = np.where(group == "a", 2.0, -1.2) + 1.5 * score
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    hours = np.arange(STEPS)
    measurements = pd.DataFrame(
        {
            "patient_id": np.repeat(ids, STEPS),
            "time": np.tile(hours, n),
            "hr": rng.normal(80.0, 10.0, n * STEPS).round(1),  # noise: no outcome in it
            "map": rng.normal(70.0, 8.0, n * STEPS).round(1),
        }
    )
    shown = np.where(rng.random(n) < 0.05, np.nan, score.round(3))
    static = pd.DataFrame({"patient_id": ids, "group": group, "score": shown, "label": y})
    measurements.to_csv(folder / "m.csv", index=False)
    pd.DataFrame({"patient_id": ids, "label": y}).to_csv(folder / "y.csv", index=False)
    static.sample(frac=1.0, random_state=1).to_csv(folder / "s.csv", index=False)
    return {"ids": ids, "logit": logit, "y": y}


def table_args(folder) -> list[str]:
    return [
        "data=table",
        f"data.measurements={folder / 'm.csv'}",
        f"data.labels={folder / 'y.csv'}",
        f"data.static={folder / 's.csv'}",
    ]


# ---------------------------------------------------------------- the encoder


def test_encoder_imputes_standardises_and_one_hot_encodes():
    train = pd.DataFrame(
        {
            "age": [50.0, 70.0, np.nan, 90.0],
            "sex": ["F", "M", None, "F"],
            "ward": [1, 2, 2, 3],  # numeric codes, one-hot encoded on request
            "ventilated": [True, False, True, True],
        },
        index=pd.Index(["p1", "p2", "p3", "p4"], name="patient_id"),
    )
    encoder = StaticEncoder(categorical=["ward"]).fit(train)
    assert encoder.output_features == [
        "age",
        "sex=F",
        "sex=M",
        f"sex={MISSING}",  # training patients had empty cells: a level of its own
        "ward=1",
        "ward=2",
        "ward=3",
        "ventilated=False",
        "ventilated=True",
    ]
    out = encoder.transform(train)
    assert out.dtype == np.float32 and out.shape == (4, 9)
    mean, std = np.mean([50, 70, 90]), np.std([50, 70, 90])
    np.testing.assert_allclose(out[:, 0], (np.array([50, 70, 70, 90]) - mean) / std, rtol=1e-6)
    np.testing.assert_array_equal(out[2, 1:4], [0, 0, 1])  # the empty sex cell
    np.testing.assert_array_equal(out[:, 4:7].argmax(axis=1), [0, 1, 1, 2])
    np.testing.assert_array_equal(out[:, 1:].sum(axis=1), [3, 3, 3, 3])  # one level per column


def test_encoder_state_is_plain_data_and_rebuilds_the_same_encoder(tmp_path):
    train = pd.DataFrame({"age": [40.0, 60.0, 80.0], "sex": ["F", "M", "F"]}, index=["a", "b", "c"])
    encoder = StaticEncoder().fit(train)
    torch.save({"state": encoder.state()}, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)["state"]
    assert state == json.loads(json.dumps(state))  # numbers, strings, lists and dicts only
    new = pd.DataFrame({"age": [55.0, np.nan], "sex": ["M", "F"]}, index=["x", "y"])
    rebuilt = StaticEncoder.from_state(state)
    np.testing.assert_array_equal(rebuilt.transform(new), encoder.transform(new))
    assert rebuilt.output_features == encoder.output_features


def test_unseen_categories_are_all_zero_with_a_warning_naming_column_and_values(caplog):
    train = pd.DataFrame({"sex": ["F", "M", "F"], "age": [50, 60, 70]}, index=["a", "b", "c"])
    encoder = StaticEncoder().fit(train)
    new = pd.DataFrame({"sex": ["M", "X", None], "age": [50, 60, 70]}, index=["d", "e", "f"])
    with caplog.at_level(logging.WARNING):
        out = encoder.transform(new, "new.csv")
    np.testing.assert_array_equal(out[:, :2], [[0, 1], [0, 0], [0, 0]])  # sex=F, sex=M
    message = caplog.text
    assert "new.csv" in message and "static column 'sex'" in message
    assert "'X'" in message and MISSING in message and "2 patient(s)" in message
    assert "patient e" in message


@pytest.mark.parametrize(
    "rows, kwargs, message",
    [
        (
            "patient_id,age\n1,50\n2,60\n1,70\n",
            {},
            r"s\.csv: patient 1 has more than one row",
        ),
        (
            "patient_id,age\n1,50\n2,60\n",
            {"columns": ["age", "sex"]},
            r"s\.csv: no static column\(s\) sex; columns are: age",
        ),
        (
            "patient_id,age,label\n1,50,0\n2,60,1\n",
            {"columns": ["age", "label"], "exclude": ("label",)},
            r"s\.csv: column 'label' is the id, label or split column",
        ),
        ("patient_id\n1\n2\n", {}, r"s\.csv: the static table has no column besides"),
        ("id,age\n1,50\n", {}, r"s\.csv: no id column 'patient_id'"),
    ],
)
def test_bad_static_tables_are_named(tmp_path, rows, kwargs, message):
    (tmp_path / "s.csv").write_text(rows)
    with pytest.raises(UserError, match=message):
        read_static(tmp_path / "s.csv", "patient_id", **kwargs)


def test_bad_static_values_and_missing_patients_are_named(tmp_path):
    (tmp_path / "s.csv").write_text("patient_id,age,sex\n1,50,F\n2,sixty,M\n3,70,F\n4,inf,M\n")
    table = read_static(tmp_path / "s.csv", "patient_id")
    with pytest.raises(UserError, match=r"static column 'age' is not a number for patient 2"):
        StaticEncoder(columns=["age"]).fit(table.loc[["1", "2", "3"]], "s.csv")
    with pytest.raises(UserError, match=r"static column 'age' is infinite for patient 4"):
        StaticEncoder(columns=["age"]).fit(table.loc[["1", "3", "4"]], "s.csv")
    with pytest.raises(
        UserError, match=r"2 patient\(s\) have no row in the static table \(e\.g\. 5, 6\)"
    ):
        static_rows(table, np.array(["1", "5", "6"], dtype=object), tmp_path / "s.csv")
    with pytest.raises(UserError, match="static_categorical names 'ward', which is not one"):
        StaticEncoder(categorical=["ward"]).fit(table, "s.csv")
    empty = pd.DataFrame({"age": [np.nan, np.nan]}, index=["1", "2"])
    with pytest.raises(UserError, match="static column 'age' is empty for every training patient"):
        StaticEncoder().fit(empty, "s.csv")


def test_subgroup_columns_come_from_the_static_table_then_the_labels(tmp_path):
    (tmp_path / "s.csv").write_text("patient_id,sex\n1,F\n2,M\n")
    (tmp_path / "y.csv").write_text("patient_id,label,site\n1,0,x\n2,1,y\n")
    sources = [tmp_path / "s.csv", tmp_path / "y.csv"]
    ids = np.array(["2", "1"], dtype=object)
    groups = subgroups_from(sources, "patient_id", ["site", "sex"], ids)
    assert groups["sex"].tolist() == ["M", "F"] and groups["site"].tolist() == ["y", "x"]
    with pytest.raises(UserError, match=r"column 'ward' is in none of .*s\.csv, .*y\.csv"):
        subgroups_from(sources, "patient_id", ["ward"], ids)
    with pytest.raises(
        UserError, match=r"y\.csv: no subgroup column 'ward'.*report\.subgroups takes"
    ):
        subgroups_from([None, tmp_path / "y.csv"], "patient_id", ["ward"], ids)


# ---------------------------------------------------------------- fitted on development only


def test_static_preprocessing_is_fitted_on_development_patients_only(tmp_path, caplog):
    """The test patients' static values never enter the fitted state: changing them to
    extremes and to a category seen nowhere else leaves the encoder exactly as it was,
    and it equals an encoder fitted on the development patients' rows alone."""
    static_signal_cohort(tmp_path, n=120)
    args = {
        "measurements": str(tmp_path / "m.csv"),
        "labels": str(tmp_path / "y.csv"),
        "static": str(tmp_path / "s.csv"),
        "split": {"test": 0.25, "seed": 0},
    }
    first = PatientDataModule(**args)
    first.setup()
    test_ids, dev_ids = list(first.test_ids), list(first.dev["ids"])
    assert len(test_ids) == 30 and not set(test_ids) & set(dev_ids)
    table = pd.read_csv(tmp_path / "s.csv", dtype={"patient_id": str}).set_index("patient_id")
    table.loc[test_ids, "score"] = 1000.0
    table.loc[test_ids, "group"] = "only_in_test"
    table.reset_index().to_csv(tmp_path / "s.csv", index=False)
    second = PatientDataModule(**args)
    with caplog.at_level(logging.WARNING):
        second.setup()
    assert list(second.test_ids) == test_ids
    state = second.static_encoder.state()
    assert state == first.static_encoder.state()
    alone = StaticEncoder(columns=["group", "score"]).fit(table.loc[dev_ids])
    assert state == alone.state()
    assert "only_in_test" not in state["levels"]["group"]
    assert state["numeric"]["score"]["mean"] < 1.0  # 1000 would pull it far up
    assert "'only_in_test'" in caplog.text  # the test patients' level: unseen, named
    dev_static, test_static = second.dev["tensors"][3], second.tensors["test"][3]
    assert second.static_features == ["group=a", "group=b", "group=c", "score"]
    assert (test_static[:, :3] == 0).all()  # an unseen level: no level of the column
    assert (test_static[:, 3] > 100).all()  # standardised with the development statistics
    np.testing.assert_array_equal(dev_static.numpy(), first.dev["tensors"][3].numpy())
    assert "label" not in state["columns"]  # the static table's label column is no covariate


def test_a_static_table_missing_a_patient_stops_setup_naming_them(tmp_path):
    static_signal_cohort(tmp_path, n=60)
    table = pd.read_csv(tmp_path / "s.csv", dtype={"patient_id": str})
    table[table["patient_id"] != "0007"].to_csv(tmp_path / "s.csv", index=False)
    dm = PatientDataModule(
        str(tmp_path / "m.csv"), str(tmp_path / "y.csv"), static=str(tmp_path / "s.csv")
    )
    with pytest.raises(UserError, match=r"s\.csv: 1 patient\(s\) have no row .*\(e\.g\. 0007\)"):
        dm.setup()


# ---------------------------------------------------------------- the networks


def make_net(family: str, length: int, static: int = 3, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    net = create_network(family, 3, length, static_features=static, **SMALL[family], **extra)
    for m in net.modules():  # dropout off: comparisons are deterministic
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    if family in CLOSED_FORM:
        x, valid = torch.randn(30, 3, length), torch.ones(30, length, dtype=torch.bool)
        net.fit(x, valid, np.arange(30) % 2, static=torch.randn(30, static))
    else:
        head = next(m for m in net.modules() if isinstance(m, PooledHead))
        with torch.no_grad():  # the head's static weights start at 0: give them some
            head.linear.weight.normal_()
    return net


@pytest.mark.parametrize(
    "family, downsample",  # every family, and each trained one downsampled (as the recipe may)
    [(f, 1) for f in sorted(SMALL)] + [(f, 2) for f in sorted(SMALL) if f not in CLOSED_FORM],
)
def test_every_family_reads_static_covariates_and_still_ignores_padding(family, downsample):
    net = make_net(family, 20, downsample=downsample).eval()
    x, static = torch.randn(4, 3, 20), torch.randn(4, 3)
    valid = torch.ones(4, 20, dtype=torch.bool)
    valid[1, 12:] = False
    x_long = torch.cat([x, torch.randn(4, 3, 15)], dim=2)  # garbage in the padded steps
    valid_long = torch.cat([valid, torch.zeros(4, 15, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        a = net(x, valid, static)
        torch.testing.assert_close(net(x_long, valid_long, static), a, atol=1e-5, rtol=0)
        other = net(x, valid, static + torch.tensor([1.0, -2.0, 0.5]))
        assert (other - a).abs().min() > 1e-4  # every patient's logit moves with the covariates
    with pytest.raises(ValueError, match="static covariates"):
        net(x, valid)


def test_attributions_hold_the_covariates_and_still_add_up_to_the_logit_change():
    """Integrated gradients attribute the series with each patient's covariates held at
    their values: completeness holds against the baseline with the same covariates."""
    net = make_net("cnn", 16).eval()
    ensemble = EnsembleNet([net], {"scale": 0.5, "shift": 0.1}).eval()
    generator = torch.Generator().manual_seed(5)
    x, static = torch.randn(4, 3, 16, generator=generator), torch.randn(4, 3, generator=generator)
    valid = torch.ones(4, 16, dtype=torch.bool)
    valid[0, 9:] = False
    attributions, deltas = integrated_gradients(ensemble, x, valid, static=static)
    with torch.no_grad():
        change = net(x * valid[:, None], valid, static) - net(torch.zeros_like(x), valid, static)
    np.testing.assert_allclose(attributions.sum(axis=(1, 2)), change.numpy(), atol=2e-2)
    assert np.abs(deltas).max() < 2e-2 and (attributions[0, :, 9:] == 0).all()


def test_the_head_line_names_the_pooled_features_and_the_static_covariates():
    net = create_network("resnet", 3, 20, static_features=3, channels=[8, 16])
    line = describe_head(net, ["age", "sex=F", "sex=M"])
    assert "(N, 16) pooled features" in line and "(N, 3) static covariates: age, sex=F" in line
    assert "= (N, 19) -> Linear (20 params)" in line
    assert "static" not in describe_head(create_network("resnet", 3, 20, channels=[8, 16]))
    assert net.head.linear.weight[0, 16:].abs().sum() == 0  # a covariate starts at no effect


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training run on a cohort whose outcome depends only on the static table: the
    plain CNN with three partners (linear too), the report with subgroups of a static column."""
    folder = tmp_path_factory.mktemp("static")
    truth = static_signal_cohort(folder)
    run = folder / "run"
    proc = run_cli(
        "train.py",
        *table_args(folder),
        f"hydra.run.dir={run}",
        "model=cnn",
        "model.channels=[8,8]",
        "recipe.steps=80",
        "data.cv_folds=1",
        "data.split.test=0.3",
        "partner.nets=[rocket,summary,linear]",
        "partner.rocket.features=1000",
        "report.resamples=50",
        "report.importance_repeats=1",
        "report.explanation_patients=20",
        "report.subgroups=[group]",
        "logger=none",
        "trainer.enable_progress_bar=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"folder": folder, "run": run, "truth": truth, "log": proc.stdout + proc.stderr}


def test_an_outcome_carried_by_a_static_column_is_learned(trained):
    """The series are noise, so anything above chance comes from the covariates: the
    trained network alone, each partner alone and the blend all rank the test patients
    well."""
    run, truth = trained["run"], trained["truth"]
    metrics = read_metrics(run)
    with execution_whitelist(TRUSTED_TARGETS):
        dm = instantiate(OmegaConf.load(run / "config.yaml").data, _convert_="all")
    dm.setup()
    x, valid, y, static = dm.tensors["test"]
    ceiling = roc_auc_score(y, pd.Series(truth["logit"], truth["ids"])[dm.test_ids])
    assert ceiling > 0.8
    model = load_bundle(run / "checkpoints" / "best.ckpt").build_model()
    with torch.no_grad():
        network = model.members[0](x, valid, static)
        partners = [family[0](x, valid, static) for family in model.partners]
    assert len(partners) == 3  # rocket, summary and linear
    for scores in (network, *partners):
        assert roc_auc_score(y, scores) > ceiling - 0.1
    assert metrics["metrics"]["test/auroc"] > ceiling - 0.1
    groups = metrics["subgroups"]["group"]["groups"]
    assert set(groups) == {"a", "b", "c"}
    assert groups["a"]["prevalence"] > groups["b"]["prevalence"]
    log = trained["log"]
    assert "static covariates from" in log and "group=a, group=b, group=c, score" in log
    assert "+ (N, 4) static covariates: group=a, group=b, group=c, score = (N, 20)" in log


def test_the_bundle_carries_the_fitted_encoder_as_plain_data(trained):
    run = trained["run"]
    raw = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["patientcnn"]
    state = raw["data"]["static"]
    assert state == json.loads(json.dumps(state))
    assert state["columns"] == ["group", "score"]  # all but the id and the label column
    assert raw["network"]["config"]["static_features"] == 4
    for family in raw["partners"]["families"]:
        assert family["config"]["static_features"] == 4
    with execution_whitelist(TRUSTED_TARGETS):
        dm = instantiate(OmegaConf.load(run / "config.yaml").data, _convert_="all")
    dm.setup()
    assert StaticEncoder.from_state(state).state() == dm.static_encoder.state()


def test_predict_uses_the_static_table_and_follows_its_values(trained, tmp_path):
    """Predictions with the static table reproduce the run's test figures; setting every
    patient's group to the risky one raises every probability."""
    folder, run = trained["folder"], trained["run"]
    ckpt = run / "checkpoints" / "best.ckpt"
    static = pd.read_csv(folder / "s.csv", dtype={"patient_id": str})
    static.assign(group="a").to_csv(tmp_path / "all_a.csv", index=False)
    probs = {}
    for name, table in (("given", folder / "s.csv"), ("all_a", tmp_path / "all_a.csv")):
        out = tmp_path / f"predictions_{name}.csv"
        proc = run_cli(
            "scripts/predict.py",
            f"checkpoint={ckpt}",
            f"input={folder / 'm.csv'}",
            f"output={out}",
            f"static={table}",
            "progress=false",
            "explain=true",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        frame = pd.read_csv(out, dtype={"patient_id": str}).set_index("patient_id")
        probs[name] = frame["probability"]
    given = probs["given"]
    assert list(given.index) == list(trained["truth"]["ids"])  # ids exactly as written
    risky = static.set_index("patient_id")["group"].reindex(given.index) == "a"
    assert (probs["all_a"][~risky] > given[~risky] + 1e-3).all()
    np.testing.assert_allclose(probs["all_a"][risky], given[risky], atol=1e-6)
    y = pd.read_csv(folder / "y.csv", dtype={"patient_id": str}).set_index("patient_id")["label"]
    assert roc_auc_score(y[given.index], given) > 0.8
    chunked = tmp_path / "chunked.csv"  # scored in chunks of whole patients: the same
    predict_file(
        ckpt, folder / "m.csv", chunked, static=folder / "s.csv", chunk_rows=700, progress=False
    )
    again = pd.read_csv(chunked, dtype={"patient_id": str}).set_index("patient_id")
    np.testing.assert_allclose(again["probability"][given.index], given, atol=1e-6)


def test_export_takes_the_static_covariates_as_a_third_input(trained, tmp_path):
    ckpt = trained["run"] / "checkpoints" / "best.ckpt"
    bundle = load_bundle(ckpt)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(5, bundle.in_channels, bundle.seq_len, generator=generator)
    valid = torch.ones(5, bundle.seq_len, dtype=torch.bool)
    valid[2, 6:] = False
    static = torch.randn(5, 4, generator=generator)
    with torch.no_grad():
        expected = torch.sigmoid(bundle.build_model()(x, valid, static)).numpy()
    scripted = torch.jit.load(str(export_checkpoint(ckpt, "torchscript", tmp_path / "m.pt")))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x, valid, static).numpy(), expected, atol=1e-5)
    side = json.loads((tmp_path / "m.pt.json").read_text())
    assert side["inputs"]["static"] == ["N", 4]
    assert side["static_columns"] == ["group=a", "group=b", "group=c", "score"]
    assert side["data"]["static"]["numeric"]["score"].keys() == {"median", "mean", "std"}
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(export_checkpoint(ckpt, "onnx", tmp_path / "m.onnx")))
    assert [i.name for i in session.get_inputs()] == ["x", "valid", "static"]
    feeds = {"x": x.numpy(), "valid": valid.numpy(), "static": static.numpy()}
    (got,) = session.run(None, feeds)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def model_without_static(folder) -> str:
    """A bundle of a small CNN trained on nothing, without static covariates."""
    preprocessor = Preprocessor().fit(
        np.random.default_rng(0).normal(size=(8, STEPS, 2)), ["hr", "map"]
    )
    net = create_network("cnn", 2, STEPS, channels=[4]).eval()
    data = {
        "columns": {"id_col": "patient_id", "time_col": "time", "label_col": "label"},
        "grid": GridSpec(length=STEPS).state(),
        "preprocessor": preprocessor.state(),
        "input_channels": preprocessor.output_features,
    }
    bundle = bundle_from_networks([net], "cnn", {"channels": [4]}, 2, STEPS, data)
    return str(save_bundle(folder / "plain.ckpt", bundle))


def test_bad_static_input_is_one_line_and_exit_status_2(trained, tmp_path):
    """Training, predict and evaluate each name the file, column or patient at fault."""
    folder = trained["folder"]
    ckpt = str(trained["run"] / "checkpoints" / "best.ckpt")
    static = pd.read_csv(folder / "s.csv", dtype={"patient_id": str})
    static[static["patient_id"] != "0042"].to_csv(tmp_path / "lacks_patient.csv", index=False)
    static.drop(columns="score").to_csv(tmp_path / "lacks_column.csv", index=False)
    plain = model_without_static(tmp_path)
    out = tmp_path / "out.csv"
    predict = [f"checkpoint={ckpt}", f"input={folder / 'm.csv'}", f"output={out}", "progress=false"]
    evaluate = [
        f"checkpoint={ckpt}",
        f"data.measurements={folder / 'm.csv'}",
        f"data.labels={folder / 'y.csv'}",
        f"hydra.run.dir={tmp_path / 'evaluate'}",
    ]
    train = [*table_args(folder)[:3], f"hydra.run.dir={tmp_path / 'train'}", "logger=none"]
    cases = {
        "predict": {
            "no_table": (predict, r"trained with static covariates \(group, score\); give"),
            "lacks_patient": (
                [*predict, f"static={tmp_path / 'lacks_patient.csv'}"],
                r"lacks_patient\.csv: 1 patient\(s\) have no row in the static table \(e\.g\. 0042\)",
            ),
            "lacks_column": (
                [*predict, f"static={tmp_path / 'lacks_column.csv'}"],
                r"lacks_column\.csv: no static column\(s\) score; .*trained with the static "
                r"columns group, score",
            ),
            "model_without_static": (
                [f"checkpoint={plain}", *predict[1:], f"static={folder / 's.csv'}"],
                r"s\.csv: this model was trained without static covariates",
            ),
            "missing_file": (
                [*predict, f"static={tmp_path / 'nope.csv'}"],
                r"nope\.csv",
            ),
        },
        "evaluate": {
            "no_table": (evaluate, r"trained with static covariates \(group, score\)"),
            "lacks_patient": (
                [*evaluate, f"data.static={tmp_path / 'lacks_patient.csv'}"],
                r"lacks_patient\.csv: 1 patient\(s\) have no row .*0042",
            ),
        },
        "train": {
            "lacks_patient": (
                [*train, f"data.static={tmp_path / 'lacks_patient.csv'}"],
                r"lacks_patient\.csv: 1 patient\(s\) have no row .*0042",
            ),
            "lacks_column": (
                [*train, f"data.static={folder / 's.csv'}", "data.static_columns=[group,age]"],
                r"s\.csv: no static column\(s\) age; columns are: group, score, label\. Set "
                r"data.static_columns",
            ),
            "label_as_covariate": (
                [*train, f"data.static={folder / 's.csv'}", "data.static_columns=[label]"],
                r"s\.csv: column 'label' is the id, label or split column",
            ),
            "missing_file": ([*train, f"data.static={tmp_path / 'nope.csv'}"], r"nope\.csv"),
        },
    }
    scripts = {
        "predict": "scripts/predict.py",
        "evaluate": "scripts/evaluate.py",
        "train": "train.py",
    }
    for script, group in cases.items():
        results = run_batch(ROOT / scripts[script], {k: v[0] for k, v in group.items()}, tmp_path)
        for name, (_, pattern) in group.items():
            result = results[name]
            lines = result["stderr"].strip().splitlines()
            assert result["rc"] == 2, (script, name, result["stderr"][-2000:])
            assert "Traceback" not in result["stderr"], (script, name)
            assert len(lines) == 1 and lines[0].startswith("error: "), (script, name, lines)
            assert re.search(pattern, lines[0]), (script, name, lines[0])
    assert not out.exists()
    assert not (tmp_path / "evaluate" / "metrics.json").exists()
    assert not (tmp_path / "train" / "checkpoints").exists()
