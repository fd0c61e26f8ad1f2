"""data.engine=duckdb against the pandas path, the reference: the same tensors, stay
lengths and ids for wide and EAV tables, CSV and Parquet, duplicates and every
aggregation and grid option; the cache; one-line messages on bad input; the mapped
datamodule's streaming preprocessing statistics and batches."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from patientcnn.data.batches import TensorBatches
from patientcnn.data.cohort import _load_out_of_core, load_cohort, load_measurements
from patientcnn.data.datamodule import PatientDataModule
from patientcnn.data.eav import EAVSpec
from patientcnn.data.engine import EngineSpec, choose
from patientcnn.data.mapped import fit_preprocessor, is_mapped, observed_share
from patientcnn.data.preprocess import Preprocessor
from patientcnn.data.reshape import GridSpec
from patientcnn.data.spec import TableSpec
from patientcnn.errors import UserError

FEATURES = ["hr", "map", "spo2"]


def long_table(seed: int = 0, duplicated: bool = True, n_rows: int = 600) -> pd.DataFrame:
    """Rows in any order; ids with leading zeros, numeric-looking and plain text; half-hour
    times, some (patient, time) repeated; missing values; an admission time per patient."""
    rng = np.random.default_rng(seed)
    pool = [f"{i:03d}" for i in range(30)] + [str(i) for i in range(3, 40)] + ["p7", "NA"]
    ids = rng.choice(pool, n_rows)
    time = rng.integers(0, 24, n_rows) * 0.5
    df = pd.DataFrame({"patient_id": ids, "time": time})
    if not duplicated:
        df = df.drop_duplicates(["patient_id", "time"]).reset_index(drop=True)
    n = len(df)
    df["hr"] = rng.normal(80, 10, n).round(2)
    df["map"] = np.where(rng.random(n) < 0.3, np.nan, rng.normal(70, 5, n).round(1))
    df["spo2"] = np.where(rng.random(n) < 0.6, np.nan, rng.integers(85, 100, n).astype(float))
    codes = pd.factorize(df["patient_id"])[0]
    df["admit"] = (codes % 3) - 1.0  # constant per patient
    df["label"] = codes % 2
    return df


def eav_table(wide: pd.DataFrame) -> pd.DataFrame:
    keep = ["patient_id", "time", "admit", "label"]
    long = wide.reset_index().melt(
        id_vars=["index", *keep], value_vars=FEATURES, var_name="variable", value_name="value"
    )
    return long.sort_values(["index", "variable"]).drop(columns="index").reset_index(drop=True)


def table(features, grid, duplicates, eav=None, engine=None) -> TableSpec:
    """The test tables' settings: patient_id and time columns."""
    return TableSpec(features=features, grid=grid, duplicates=duplicates, eav=eav, engine=engine)


def write(df: pd.DataFrame, folder, name: str, fmt: str):
    path = folder / f"{name}.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def both(path, grid, duplicates="aggregate", eav=None, features=None, tmp=None, exclude=("label",)):
    reference, raw = load_measurements(path, table(features, grid, duplicates, eav), exclude)
    spec = EngineSpec("duckdb", cache_dir=str(tmp or path.parent / "cache"))
    mapped, patients = _load_out_of_core(
        path, table(features, grid, duplicates, eav, spec), exclude
    )
    return reference, raw, mapped, patients


def duck(path, grid, duplicates="aggregate", eav=None, tmp=None):
    spec = EngineSpec("duckdb", cache_dir=str(tmp or path.parent / "cache"))
    return _load_out_of_core(path, table(None, grid, duplicates, eav, spec), ("label",))


def assert_same(reference, mapped) -> None:
    x = np.asarray(mapped.x)
    assert x.dtype == np.float32 and x.shape == reference.x.shape
    assert np.array_equal(x, reference.x, equal_nan=True)
    assert np.array_equal(mapped.lengths, reference.lengths)
    assert list(mapped.ids) == list(reference.ids)
    assert mapped.features == reference.features and mapped.align == reference.align
    assert np.array_equal(mapped.valid, reference.valid)


GRIDS = {
    "default mean": GridSpec(),
    "step 2, min, length 5": GridSpec(step=2.0, agg="min", length=5),
    "end, per feature": GridSpec(length=6, align="end", agg={"hr": "last", "map": "max"}),
    "anchor start": GridSpec(length=8, anchor_col="admit", agg="max"),
    "anchor end": GridSpec(length=4, step=1.5, anchor_col="admit", align="end"),
}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("shape", ["wide", "eav"])
@pytest.mark.parametrize("name", list(GRIDS))
def test_duckdb_gives_the_pandas_tensors(tmp_path, fmt, shape, name):
    grid = GRIDS[name]
    # CSV rows are not numbered by DuckDB: agg=last is tested there on distinct times
    duplicated = fmt == "parquet" or "last" not in str(grid.agg)
    df = long_table(duplicated=duplicated)
    eav = EAVSpec() if shape == "eav" else None
    table = eav_table(df) if eav else df
    path = write(table, tmp_path, "m", fmt)
    reference, raw, mapped, patients = both(path, grid, eav=eav)
    assert is_mapped(mapped)
    assert_same(reference, mapped)
    labels = raw.groupby("patient_id")["label"].first()
    assert np.array_equal(
        patients.set_index("patient_id")["label"].reindex(labels.index), labels.to_numpy()
    )


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_dates_and_features_chosen_match(tmp_path, fmt):
    df = long_table(duplicated=False).drop(columns=["admit"])
    start = pd.Timestamp("2131-05-01 06:00")
    df["time"] = start + pd.to_timedelta(df["time"], unit="h")
    path = write(df, tmp_path, "m", fmt)
    reference, _, mapped, _ = both(path, GridSpec(step=0.5), duplicates="error")
    assert_same(reference, mapped)
    named, _, named_mapped, _ = both(path, GridSpec(), features=["spo2", "hr"], tmp=tmp_path / "c2")
    assert_same(named, named_mapped)


def test_eav_allow_list_and_dropped_words(tmp_path):
    df = eav_table(long_table())
    df["value"] = df["value"].astype(object)
    df.loc[[3, 40], "value"] = "<5"
    extra = df.iloc[:5].assign(variable="temp", value=36.6)
    path = write(pd.concat([df, extra]), tmp_path, "m", "csv")
    eav = EAVSpec(non_numeric="drop")
    for features in (None, ["spo2", "hr", "never_seen"]):
        reference, _, mapped, _ = both(
            path, GridSpec(), eav=eav, features=features, tmp=tmp_path / str(features)
        )
        assert_same(reference, mapped)
    with pytest.raises(
        UserError,
        match=r"m\.csv: 2 values of column 'value' are not numbers "
        r"\(by variable: '\w+' \d.*patient \S+; set data.eav.non_numeric=drop",
    ):
        duck(path, GridSpec(), eav=EAVSpec(), tmp=tmp_path / "e")


def test_duplicates_error_on_both_engines(tmp_path):
    path = write(long_table(), tmp_path, "m", "parquet")
    with pytest.raises(UserError, match="repeats an earlier row's time"):
        load_measurements(path, table(None, GridSpec(), "error", None), ("label",))
    with pytest.raises(
        UserError,
        match=r"m\.parquet: column 'time' repeats an earlier row's "
        r"time for the same patient in a row of patient \S+ \(\d+ rows in all",
    ):
        duck(path, GridSpec(), duplicates="error")
    eav = eav_table(long_table())
    path = write(eav, tmp_path, "e", "csv")
    with pytest.raises(UserError, match=r"e\.csv: variable '\w+' repeats at one time for patient"):
        duck(path, GridSpec(), duplicates="error", eav=EAVSpec())


def test_csv_last_over_tied_times_is_refused(tmp_path):
    path = write(long_table(), tmp_path, "m", "csv")
    with pytest.raises(UserError, match="does not keep a CSV file's row order.*data.engine=pandas"):
        duck(path, GridSpec(agg="last"))


def test_the_cache_is_reused_until_the_file_changes(tmp_path, caplog):
    df = long_table()
    path = write(df, tmp_path, "m", "parquet")
    spec = EngineSpec("duckdb", cache_dir=str(tmp_path / "cache"))
    args = (path, table(None, GridSpec(), "aggregate", None, spec), ("label",))
    with caplog.at_level(logging.INFO):
        first, _ = _load_out_of_core(*args)
        assert "taken to the grid" in caplog.text
        caplog.clear()
        again, _ = _load_out_of_core(*args)
        assert "reusing the grid cached" in caplog.text
        assert first.folder == again.folder
        caplog.clear()
        write(df.assign(hr=df["hr"] + 1), tmp_path, "m", "parquet")
        changed, _ = _load_out_of_core(*args)
        assert "taken to the grid" in caplog.text and changed.folder != first.folder
        other = (path, table(None, GridSpec(step=2.0), "aggregate", None, spec), ("label",))
        assert _load_out_of_core(*other)[0].folder != changed.folder
    assert not list((tmp_path / "cache").glob(".building-*"))


def test_a_glob_of_files_reads_as_their_concatenation(tmp_path):
    df = long_table()
    whole = write(df, tmp_path, "whole", "parquet")
    parts = tmp_path / "parts"
    parts.mkdir()
    for k, start in enumerate(range(0, len(df), 200)):
        df.iloc[start : start + 200].to_parquet(parts / f"part-{k}.parquet", index=False)
    grid = GridSpec(agg="last")
    reference, _ = load_measurements(whole, table(None, grid, "aggregate", None), ("label",))
    spec = EngineSpec("auto", cache_dir=str(tmp_path / "cache"))
    pattern = str(parts / "part-*.parquet")
    assert choose(spec, pattern) == "duckdb"
    mapped, _ = _load_out_of_core(pattern, table(None, grid, "aggregate", None, spec), ("label",))
    assert_same(reference, mapped)
    with pytest.raises(UserError, match="several files .* need data.engine=duckdb or auto"):
        choose(EngineSpec("pandas"), pattern)


def test_auto_stays_with_pandas_for_a_small_table(tmp_path):
    path = write(long_table(), tmp_path, "m", "csv")
    assert choose(EngineSpec("auto"), path) == "pandas"
    assert choose(EngineSpec("auto", share=1e-12), path) == "duckdb"
    with pytest.raises(UserError, match="data.engine must be one of"):
        EngineSpec("spark")


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d.assign(hr=d["hr"].astype(object).where(d.index != 450, "high")),
            r"m\.csv: column 'hr' is not a number in a row of patient \S+",
        ),
        (
            lambda d: d.assign(patient_id=d["patient_id"].where(d.index != 5, "")),
            r"m\.csv: column 'patient_id' is empty in 1 rows",
        ),
        (
            lambda d: d.assign(time=d["time"].where(d.index != 7, -2.0)),
            r"m\.csv: column 'time' is negative .* in a row of patient \S+",
        ),
        (
            lambda d: d.assign(map=np.nan),
            r"m\.csv: column 'map' has no values \(empty in every row\)",
        ),
        (
            lambda d: d.assign(label=np.arange(len(d)) % 2),
            r"m\.csv: column 'label' must be constant per patient but changes within patient",
        ),
        (  # a value and a gap in one patient: two values, as pandas counts them
            lambda d: d.assign(label=d["label"].astype(float).where(d.index != 3, np.nan)),
            r"m\.csv: column 'label' must be constant per patient but changes within patient",
        ),
    ],
)
def test_bad_input_gets_one_line_naming_file_column_patient(tmp_path, change, message):
    path = write(change(long_table(duplicated=False)), tmp_path, "m", "csv")
    spec = EngineSpec("duckdb", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(UserError, match=message) as caught:
        load_cohort(path, None, TableSpec(duplicates="aggregate", engine=spec))
    assert "\n" not in str(caught.value)
    assert not list((tmp_path / "cache").glob("*"))  # nothing half-written is left


def test_a_word_past_duckdbs_type_sample_is_named_by_line_and_patient(tmp_path):
    n = 30000
    df = pd.DataFrame({"patient_id": np.arange(n) // 24, "time": np.arange(n) % 24, "label": 0})
    df["hr"] = (np.arange(n) % 7 + 0.5).astype(object)
    df.loc[len(df) - 3, "hr"] = "high"  # beyond the rows DuckDB's CSV reader samples
    path = write(df, tmp_path, "m", "csv")
    patient = df["patient_id"].iloc[len(df) - 3]
    with pytest.raises(
        UserError,
        match=rf"m\.csv: column 'hr' is not a number in line "
        rf"{len(df) - 1} \(row {len(df) - 2}, patient {patient}\)",
    ):
        duck(path, GridSpec())


def test_streaming_statistics_equal_the_in_memory_fit(tmp_path):
    path = write(long_table(), tmp_path, "m", "parquet")
    reference, _, mapped, _ = both(path, GridSpec(length=10, align="end"))
    rows = np.array([0, 3, 4, 8, 9, 15, 20, 21, 30])
    settings = {"time_since_observed": True, "missing_indicators": True, "max_gap": 3}
    memory = Preprocessor(**settings).fit(
        reference.subset(rows).x, reference.features, reference.subset(rows).valid
    )
    import patientcnn.data.mapped as mapped_module

    small_blocks = mapped_module.BLOCK_BYTES
    mapped_module.BLOCK_BYTES = 2 * 10 * 3 * 4  # two patients a block: many merges
    try:
        streamed = fit_preprocessor(Preprocessor(**settings), mapped.subset(rows))
        share = observed_share(mapped.subset(rows))
    finally:
        mapped_module.BLOCK_BYTES = small_blocks
    for key in ("mean", "std", "since_mean", "since_std"):
        np.testing.assert_allclose(getattr(streamed, key), getattr(memory, key), rtol=1e-12)
    assert streamed.features == memory.features
    np.testing.assert_array_equal(share, (~np.isnan(reference.subset(rows).x)).any(1).mean(0))


def test_the_mapped_datamodule_serves_the_in_memory_batches(tmp_path):
    df = long_table(n_rows=1500)
    path = write(df, tmp_path, "m", "csv")
    common = {
        "measurements": str(path),
        "duplicates": "aggregate",
        "grid": {"length": 8},
        "preprocess": {"missing_indicators": True, "time_since_observed": True},
        "split": {"test": 0.2, "seed": 0},
        "min_observed": 0.1,
    }
    memory = PatientDataModule(**common, engine="pandas")
    mapped = PatientDataModule(
        **common, engine="duckdb", out_of_core={"cache_dir": str(tmp_path / "cache")}
    )
    for dm in (memory, mapped):
        dm.setup("fit")
    assert is_mapped(mapped.cohort.arrays) and not is_mapped(memory.cohort.arrays)
    assert memory.seq_len == mapped.seq_len and memory.num_channels == mapped.num_channels
    np.testing.assert_array_equal(memory.dev["ids"], mapped.dev["ids"])
    for key in ("mean", "std", "since_mean", "since_std"):
        np.testing.assert_allclose(
            getattr(mapped.preprocessor, key), getattr(memory.preprocessor, key), rtol=1e-12
        )
    train, val = np.arange(0, len(memory.y_dev), 2), np.arange(1, len(memory.y_dev), 2)
    for dm in (memory, mapped):
        dm.select(train, val)
    for split in ("train", "val", "test"):
        ours, theirs = mapped.tensors[split], memory.tensors[split]
        assert len(ours[0]) == len(theirs[0])
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a[: len(a)], b, rtol=1e-5, atol=1e-6)
        shuffled = [TensorBatches(t, 16, shuffle=True, seed=3) for t in (ours, theirs)]
        for got, want in zip(*shuffled, strict=True):
            for a, b in zip(got, want, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_train_py_gives_the_same_model_on_both_engines(tmp_path):
    """`python train.py data.engine=duckdb` end to end: the same cohort, statistics and,
    up to float rounding in the inputs, the same figures as the pandas path."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from conftest import read_metrics, train_run

    records, logs = {}, {}
    for engine in ("pandas", "duckdb"):
        proc, out = train_run(
            tmp_path / engine, f"data.engine={engine}", "partner.nets=[]", "report.enabled=false"
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        records[engine], logs[engine] = read_metrics(out), proc.stdout + proc.stderr
    assert "taken to the grid" in logs["duckdb"] and "taken to the grid" not in logs["pandas"]
    cohorts = [{k: v for k, v in records[e]["cohort"].items() if k != "test_source"} for e in logs]
    assert cohorts[0] == cohorts[1]
    for key, value in records["pandas"]["metrics"].items():
        assert records["duckdb"]["metrics"][key] == pytest.approx(value, abs=1e-3, nan_ok=True), key


def test_an_unwritable_cache_folder_is_one_message(tmp_path):
    path = write(long_table(), tmp_path, "m", "parquet")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    spec = EngineSpec("duckdb", cache_dir=str(blocker / "cache"))
    with pytest.raises(UserError, match="the grid cache cannot be written there.*cache_dir"):
        _load_out_of_core(path, table(None, GridSpec(), "aggregate", None, spec), ("label",))


@pytest.mark.parametrize("how", ["split column", "test table"])
def test_the_test_patients_are_chosen_alike(tmp_path, how):
    df = long_table(n_rows=1500)
    ids = sorted(df["patient_id"].unique())
    if how == "split column":
        role = {p: ("test", "val", "train", "train")[k % 4] for k, p in enumerate(ids)}
        df["split"] = df["patient_id"].map(role)
        df["label"] = df["patient_id"].map({p: k // 4 % 2 for k, p in enumerate(ids)})
        settings = {"measurements": str(write(df, tmp_path, "m", "csv")), "split_col": "split"}
    else:
        test = df["patient_id"].isin(ids[::3])
        settings = {
            "measurements": str(write(df[~test], tmp_path, "m", "parquet")),
            "test_measurements": str(write(df[test], tmp_path, "t", "parquet")),
        }
    settings |= {"duplicates": "aggregate", "preprocess": {"missing_indicators": True}}
    memory = PatientDataModule(**settings, engine="pandas")
    mapped = PatientDataModule(
        **settings, engine="duckdb", out_of_core={"cache_dir": str(tmp_path / "cache")}
    )
    for dm in (memory, mapped):
        dm.setup("fit")
    np.testing.assert_array_equal(memory.dev["ids"], mapped.dev["ids"])
    np.testing.assert_array_equal(memory.test_ids, mapped.test_ids)
    assert len(memory.test_ids) > 0
    if how == "split column":
        np.testing.assert_array_equal(memory.given_val, mapped.given_val)
    for a, b in zip(mapped.tensors["test"], memory.tensors["test"], strict=True):
        torch.testing.assert_close(a[: len(a)], b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_outofcore_benchmark_runs_at_a_small_size(tmp_path):
    """`scripts/benchmark.py --only outofcore --rows N` writes every case (no timings asserted)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "benchmark.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "scripts" / "benchmark.py"),
            "--only",
            "outofcore",
            "--rows",
            "20000",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    cases = {row["case"] for row in rows}
    for table in ("wide CSV", "wide Parquet", "eav CSV", "eav Parquet"):
        for engine in ("pandas (in memory)", "duckdb (build cache)", "duckdb (cache reused)"):
            assert f"{table}: {engine}" in cases
    for row in rows:
        assert row["value"] > 0 and row["peak_mb"] > 0 and row["rows"] > 0


def test_date_time_text_is_iso_or_refused(tmp_path):
    df = long_table(duplicated=False).drop(columns=["admit"])
    stamps = pd.Timestamp("2131-05-01 06:00") + pd.to_timedelta(df["time"], unit="h")
    aware = df.assign(time=stamps.dt.strftime("%Y-%m-%d %H:%M:%S") + "+02:00")
    path = write(aware, tmp_path, "aware", "csv")
    reference, _, mapped, _ = both(path, GridSpec(step=0.5), duplicates="error")
    assert_same(reference, mapped)
    mixed = aware.assign(time=aware["time"].where(aware.index != 4, "2131-05-01 06:00:00"))
    with pytest.raises(
        UserError,
        match=r"mixes date-times with and without a time zone.*"
        r"in a row of patient \S+ \(1 rows in all\)",
    ):
        duck(write(mixed, tmp_path, "mixed", "csv"), GridSpec())
    us = df.assign(time=stamps.dt.strftime("%m/%d/%Y %H:%M"))
    with pytest.raises(
        UserError,
        match=r"us\.csv: column 'time' is neither a number nor an "
        r"ISO 8601 date-time .*data.engine=pandas reads more",
    ):
        duck(write(us, tmp_path, "us", "csv"), GridSpec())
