"""Security and data integrity, function by function (issue 12).

The end-to-end cases (exit status, one line, nothing left behind) are in the bad-input
catalogues, tests/test_bad_input.py and tests/test_bad_input_predict.py; these are the
fast checks of the pieces they rely on.
"""

from __future__ import annotations

import gzip
import os
import socket

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from patientcnn.config import TRUSTED_TARGETS, check_targets, configured
from patientcnn.data.arrays import load_array_cohort
from patientcnn.data.cohort import load_cohort
from patientcnn.data.labels import read_labels
from patientcnn.data.reshape import GridSpec, id_order, to_arrays
from patientcnn.data.spec import TableSpec
from patientcnn.data.tables import ids_as_text, read_table
from patientcnn.errors import UserError
from patientcnn.files import (
    FolderLock,
    atomic_write,
    csv_safe,
    refuse_overwriting_inputs,
    remove_stale_temporaries,
)
from patientcnn.loggers import ResumableCSVLogger

DEAD_PID = 2**22 + 12345  # above the kernel's pid_max: never a live process


def long_table(ids: list[str], steps: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": np.repeat(ids, steps),
            "time": np.tile(np.arange(steps), len(ids)),
            "hr": np.arange(len(ids) * steps, dtype=float),
        }
    )


# --- 1. config safety -------------------------------------------------------------


def test_allow_list_names_classes_never_packages():
    assert not [t for t in TRUSTED_TARGETS if t.endswith("*")]
    for reader_or_writer in ("torch.load", "torch.save", "numpy.load", "pandas.read_pickle"):
        assert reader_or_writer not in TRUSTED_TARGETS
    assert not [t for t in TRUSTED_TARGETS if t.startswith("patientcnn.files")]


@pytest.mark.parametrize(
    "target", ["torch.load", "torch.save", "os.system", "patientcnn.files.atomic_write"]
)
def test_a_target_outside_the_list_is_refused_before_anything_runs(tmp_path, target):
    marker = tmp_path / "ran"
    node = OmegaConf.create({"_target_": target, "f": str(marker), "obj": 1})
    with pytest.raises(
        UserError, match=rf"config callbacks\.x: _target_ '{target}' is not allowed"
    ):
        configured(node, "callbacks.x")
    assert not marker.exists()


def test_a_nested_target_is_refused_too():
    node = OmegaConf.create(
        {"_target_": "pytorch_lightning.Trainer", "plugins": [{"_target_": "torch.load"}]}
    )
    with pytest.raises(UserError, match=r"config trainer\.plugins\[0\]: _target_ 'torch\.load'"):
        configured(node, "trainer")


def test_listed_classes_are_built():
    node = OmegaConf.create({"_target_": "pytorch_lightning.callbacks.EarlyStopping"})
    assert type(configured(node, "callbacks.es", monitor="val/auroc")).__name__ == "EarlyStopping"
    check_targets(OmegaConf.create({"a": {"_target_": "torch.optim.AdamW"}}), "")


# --- 2. identity ------------------------------------------------------------------


def test_csv_ids_are_kept_exactly_as_written(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(
        "patient_id,time,hr\n0007,0,1\n7,0,2\n01,0,3\n1,0,4\nNA,0,5\n=1+1,0,6\n 8,0,7\n"
    )
    ids = read_table(path, "patient_id")["patient_id"].tolist()
    assert ids == ["0007", "7", "01", "1", "NA", "=1+1", " 8"]


def test_parquet_ids_integers_become_their_decimal_string(tmp_path):
    path = tmp_path / "m.parquet"
    pd.DataFrame({"patient_id": [7, 10, 2**40], "time": [0, 0, 0], "hr": [1.0, 2, 3]}).to_parquet(
        path
    )
    assert read_table(path, "patient_id")["patient_id"].tolist() == ["7", "10", str(2**40)]
    path2 = tmp_path / "s.parquet"
    pd.DataFrame({"patient_id": ["0007", "7"], "time": [0, 0], "hr": [1.0, 2]}).to_parquet(path2)
    assert read_table(path2, "patient_id")["patient_id"].tolist() == ["0007", "7"]


def test_ids_as_text_of_arrays_and_gaps():
    assert ids_as_text(np.array([3, 1])).tolist() == ["3", "1"]
    assert ids_as_text(np.array([b"a", b"007"])).tolist() == ["a", "007"]
    blank = ids_as_text(pd.Series(["a", "", "  "], dtype=object))
    assert blank.iloc[0] == "a" and blank.iloc[1:].isna().all()
    floats = ids_as_text(pd.Series([1.0, np.nan, 12.0]))
    assert floats.iloc[0] == "1" and pd.isna(floats.iloc[1]) and floats.iloc[2] == "12"


def test_numeric_ids_keep_numeric_order_and_leading_zeros_stay_apart():
    ids = np.array(["10", "2", "007", "7", "1"], dtype=object)
    assert ids[id_order(ids)].tolist() == ["1", "2", "7", "007", "10"]
    text = np.array(["b", "a10", "a2"], dtype=object)
    assert text[id_order(text)].tolist() == ["a10", "a2", "b"]


def test_1_and_01_are_two_patients(tmp_path):
    m = long_table(["1", "01"])
    m.to_csv(tmp_path / "m.csv", index=False)
    pd.DataFrame({"patient_id": ["1", "01"], "label": [0, 1]}).to_csv(
        tmp_path / "y.csv", index=False
    )
    cohort = load_cohort(tmp_path / "m.csv", tmp_path / "y.csv")
    assert cohort.arrays.ids.tolist() == ["1", "01"]
    assert cohort.y.tolist() == [0, 1]


def test_label_001_does_not_match_measurement_1(tmp_path):
    long_table(["1", "2"]).to_csv(tmp_path / "m.csv", index=False)
    pd.DataFrame({"patient_id": ["001", "2"], "label": [0, 1]}).to_csv(
        tmp_path / "y.csv", index=False
    )
    with pytest.raises(UserError, match=r"have no label in .*\(e\.g\. 1\).*e\.g\. 001"):
        load_cohort(tmp_path / "m.csv", tmp_path / "y.csv")
    assert read_labels(tmp_path / "y.csv", "patient_id", "label").index.tolist() == ["001", "2"]


def test_npz_ids_are_text(tmp_path):
    path = tmp_path / "x.npz"
    x = np.zeros((3, 4, 2), dtype=np.float32)
    np.savez(path, X=x, y=np.array([0, 1, 0]), ids=np.array([10, 2, 7]))
    arrays, labels, _ = load_array_cohort(path, None, TableSpec())
    assert arrays.ids.tolist() == ["2", "7", "10"]
    assert labels.index.tolist() == ["10", "2", "7"]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_duplicate_column_names_are_an_error_naming_the_column(tmp_path, suffix):
    path = tmp_path / f"m.{suffix}"
    if suffix == "csv":
        path.write_text("patient_id,time,hr,hr\np1,0,1,2\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_arrays(
            [pa.array(["p1"]), pa.array([0]), pa.array([1.0]), pa.array([2.0])],
            names=["patient_id", "time", "hr", "hr"],
        )
        pq.write_table(table, path)
    with pytest.raises(UserError, match=r"column name 'hr' appears more than once"):
        read_table(path, "patient_id")


# --- 3. resource limits and file kinds ----------------------------------------------


def test_a_far_off_time_is_stopped_before_allocating_naming_patient_and_row():
    ids = np.array(["a", "a", "b"], dtype=object)
    hours = np.array([0.0, 1e9, 0.0])
    with pytest.raises(UserError, match=r"patient a spans 1000000001 grid steps \(its row 2 .*"):
        to_arrays(ids, hours, np.ones((3, 1), np.float32), ["hr"], GridSpec())


@pytest.mark.parametrize("far", [1e300, -1e300])
def test_a_time_beyond_int64_never_wraps_into_the_window(far):
    ids = np.array(["a", "a", "a"], dtype=object)
    hours = np.array([0.0, 1.0, far])
    values = np.array([[1.0], [2.0], [99.0]], np.float32)
    for align in ("start",) if far > 0 else ():  # otherwise that row is an end of the stay
        arrays = to_arrays(ids, hours, values, ["hr"], GridSpec(length=4, align=align))
        assert 99.0 not in arrays.x
    anchored = GridSpec(length=4, anchor_col="t0", align="end")
    arrays = to_arrays(ids, hours, values, ["hr"], anchored, anchor=np.full(3, 2.0))
    assert 99.0 not in arrays.x
    if far > 0:
        with pytest.raises(UserError, match=r"patient a spans \d+ grid steps \(its row 3"):
            to_arrays(ids, hours, values, ["hr"], GridSpec())


def test_the_memory_limit_is_checked_before_allocating():
    ids = np.array(["a", "b"], dtype=object)
    grid = GridSpec(length=10**9, memory_limit_gb=1)
    with pytest.raises(UserError, match=r"grid \(2, 1000000000, 1\) would need about .*"):
        to_arrays(ids, np.zeros(2), np.ones((2, 1), np.float32), ["hr"], grid)
    default = GridSpec(length=10**12)  # far beyond any machine: the default limit holds
    with pytest.raises(UserError, match=r"available memory"):
        to_arrays(ids, np.zeros(2), np.ones((2, 1), np.float32), ["hr"], default)


def test_max_steps_null_and_an_explicit_length_lift_the_span_check():
    ids = np.array(["a", "a"], dtype=object)
    hours = np.array([0.0, 30_000.0])
    values = np.ones((2, 1), np.float32)
    assert to_arrays(ids, hours, values, ["hr"], GridSpec(max_steps=None)).x.shape[1] == 30_001
    assert to_arrays(ids, hours, values, ["hr"], GridSpec(length=5)).x.shape[1] == 5


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_files_that_are_not_regular_are_refused_by_name(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "m.csv"
        os.mkfifo(path)
        pattern = r"m\.csv: is a FIFO"
    elif kind == "device":
        path, pattern = "/dev/null", r"/dev/null: is not a regular file"
    else:
        path, pattern = tmp_path, r"is a folder"
    with pytest.raises(UserError, match=pattern):
        read_table(path, "patient_id")


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("patient_id,time\np1,0\n".encode("utf-16"), r"is UTF-16 encoded"),
        (gzip.compress(b"patient_id,time\np1,0\n"), r"is gzip-compressed but not named \.gz"),
        (b"PK\x03\x04" + bytes(100), r"is a zip archive"),
        ("patient_id,time\np\xe9,0\n".encode("latin-1"), r"is not UTF-8 text"),
    ],
)
def test_encodings_and_compression_are_named(tmp_path, content, pattern):
    path = tmp_path / "m.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match=rf"m\.csv: {pattern}"):
        read_table(path, "patient_id")


def test_mixed_aware_and_naive_datetimes_name_the_row(tmp_path):
    from patientcnn.data.tables import TableRows, time_in_hours

    df = pd.DataFrame(
        {
            "patient_id": ["a", "a", "b"],
            "t": ["2024-01-01 00:00+00:00", "2024-01-01 01:00", "2024-01-01 02:00+00:00"],
        }
    )
    with pytest.raises(
        UserError, match=r"'t' mixes date-times with and without a time zone.*row 2"
    ):
        time_in_hours(TableRows(df, "m.csv", "patient_id"), "t")
    df["t"] = ["2024-01-01 00:00+00:00", "2024-01-01 03:00+02:00", "2024-01-01 02:00Z"]
    hours = time_in_hours(TableRows(df, "m.csv", "patient_id"), "t")
    assert hours[1] - hours[0] == pytest.approx(1.0)  # offsets are honoured


# --- 4. files -----------------------------------------------------------------------


def test_a_busy_run_folder_is_refused_and_a_stale_lock_replaced(tmp_path):
    (tmp_path / ".lock").write_text(f"1 {socket.gethostname()}\n")  # pid 1 is always alive
    with pytest.raises(UserError, match=r"another run \(process 1\) is using this run folder"):
        FolderLock(tmp_path).acquire()
    (tmp_path / ".lock").write_text(f"{DEAD_PID} {socket.gethostname()}\n")
    lock = FolderLock(tmp_path).acquire()
    assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    (tmp_path / ".lock").write_text(f"{DEAD_PID} some-other-host\n")
    with pytest.raises(UserError, match=r"on some-other-host.*delete .*\.lock"):
        FolderLock(tmp_path).acquire()


def test_leftovers_of_a_killed_writer_are_removed_and_a_live_ones_kept(tmp_path):
    dead = tmp_path / f".preds.csv.{DEAD_PID}.abcdefgh.tmp"
    live = tmp_path / f".preds.csv.{os.getpid()}.abcdefgh.tmp"
    chunks = tmp_path / f".patientcnn-chunks-{DEAD_PID}-xyz"
    chunks.mkdir()
    (chunks / "part-00000.parquet").write_bytes(b"x")
    for path in (dead, live):
        path.write_text("partial")
    atomic_write(tmp_path / "preds.csv", lambda tmp: tmp.write_text("ok"))
    assert not dead.exists() and live.exists()
    remove_stale_temporaries(tmp_path, (".patientcnn-chunks-*",))
    assert not chunks.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["preds.csv", live.name])


def test_an_input_is_never_an_output(tmp_path):
    data = tmp_path / "m.csv"
    data.write_text("x")
    (tmp_path / "link.csv").symlink_to(data)
    for output in (data, tmp_path / "link.csv", tmp_path / "." / "m.csv"):
        with pytest.raises(UserError, match=r"is the input of this run"):
            refuse_overwriting_inputs(output, {"input": data})
    refuse_overwriting_inputs(tmp_path / "other.csv", {"input": data})


def test_formula_leading_cells_are_neutralised():
    frame = pd.DataFrame(
        {
            "id": ['=HYPERLINK("x")', "+1", "-2", "@SUM(A1)", "\tx", "\rx", "p1", "a=b"],
            "p": np.linspace(-1, 0, 8),
        }
    )
    safe = csv_safe(frame)
    assert safe["id"].tolist() == [
        '\'=HYPERLINK("x")',
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "p1",
        "a=b",
    ]
    assert (safe["p"] == frame["p"]).all()  # numbers, negative ones too, are not text


def test_resumed_csv_log_keeps_the_earlier_epochs(tmp_path):
    first = ResumableCSVLogger(tmp_path, name="csv", version="")
    first.log_metrics({"train/loss": 1.0, "epoch": 0}, step=0)
    first.save()
    again = ResumableCSVLogger(tmp_path, name="csv", version="")
    again.log_metrics({"train/loss": 0.5, "epoch": 1}, step=9)
    again.log_metrics({"val/auroc": 0.7, "epoch": 1}, step=9)  # a new column: header grows
    again.save()
    log = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert log["epoch"].tolist() == [0, 1, 1]
    assert log["train/loss"].tolist()[:2] == [1.0, 0.5]


def test_an_output_that_cannot_be_written_is_one_user_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match=r"afile/out\.csv: cannot be written"):
        atomic_write(tmp_path / "afile" / "out.csv", lambda tmp: tmp.write_text("y"))
