"""The bad-input catalogue for batch prediction (`scripts/predict.py`).

Contract: ``python scripts/predict.py checkpoint=PATH input=PATH output=PATH
[overwrite=true]``; bad input exits 2 with one ``error: ...`` line naming the file or
column, no traceback, no output written or replaced, no measurement value printed.
All cases run in one process (tests/cli_batch.py); each is its own test.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from cli_batch import run_batch
from conftest import QUICK, ROOT
from test_bad_input import SENTINEL, edited, fingerprint, labels, measurements, tables


class Payload:
    """Unpickling this object creates a folder: the stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


@dataclass
class Case:
    """``make(folder, ckpt)`` writes inputs and returns the arguments; ``names`` are regexes
    that must all appear in the message."""

    make: Callable[[Path, Path], list[str]]
    names: tuple[str, ...]
    status: int = 2


def predict_args(checkpoint: Path, input_path: Path, output: Path, *extra: str) -> list[str]:
    return [f"checkpoint={checkpoint}", f"input={input_path}", f"output={output}", *extra]


def with_input(frame: Callable[[], object] = measurements, *extra: str):
    def make(folder: Path, ckpt: Path) -> list[str]:
        frame().to_csv(folder / "new.csv", index=False)
        return predict_args(ckpt, folder / "new.csv", folder / "out" / "preds.csv", *extra)

    return make


def with_checkpoint(write: Callable[[Path, Path], None]):
    def make(folder: Path, ckpt: Path) -> list[str]:
        measurements().to_csv(folder / "new.csv", index=False)
        write(folder / "model.ckpt", ckpt)
        return predict_args(folder / "model.ckpt", folder / "new.csv", folder / "out" / "preds.csv")

    return make


def truncated(path: Path, good: Path) -> None:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def noise(path: Path, good: Path) -> None:
    path.write_bytes(bytes(range(256)) * 8)


def payload(path: Path, good: Path) -> None:
    torch.save(Payload(path.parent / "payload_ran"), path)


def existing_output(folder: Path, ckpt: Path) -> list[str]:
    measurements().to_csv(folder / "new.csv", index=False)
    (folder / "out").mkdir()
    (folder / "out" / "preds.csv").write_text("earlier results\n")
    return predict_args(ckpt, folder / "new.csv", folder / "out" / "preds.csv")


def output_is_input(folder: Path, ckpt: Path) -> list[str]:
    measurements().to_csv(folder / "new.csv", index=False)
    return predict_args(ckpt, folder / "new.csv", folder / "new.csv", "overwrite=true")


def output_links_to_input(folder: Path, ckpt: Path) -> list[str]:
    measurements().to_csv(folder / "new.csv", index=False)
    (folder / "out").mkdir()
    (folder / "out" / "preds.csv").symlink_to(folder / "new.csv")
    return predict_args(ckpt, folder / "new.csv", folder / "out" / "preds.csv", "overwrite=true")


def fifo_input(folder: Path, ckpt: Path) -> list[str]:
    os.mkfifo(folder / "new.csv")
    return predict_args(ckpt, folder / "new.csv", folder / "out" / "preds.csv")


def output_under_a_file(folder: Path, ckpt: Path) -> list[str]:
    measurements().to_csv(folder / "new.csv", index=False)
    (folder / "afile").write_text("not a folder\n")
    return predict_args(ckpt, folder / "new.csv", folder / "afile" / "preds.csv")


def raw_input(content: bytes):
    def make(folder: Path, ckpt: Path) -> list[str]:
        (folder / "new.csv").write_bytes(content)
        return predict_args(ckpt, folder / "new.csv", folder / "out" / "preds.csv")

    return make


CSV = measurements().to_csv(index=False)

CASES: dict[str, Case] = {
    "checkpoint_not_found": Case(
        lambda f, c: predict_args(f / "gone.ckpt", f / "new.csv", f / "out" / "preds.csv"),
        (r"gone\.ckpt",),
    ),
    "truncated_checkpoint": Case(with_checkpoint(truncated), (r"model\.ckpt",)),
    "corrupt_checkpoint": Case(with_checkpoint(noise), (r"model\.ckpt",)),
    "checkpoint_with_pickled_payload": Case(with_checkpoint(payload), (r"model\.ckpt",)),
    "input_not_found": Case(
        lambda f, c: predict_args(c, f / "nope.csv", f / "out" / "preds.csv"), (r"nope\.csv",)
    ),
    "features_not_in_input": Case(
        with_input(lambda: measurements().drop(columns="map")), (r"new\.csv", r"map")
    ),
    "id_column_not_in_input": Case(
        with_input(lambda: measurements().drop(columns="patient_id")), (r"new\.csv", r"patient_id")
    ),
    "non_numeric_value_in_input": Case(
        with_input(lambda: edited("hr", 2, "high")), (r"new\.csv", r"'hr'", r"row 3")
    ),
    "infinite_value_in_input": Case(
        with_input(lambda: edited("hr", 2, float("inf"))), (r"new\.csv", r"'hr'", r"row 3")
    ),
    "empty_input": Case(with_input(lambda: measurements().iloc[:0]), (r"new\.csv",)),
    "output_already_exists": Case(existing_output, (r"preds\.csv", r"overwrite")),
    "unknown_config_key": Case(with_input(measurements, "thresold=0.3"), (r"thresold",)),
    "hydra_callback_refused": Case(
        with_input(measurements, "+hydra.callbacks.x={_target_:torch.save,obj:1,f:gone}"),
        (r"config: .*torch\.save",),
    ),
    # issue 12
    "output_is_the_input": Case(output_is_input, (r"new\.csv: is the input of this run",)),
    "output_links_to_the_input": Case(
        output_links_to_input, (r"preds\.csv: is the input of this run",)
    ),
    "input_is_a_fifo": Case(fifo_input, (r"new\.csv: is a FIFO",)),
    "checkpoint_is_a_fifo": Case(
        with_checkpoint(lambda path, good: os.mkfifo(path)), (r"model\.ckpt: is a FIFO",)
    ),
    "input_is_a_device": Case(
        lambda f, c: predict_args(c, Path("/dev/zero"), f / "out" / "preds.csv"),
        (r"/dev/zero: is not a regular file",),
    ),
    "output_folder_is_a_file": Case(output_under_a_file, (r"afile/preds\.csv: cannot be written",)),
    "utf16_input": Case(raw_input(CSV.encode("utf-16")), (r"new\.csv: is UTF-16 encoded",)),
    "gzip_input_named_csv": Case(
        raw_input(gzip.compress(CSV.encode())), (r"new\.csv: is gzip-compressed",)
    ),
    "duplicate_column_in_input": Case(
        raw_input(CSV.replace("patient_id,time,hr,map", "patient_id,time,map,map").encode()),
        (r"new\.csv: column name 'map' appears more than once",),
    ),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint trained for one epoch on the catalogue's base tables."""
    folder = tmp_path_factory.mktemp("predict_model")
    argv = [
        *tables(measurements().assign(hr=lambda m: m["hr"].astype(float)), labels())(folder),
        f"hydra.run.dir={folder / 'run'}",
        "logger=none",
        *QUICK,
    ]
    result = run_batch(ROOT / "train.py", {"train": argv}, folder)["train"]
    assert result["rc"] == 0, result["stderr"][-3000:]
    return folder / "run" / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("bad_predict")
    argv, before = {}, {}
    for name, case in CASES.items():
        folder = root / name
        folder.mkdir()
        argv[name] = case.make(folder, checkpoint)
        before[name] = fingerprint(folder)
    results = run_batch(ROOT / "scripts" / "predict.py", argv, root)
    for name in CASES:
        results[name]["folder"] = root / name
        results[name]["unchanged"] = fingerprint(root / name) == before[name]
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_bad_predict_input(outcomes: dict[str, dict], name: str):
    case, result = CASES[name], outcomes[name]
    shown = result["stdout"] + result["stderr"]
    assert result["rc"] == case.status, shown[-3000:]
    for pattern in case.names:
        assert re.search(pattern, result["stderr"]), (pattern, result["stderr"][-3000:])
    assert "Traceback" not in shown
    if case.status == 2:
        assert result["stderr"].startswith("error: ") and result["stderr"].strip().count("\n") == 0
    assert SENTINEL not in shown
    folder = result["folder"]
    assert not (folder / "payload_ran").exists()
    # nothing new or changed: "out/" holds at most the file that was there before
    assert result["unchanged"]
    assert not any(p.name != "preds.csv" for p in (folder / "out").glob("*")), "stray output"


DEAD_PID = 2**22 + 12345  # above the kernel's pid_max: never a live process
ODD_IDS = ["0007", "7", "007", '=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "NA"]


def odd_ids() -> object:
    m = measurements().assign(hr=lambda t: t["hr"].astype(float))
    m["patient_id"] = m["patient_id"].map(
        {f"p{i:02d}": ODD_IDS[i] if i < len(ODD_IDS) else f"p{i:02d}" for i in range(40)}
    )
    return m


def test_ids_written_exactly_formulas_neutralised_no_temporary_left(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
):
    """Ids come back as written (CSV: formula-like ones behind a quote; Parquet exact);
    chunks stay in the output's folder and leftovers of a killed run are removed."""
    import pandas as pd

    odd_ids().to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / f".preds.csv.{DEAD_PID}.abcdefgh.tmp").write_text("partial")
    (out / f".patientcnn-chunks-{DEAD_PID}-xyz").mkdir()
    (out / f".patientcnn-chunks-{DEAD_PID}-xyz" / "part-00000.parquet").write_bytes(b"x")
    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    argv = {
        fmt: predict_args(checkpoint, tmp_path / "new.csv", out / f"preds.{fmt}", "chunk_rows=50")
        for fmt in ("csv", "parquet")
    }
    results = run_batch(ROOT / "scripts" / "predict.py", argv, tmp_path)
    for fmt in argv:
        assert results[fmt]["rc"] == 0, results[fmt]["stderr"][-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["preds.csv", "preds.parquet"]
    leaked = [p for p in system_tmp.rglob("*") if "patientcnn" in p.name or p.suffix == ".parquet"]
    assert not leaked, "patient data went to the system temp folder"

    exact = pd.read_parquet(out / "preds.parquet")["patient_id"].tolist()
    assert sorted(exact) == sorted(odd_ids()["patient_id"].unique())
    written = pd.read_csv(out / "preds.csv", dtype=str, keep_default_na=False)["patient_id"]
    formula = tuple("=+-@")
    assert sorted(written) == sorted(("'" + i if i.startswith(formula) else i) for i in exact)
    assert not [i for i in written if i.startswith(formula)]
