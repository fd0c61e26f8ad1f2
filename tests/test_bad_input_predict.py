"""The bad-input catalogue for batch prediction (`scripts/predict.py`).

Contract: ``python scripts/predict.py checkpoint=PATH input=PATH output=PATH
[overwrite=true]``; bad input exits 2 with one ``error: ...`` line naming the file or
column, no traceback, no output written or replaced, no measurement value printed.
All cases run in one process (tests/cli_batch.py); each is its own test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from cli_batch import run_batch
from conftest import ROOT
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
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint trained for one epoch on the catalogue's base tables."""
    folder = tmp_path_factory.mktemp("predict_model")
    argv = [
        *tables(measurements().assign(hr=lambda m: m["hr"].astype(float)), labels())(folder),
        f"hydra.run.dir={folder / 'run'}",
        "logger=none",
        "trainer.max_epochs=1",
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
