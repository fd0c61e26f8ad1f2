"""The entry points answer --help and refuse a missing input file before they import the
numerical libraries (torch, Lightning, pandas... cost seconds): a user who mistyped a path
hears so at once. A property of what is imported, not a timing, so it cannot flake."""

from __future__ import annotations

import re

import pytest
from cli_batch import run_batch
from conftest import ROOT

# what must not be imported yet; numpy and optuna are Hydra's own (its sweeper plugin)
HEAVY = {
    "torch",
    "pytorch_lightning",
    "lightning",
    "lightning_fabric",
    "pandas",
    "pyarrow",
    "sklearn",
    "scipy",
    "matplotlib",
    "captum",
    "onnx",
    "onnxruntime",
}


def _cases(script: str, tmp_path) -> dict[str, list[str]]:
    missing = str(tmp_path / "missing.csv")
    existing = tmp_path / "model.ckpt"  # never opened: the input is checked first
    existing.write_text("not a checkpoint")
    run = [f"hydra.run.dir={tmp_path / 'run'}"]
    missing_input = {
        "train.py": ["data=table", f"data.measurements={missing}"],
        "scripts/explain_shapes.py": ["data=table", f"data.measurements={missing}"],
        "scripts/predict.py": [
            f"checkpoint={existing}",
            f"input={missing}",
            f"output={tmp_path / 'p.csv'}",
        ],
        "scripts/evaluate.py": [f"checkpoint={existing}", f"data.measurements={missing}"],
        "scripts/export.py": [f"checkpoint={missing}"],
    }[script]
    return {"help": ["--help"], "missing input": [*missing_input, *run]}


@pytest.mark.parametrize(
    "script",
    [
        "train.py",
        "scripts/explain_shapes.py",
        "scripts/predict.py",
        "scripts/evaluate.py",
        "scripts/export.py",
    ],
)
def test_help_and_a_missing_file_need_no_numerical_import(script, tmp_path):
    results = run_batch(ROOT / script, _cases(script, tmp_path), tmp_path)
    helped, refused = results["help"], results["missing input"]
    assert helped["rc"] == 0 and "Powered by Hydra" in helped["stdout"], helped["stderr"]
    assert refused["rc"] == 2, refused["stderr"][-2000:]
    assert re.search(r"missing\.csv: (file|checkpoint) not found", refused["stderr"])
    assert "Traceback" not in refused["stderr"]
    assert HEAVY.isdisjoint(refused["imported"]), sorted(HEAVY & set(refused["imported"]))


def test_the_early_check_names_a_missing_file_and_leaves_the_rest_to_the_readers(tmp_path):
    from omegaconf import OmegaConf

    from patientcnn.data.spec import check_input_files
    from patientcnn.errors import UserError

    here, missing = tmp_path / "m.csv", str(tmp_path / "missing.csv")
    here.write_text("patient_id,time,hr\n")
    with pytest.raises(UserError, match=r"missing\.csv: file not found"):
        check_input_files({"measurements": str(here), "labels": missing})
    with pytest.raises(UserError, match=r"is a folder, expected a file"):
        check_input_files({"measurements": str(tmp_path / "m.csv"), "static": str(tmp_path)})
    # written by the run itself, unset, or a pattern: for the loaders to judge
    check_input_files({"measurements": missing, "synthetic": {"n_patients": 10}})
    check_input_files(OmegaConf.create({"measurements": "???", "labels": None}))
    check_input_files({"measurements": str(tmp_path / "part-*.csv")})
