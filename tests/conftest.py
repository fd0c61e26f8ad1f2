"""Shared fixtures: a small synthetic cohort on disk and a runner for the CLI entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from patientcnn.data.synthetic import write_cohort

ROOT = Path(__file__).resolve().parents[1]
# a run of seconds: a few optimizer steps of one network, 20 % of the patients as test set
QUICK = ("recipe.steps=10", "data.cv_folds=1", "data.split.test=0.2")


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300-patient, 24-step, 4-feature cohort as CSV tables (written once per session)."""
    folder = tmp_path_factory.mktemp("cohort")
    write_cohort(folder, n_patients=300, n_steps=24, n_features=4, seed=1)
    return folder


def run_cli(script: str, *overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run an entry point (e.g. 'train.py') with Hydra overrides, as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def train_run(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`python train.py` on the small preset, a few steps of one network, output in tmp_path/run."""
    out = tmp_path / "run"
    proc = run_cli(
        "train.py",
        "data=small",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={out}",
        *QUICK,
        "logger=none",
        "trainer.enable_progress_bar=false",
        *overrides,
    )
    return proc, out


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())
