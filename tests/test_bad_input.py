"""The bad-input catalogue: every malformed input is one message and a non-zero exit.

Each case runs `python train.py ...` on tiny tables as a user would. All cases run in
one process (tests/cli_batch.py) so the catalogue costs one Python start, not forty;
each case is still its own test. For every case the test checks the exit status, that
the message names the file / column / patient / row, that no traceback is shown, that
no output is written and no input changed, and that no measurement value is printed
(the base table holds a distinctive value, SENTINEL, in the row most cases break).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_batch import run_batch
from conftest import QUICK, ROOT

SENTINEL = "31337.25"  # a measurement value that must never appear in any output
N_PATIENTS, N_STEPS = 40, 6
RUN_RECORDS = {"train.log"}  # a failed run keeps only its log, ending "run FAILED: ..."


def measurements() -> pd.DataFrame:
    """40 patients x 6 steps x (hr, map); row 3 (patient p00, time 2) holds SENTINEL."""
    rng = np.random.default_rng(0)
    n = N_PATIENTS * N_STEPS
    m = pd.DataFrame(
        {
            "patient_id": np.repeat([f"p{i:02d}" for i in range(N_PATIENTS)], N_STEPS),
            "time": np.tile(np.arange(N_STEPS), N_PATIENTS),
            "hr": np.round(rng.normal(80, 5, n), 1).astype(object),
            "map": np.round(rng.normal(75, 5, n), 1),
        }
    )
    m.loc[2, "map"] = float(SENTINEL)
    return m


def labels() -> pd.DataFrame:
    ids = [f"p{i:02d}" for i in range(N_PATIENTS)]
    return pd.DataFrame({"patient_id": ids, "label": [i % 2 for i in range(N_PATIENTS)]})


@dataclass
class Case:
    """``make(folder)`` writes the inputs and returns the overrides; ``message`` is a regex."""

    make: Callable[[Path], list[str]]
    message: str
    status: int = 2  # every error the user can fix, Hydra's own config errors too
    left: frozenset[str] = frozenset()  # what the case put in the run folder itself


def tables(m: pd.DataFrame | None = None, y: pd.DataFrame | None = None, *extra: str):
    """A case made of (possibly edited) measurement and label tables plus overrides."""

    def make(folder: Path) -> list[str]:
        (m if m is not None else measurements()).to_csv(folder / "m.csv", index=False)
        (y if y is not None else labels()).to_csv(folder / "y.csv", index=False)
        return [
            "data=table",
            f"data.measurements={folder / 'm.csv'}",
            f"data.labels={folder / 'y.csv'}",
            *extra,
        ]

    return make


def text_file(name: str, content: str | bytes, *extra: str):
    """A case whose measurement file is raw text or bytes."""

    def make(folder: Path) -> list[str]:
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        labels().to_csv(folder / "y.csv", index=False)
        return [
            "data=table",
            f"data.measurements={path}",
            f"data.labels={folder / 'y.csv'}",
            *extra,
        ]

    return make


def edited(column: str, row: int, value: object, frame: Callable = measurements) -> pd.DataFrame:
    df = frame()
    if not isinstance(value, float):
        df[column] = df[column].astype(object)
    df.loc[row, column] = value
    return df


def dropped(column: str, frame: Callable = measurements) -> pd.DataFrame:
    return frame().drop(columns=column)


def with_label_column(values: list) -> pd.DataFrame:
    m = measurements()
    m["label"] = values
    return m


def ragged_csv() -> str:
    lines = measurements().to_csv(index=False).splitlines()
    lines[3] += ",99"  # data row 3 gets a fifth field
    return "\n".join(lines) + "\n"


def split_labels(train_outcomes_equal: bool) -> pd.DataFrame:
    y = labels()
    y["split"] = ["train"] * 24 + ["val"] * 8 + ["test"] * 8
    if train_outcomes_equal:
        y.loc[:23, "label"] = 0
    else:
        y.loc[5, "split"] = "holdout"
    return y


class Payload:
    """Unpickling this object creates a folder: the stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def with_files(make_files: Callable[[Path], list[str]]):
    """The base tables plus whatever ``make_files(folder)`` writes; its overrides last."""

    def make(folder: Path) -> list[str]:
        return [*tables()(folder), *make_files(folder)]

    return make


def pickle_payload(folder: Path) -> list[str]:
    import pickle

    (folder / "evil.pkl").write_bytes(pickle.dumps(Payload(folder / "payload_ran")))
    return [f"+callbacks.x={{_target_:torch.load,f:{folder / 'evil.pkl'},weights_only:false}}"]


def clobber(target: str, key: str = "+callbacks.x"):
    def make(folder: Path) -> list[str]:
        (folder / "victim.txt").write_text("the user's file\n")
        return [f"{key}={{_target_:{target},obj:1,f:{folder / 'victim.txt'}}}"]

    return make


def hydra_callback_shell(folder: Path) -> list[str]:
    return [f"+hydra.callbacks.x={{_target_:os.system,command:'mkdir {folder / 'payload_ran'}'}}"]


def logging_factory(folder: Path) -> list[str]:
    conf = folder / "conf" / "hydra" / "job_logging"
    conf.mkdir(parents=True)
    (conf / "evil.yaml").write_text(
        "version: 1\nhandlers:\n  evil:\n    (): os.mkdir\n"
        f"    path: {folder / 'payload_ran'}\nroot:\n  handlers: [evil]\n"
    )
    return ["--config-dir", str(folder / "conf"), "hydra/job_logging=evil"]


def run_dir_is_a_file(folder: Path) -> list[str]:
    (folder / "afile").write_text("not a folder\n")
    return [f"hydra.run.dir={folder / 'afile'}"]


def busy_run_folder(folder: Path) -> list[str]:
    import socket

    (folder / "run").mkdir()
    (folder / "run" / ".lock").write_text(f"1 {socket.gethostname()}\n")  # pid 1: alive
    return []


def fifo(name: str, labels_too: bool = False):
    def make(folder: Path) -> list[str]:
        import os

        args = tables()(folder)
        target = folder / name
        target.unlink(missing_ok=True)
        os.mkfifo(target)
        key = "data.labels" if labels_too else "data.measurements"
        return [*args, f"{key}={target}"]

    return make


def mixed_timezones() -> pd.DataFrame:
    m = measurements()
    stamps = pd.Timestamp("2024-03-01") + pd.to_timedelta(m["time"], unit="h")
    m["time"] = stamps.dt.strftime("%Y-%m-%d %H:%M:%S+00:00").astype(object)
    m.loc[2, "time"] = "2024-03-01 02:00:00"
    return m


def one_far_time() -> pd.DataFrame:
    return edited("time", 2, 1e9)


def long_stay() -> pd.DataFrame:
    m = measurements()
    extra = pd.DataFrame(
        {"patient_id": "p07", "time": np.arange(6, 25_006), "hr": 80.0, "map": 70.0}
    )
    return pd.concat([m, extra], ignore_index=True)


def with_ids(first: str, second: str) -> pd.DataFrame:
    m = measurements()
    m.loc[m["patient_id"] == "p00", "patient_id"] = first
    m.loc[m["patient_id"] == "p01", "patient_id"] = second
    return m


def labels_with_ids(first: str, second: str) -> pd.DataFrame:
    y = labels()
    y.loc[0, "patient_id"], y.loc[1, "patient_id"] = first, second
    return y


def header() -> str:
    return "patient_id,time,hr,map\n"


CSV = measurements().to_csv(index=False)
M_TABLE = ["data=table"]

CASES: dict[str, Case] = {
    "file_not_found": Case(
        lambda f: [*M_TABLE, f"data.measurements={f / 'nope.csv'}"], r"nope\.csv: file not found"
    ),
    "empty_file": Case(text_file("m.csv", ""), r"m\.csv: (the table is empty|cannot be read)"),
    "header_only": Case(text_file("m.csv", header()), r"m\.csv: the table is empty"),
    "wrong_delimiter": Case(
        text_file("m.csv", CSV.replace(",", ";")),
        r"m\.csv: no id column 'patient_id' \(the file seems to use another delimiter",
    ),
    "unknown_file_type": Case(text_file("m.xlsx", CSV), r"m\.xlsx: unknown file type"),
    "row_with_extra_field": Case(
        text_file("m.csv", ragged_csv()),
        r"m\.csv: cannot be read as a table \(row 3 has 5 fields but the header has 4\)",
    ),
    "corrupt_parquet": Case(
        text_file("m.parquet", bytes(range(256)) * 4), r"m\.parquet: cannot be read as a table"
    ),
    "missing_id_column": Case(
        tables(dropped("patient_id")), r"m\.csv: no id column 'patient_id'.*data\.id_col"
    ),
    "missing_time_column": Case(tables(dropped("time")), r"m\.csv: no time column 'time'"),
    "missing_label_column": Case(
        tables(y=labels().rename(columns={"label": "outcome"})),
        r"y\.csv: no label column 'label'; columns are: patient_id, outcome",
    ),
    "missing_label_column_in_measurements": Case(
        tables(None, None, "data.labels=null"), r"m\.csv: no label column 'label'"
    ),
    "missing_patient_id": Case(
        tables(edited("patient_id", 2, None)), r"m\.csv: column 'patient_id' is empty in row 3"
    ),
    "non_numeric_feature_value": Case(
        tables(edited("hr", 2, "high")),
        r"m\.csv: column 'hr' is not a number in row 3 \(patient p00\)",
    ),
    "non_numeric_listed_feature": Case(
        tables(edited("hr", 2, "high"), None, "data.features=[hr,map]"),
        r"m\.csv: column 'hr' is not a number in row 3 \(patient p00\)",
    ),
    "infinite_value": Case(
        tables(edited("hr", 2, float("inf"))),
        r"m\.csv: column 'hr' is infinite in row 3 \(patient p00\)",
    ),
    "all_missing_feature": Case(
        tables(measurements().assign(spo2=np.nan)), r"m\.csv: column 'spo2' has no values"
    ),
    "feature_not_in_table": Case(
        tables(None, None, "data.features=[hr,spo2]"), r"m\.csv: feature columns not found: spo2"
    ),
    "no_numeric_feature": Case(
        tables(measurements().assign(hr="high", map="low")),
        r"m\.csv: no numeric feature columns found \(other columns: hr, map\)",
    ),
    "duplicate_patient_time": Case(
        tables(pd.concat([measurements().iloc[:3], measurements()], ignore_index=True)),
        r"m\.csv: column 'time' repeats an earlier row's time .*data\.duplicates=aggregate.* "
        r"in row 4 \(patient p00\)",
    ),
    "negative_time": Case(
        tables(edited("time", 2, -1.0)),
        r"m\.csv: column 'time' is negative .*row 3 \(patient p00\)",
    ),
    "unparseable_time": Case(
        tables(edited("time", 2, "yesterday")),
        r"m\.csv: column 'time' is neither a number nor a date-time in row 3 \(patient p00\)",
    ),
    "missing_time": Case(
        tables(edited("time", 2, np.nan)),
        r"m\.csv: column 'time' is missing in row 3 \(patient p00\)",
    ),
    "label_not_binary": Case(
        tables(None, edited("label", 4, 2, labels)), r"y\.csv: column 'label' must be 0/1"
    ),
    "three_label_values": Case(
        tables(None, labels().assign(label=["a", "b", "c", "d"] * 10), "data.positive_label=a"),
        r"y\.csv: column 'label' has 4 distinct values",
    ),
    "positive_label_never_occurs": Case(
        tables(None, None, "data.positive_label=died"),
        r"y\.csv: data\.positive_label='died' never occurs in column 'label'",
    ),
    "missing_label_value": Case(
        tables(None, edited("label", 3, None, labels)),
        r"y\.csv: column 'label' is empty for patient p03",
    ),
    "conflicting_labels": Case(
        tables(None, pd.concat([labels(), labels().iloc[[3]].assign(label=0)])),
        r"y\.csv: patient p03 has more than one label",
    ),
    "label_changes_within_patient": Case(
        tables(with_label_column([0] * 9 + [1] * 3 + [0, 1] * 114), None, "data.labels=null"),
        r"m\.csv: column 'label' must be constant per patient but changes within patient p01",
    ),
    "patient_without_label": Case(
        tables(None, labels().drop(index=5)),
        r"1 patients in .*m\.csv have no label in .*y\.csv \(e\.g\. p05\)",
    ),
    "label_for_unknown_patient": Case(
        tables(None, pd.concat([labels(), pd.DataFrame({"patient_id": ["p99"], "label": [1]})])),
        r"1 patients in .*y\.csv have no measurements in .*m\.csv \(e\.g\. p99\)",
    ),
    "single_outcome": Case(
        tables(None, labels().assign(label=0)),
        r"y\.csv: column 'label' gives all 40 patients the same outcome",
    ),
    "one_outcome_in_training_split": Case(
        tables(None, split_labels(True), "data.split_col=split"),
        r"split column 'split': the train split needs patients of both outcomes",
    ),
    "unknown_split_name": Case(
        tables(None, split_labels(False), "data.split_col=split"),
        r"split column 'split' may only hold train/val/test, found: holdout",
    ),
    "too_few_patients": Case(  # 5 of each outcome train (tests/test_ensemble.py); 1 cannot
        tables(measurements().iloc[: 3 * N_STEPS], labels().iloc[:3]),
        r"each outcome needs at least 2 patients .* one outcome has 1",
    ),
    "sequence_shorter_than_conv_stack": Case(
        tables(None, None, "model=cnn", "model.padding=valid"),
        r"layer 2 \(kernel_size=5.*spans 5 steps but receives only 2",
    ),
    "unknown_config_key": Case(
        tables(None, None, "model.kernal_size=3"), r"Could not override 'model\.kernal_size'"
    ),
    "unknown_config_option": Case(lambda f: ["data=tabel"], r"Could not find 'data/tabel'"),
    "missing_required_setting": Case(
        lambda f: [*M_TABLE], r"Missing mandatory value: data\.measurements"
    ),
    "invalid_config_value": Case(
        tables(None, None, "model.dropout=2"), r"config model: dropout probability"
    ),
    "invalid_trainer_setting": Case(
        tables(None, None, "trainer.precision=banana"), r"config trainer: .*banana"
    ),
    "resume_without_checkpoint": Case(
        tables(None, None, "resume=true"), r"resume=true: no checkpoint under"
    ),
    "checkpoint_to_resume_not_found": Case(
        lambda f: [*tables()(f), f"ckpt_path={f / 'gone.ckpt'}"],
        r"ckpt_path=.*gone\.ckpt: to continue an interrupted run pass resume=true",
    ),
    # --- issue 12: configs never run code or touch files --------------------------------
    "target_loads_a_pickle": Case(
        with_files(pickle_payload),
        r"config callbacks\.x: _target_ 'torch\.load' is not allowed",
    ),
    "target_overwrites_a_file": Case(
        with_files(clobber("torch.save")),
        r"config callbacks\.x: _target_ 'torch\.save' is not allowed",
    ),
    "target_is_a_project_file_writer": Case(
        with_files(clobber("patientcnn.files.atomic_write", "+logger.x")),
        r"config logger\.x: _target_ 'patientcnn\.files\.atomic_write' is not allowed",
    ),
    "trainer_target_replaced": Case(
        tables(None, None, "trainer._target_=builtins.eval"),
        r"config trainer: _target_ 'builtins\.eval' is not allowed",
    ),
    "hydra_callback_runs_a_command": Case(with_files(hydra_callback_shell), r"os\.system"),
    "hydra_callback_overwrites_a_file": Case(
        with_files(clobber("torch.save", "+hydra.callbacks.x")),
        r"torch\.save.* not in the Hydra execution whitelist",
    ),
    "job_logging_handler_factory": Case(
        with_files(logging_factory), r"config: Unable to configure handler 'evil'"
    ),
    "env_set_loads_a_library": Case(
        tables(None, None, "+hydra.job.env_set.LD_PRELOAD=/tmp/evil.so"),
        r"config hydra\.job\.env_set\.LD_PRELOAD: LD_PRELOAD would let the config load code",
    ),
    "run_dir_is_a_file": Case(
        with_files(run_dir_is_a_file), r"hydra\.run\.dir=.*afile: is a file, not a folder"
    ),
    "run_folder_in_use": Case(
        with_files(busy_run_folder),
        r"run: another run \(process 1\) is using this run folder",
        left=frozenset({".lock"}),
    ),
    # --- ids are data: never parsed, merged or renamed ---------------------------------
    "ids_1_and_01_are_two_patients": Case(
        tables(with_ids("1", "01"), labels_with_ids("1", "1x")),
        r"1 patients in .*m\.csv have no label in .*y\.csv \(e\.g\. 01\)",
    ),
    "label_id_001_is_not_measurement_id_1": Case(
        tables(with_ids("1", "p01"), labels_with_ids("001", "p01")),
        r"have no label in .*\(e\.g\. 1\); 1 patients in .*y\.csv have no measurements "
        r"in .*\(e\.g\. 001\)",
    ),
    "duplicate_feature_column": Case(
        text_file("m.csv", CSV.replace("patient_id,time,hr,map", "patient_id,time,hr,hr")),
        r"m\.csv: column name 'hr' appears more than once \(columns 3 and 4\)",
    ),
    "duplicate_id_column_in_labels": Case(
        tables(
            None,
            labels()
            .assign(extra=labels()["patient_id"])
            .set_axis(["patient_id", "label", "patient_id"], axis=1),
        ),
        r"y\.csv: column name 'patient_id' appears more than once",
    ),
    # --- sizes are checked before allocating; only regular files are opened ------------
    "one_time_far_away": Case(
        tables(one_far_time()),
        r"m\.csv: patient p00 spans 1000000001 grid steps \(its row 3 .*data\.grid\.max_steps",
    ),
    "one_patient_very_long": Case(
        tables(long_stay()),
        r"m\.csv: patient p07 spans 25006 grid steps .*data\.grid\.length",
    ),
    "grid_over_the_memory_limit": Case(
        tables(None, None, "data.grid.memory_limit_gb=0.000001"),
        r"m\.csv: the \(patients, timesteps, features\) grid \(40, 6, 2\) \(the length is "
        r"the longest stay: patient p00, 6 steps\) would need about "
        r".*data\.grid\.memory_limit_gb",
    ),
    "grid_length_beyond_memory": Case(
        tables(None, None, "data.grid.length=1000000000000"), r"GiB.*available memory"
    ),
    "measurements_are_a_fifo": Case(fifo("m.csv"), r"m\.csv: is a FIFO"),
    "labels_are_a_fifo": Case(fifo("y.csv", labels_too=True), r"y\.csv: is a FIFO"),
    "array_file_is_a_fifo": Case(fifo("x.npz"), r"x\.npz: is a FIFO"),
    "measurements_are_a_device": Case(
        tables(None, None, "data.measurements=/dev/zero"), r"/dev/zero: is not a regular file"
    ),
    # --- unreadable inputs are named, not a traceback -----------------------------------
    "mixed_timezones": Case(
        tables(mixed_timezones()),
        r"m\.csv: column 'time' mixes date-times with and without a time zone.* row 3 "
        r"\(patient p00\)",
    ),
    "utf16_file": Case(text_file("m.csv", CSV.encode("utf-16")), r"m\.csv: is UTF-16 encoded"),
    "gzip_named_csv": Case(
        text_file("m.csv", gzip.compress(CSV.encode())),
        r"m\.csv: is gzip-compressed but not named \.gz",
    ),
    "plain_text_named_gz": Case(
        text_file("m.csv.gz", CSV), r"m\.csv\.gz: is named \.gz but is not gzip-compressed"
    ),
    "latin1_file": Case(
        text_file("m.csv", CSV.replace("p00", "p\xe90").encode("latin-1")),
        r"m\.csv: is not UTF-8 text",
    ),
    "excel_file_named_csv": Case(
        text_file("m.csv", b"PK\x03\x04" + bytes(200)), r"m\.csv: is a zip archive"
    ),
}


def fingerprint(folder: Path) -> dict[str, str]:
    """Content hash of every input file (the run folder excluded)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and not stat.S_ISFIFO(p.stat().st_mode)
        and "run" not in p.relative_to(folder).parts
    }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Write every case's inputs, run all cases in one process, and record the results."""
    root = tmp_path_factory.mktemp("bad_input")
    argv, before = {}, {}
    for name, case in CASES.items():
        folder = root / name
        folder.mkdir()
        argv[name] = [
            f"hydra.run.dir={folder / 'run'}",
            f"paths.data_dir={root / 'data'}",
            "logger=none",
            *QUICK,
            "trainer.enable_progress_bar=false",
            *case.make(folder),  # last, so a case's own overrides win
        ]
        before[name] = fingerprint(folder)
    argv["debug"] = [*argv["file_not_found"], "debug=true"]
    results = run_batch(ROOT / "train.py", argv, root)
    for name in CASES:
        folder = root / name
        results[name]["folder"] = folder
        results[name]["inputs_unchanged"] = fingerprint(folder) == before[name]
        log = folder / "run" / "train.log"
        results[name]["log"] = log.read_text() if log.exists() else ""
        lock = folder / "run" / ".lock"
        results[name]["lock"] = lock.read_text() if lock.exists() else None
    return results


def test_catalogue_is_large_enough():
    assert len(CASES) >= 65


def test_good_tables_train(tmp_path):
    """The base tables are fine (also with a repeated row when data.duplicates=aggregate):
    every case below fails because of its one edit."""
    m = pd.concat([measurements().iloc[:3], measurements()], ignore_index=True)
    m["hr"] = m["hr"].astype(float)
    argv = tables(m, None, "data.duplicates=aggregate")(tmp_path)
    run = tmp_path / "run"
    result = run_batch(
        ROOT / "train.py",
        {"good": [*argv, f"hydra.run.dir={run}", "logger=none", *QUICK]},
        tmp_path,
    )["good"]
    assert result["rc"] == 0, result["stderr"][-3000:]
    assert (run / "metrics.json").exists() and (run / "checkpoints" / "best.ckpt").exists()
    # a successful run prints and logs no measurement value either
    assert SENTINEL not in result["stdout"] + result["stderr"] + (run / "train.log").read_text()


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(outcomes: dict[str, dict], name: str):
    case, result = CASES[name], outcomes[name]
    shown = result["stdout"] + result["stderr"]
    assert result["rc"] == case.status, shown[-3000:]
    assert re.search(case.message, result["stderr"]), result["stderr"][-3000:]
    assert "Traceback" not in shown
    if case.status == 2:  # one line, ours
        assert result["stderr"].strip().count("\n") == 0, result["stderr"]
        assert result["stderr"].startswith("error: ")
    assert SENTINEL not in shown + result["log"]
    run = result["folder"] / "run"
    written = {p.name for p in run.iterdir()} - RUN_RECORDS - case.left if run.exists() else set()
    assert not written, f"a failed run left {sorted(written)}"
    if result["log"]:  # the log is kept, and says that the run failed
        assert "run FAILED: " in result["log"], result["log"][-2000:]
    if ".lock" in case.left:  # another run's lock is left alone
        assert result["lock"] is not None and result["lock"].startswith("1 ")
    else:
        assert result["lock"] is None, "a failed run kept its lock"
    assert result["inputs_unchanged"]
    assert not (result["folder"] / "payload_ran").exists(), "config data ran code"


def test_debug_flag_shows_the_traceback(outcomes: dict[str, dict]):
    result = outcomes["debug"]
    assert result["rc"] != 0
    assert "Traceback" in result["stderr"] and "nope.csv: file not found" in result["stderr"]
