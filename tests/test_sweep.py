"""Sweeps as a user runs them: grid and Optuna multiruns, resume, failed trials, summary.

Each sweep trains a few ten-step trials on the small preset.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import QUICK as FEW_STEPS
from conftest import run_cli

QUICK = ("data=small", "model=cnn", *FEW_STEPS, "logger=none", "trainer.enable_progress_bar=false")


def sweep(tmp_path: Path, sweep_dir: Path, *overrides: str):
    return run_cli(
        "train.py",
        "-m",
        *QUICK,
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    )


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """A 3-trial grid whose kernel_size=30 trial cannot fit the 24 steps (valid padding)."""
    tmp_path = tmp_path_factory.mktemp("grid")
    out = tmp_path / "sweep"
    proc = sweep(
        tmp_path, out, "model.padding=valid", "model.kernel_size=3,30", "model.dilation=1,2"
    )
    return proc, out


def test_grid_runs_every_combination_and_survives_a_failed_trial(grid):
    proc, out = grid
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = sorted(p for p in out.iterdir() if (p / ".hydra").is_dir())
    assert len(trials) == 4
    done = [p for p in trials if (p / "metrics.json").exists()]
    failed = [p for p in trials if (p / "error.txt").exists()]
    assert len(done) == 2 and len(failed) == 2
    for trial in failed:
        assert "kernel_size=30" in (trial / ".hydra/overrides.yaml").read_text()
        assert "spans" in (trial / "error.txt").read_text()
    assert "Traceback" not in proc.stderr


def test_summary_ranks_trials_best_first(grid):
    _, out = grid
    proc = run_cli("scripts/summarize_sweep.py", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(out / "summary.csv")
    assert list(table["status"]) == ["ok", "ok", "failed", "failed"]
    ok = table[table["status"] == "ok"]
    assert ok["objective"].is_monotonic_decreasing
    assert (ok["objective"] == ok["val/auroc"]).all()
    for trial, objective in zip(ok["trial"], ok["objective"], strict=True):
        metrics = json.loads((out / str(trial) / "metrics.json").read_text())["metrics"]
        assert metrics["val/auroc"] == pytest.approx(objective)
    assert set(table["overrides"]) == {
        f"model.kernel_size={k} model.dilation={d}" for k in (3, 30) for d in (1, 2)
    }
    assert "| ok |" in (out / "summary.md").read_text()
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert "model.kernel_size=3 model.dilation=1" in proc.stdout


def test_optuna_study_resumes_without_repeating_trials(tmp_path):
    out, db = tmp_path / "sweep", tmp_path / "optuna.db"
    search = (
        "hparams_search=optuna",
        f"hydra.sweeper.storage=sqlite:///{db}",
        "hydra.sweeper.study_name=test",
        "hydra.sweeper.params=null",  # a small search space: quick trials, one that cannot fit
        "model.padding=valid",
        "model.depth=1",
        "model.width=8",
        "model.kernel_size=choice(3,30)",
        "model.lr=tag(log,interval(0.0001,0.01))",
        "seed=2",  # trial n is proposed with seed 2 + n: kernel sizes 3, 30, 3, 30
    )
    first = sweep(tmp_path, out, *search, "hydra.sweeper.n_trials=2")
    assert first.returncode == 0, first.stderr[-3000:]
    second = sweep(tmp_path, out, *search, "hydra.sweeper.n_trials=4")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 finished trials, 2 to go" in second.stdout + second.stderr
    again = sweep(tmp_path, out, *search, "hydra.sweeper.n_trials=4")
    assert again.returncode == 0 and "already has 4 finished trials" in again.stdout + again.stderr

    trials = optuna.load_study(study_name="test", storage=f"sqlite:///{db}").trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == 4, params  # the resumed run proposed new settings
    states = {t.state for t in trials}  # seeded: this search holds a kernel_size=30 trial
    assert states == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL}
    for t in trials:  # run folders are numbered after the trials; failures are kernel 30
        failed = t.state == optuna.trial.TrialState.FAIL
        assert (out / str(t.number) / "error.txt").exists() == failed
        assert (t.params["model.kernel_size"] == 30) == failed


def test_an_unnamed_optuna_study_is_named_after_what_it_asks(tmp_path):
    """Without study_name, the same command resumes its own study (even with a larger
    n_trials) while a sweep with another setting starts a study of its own."""
    db = tmp_path / "optuna.db"
    search = (
        "hparams_search=optuna",
        f"hydra.sweeper.storage=sqlite:///{db}",
        "hydra.sweeper.params=null",
        "model.depth=1",
        "model.kernel_size=choice(3,5)",
    )
    first = sweep(tmp_path, tmp_path / "a", *search, "model.width=8", "hydra.sweeper.n_trials=1")
    assert first.returncode == 0, first.stderr[-3000:]
    other = sweep(tmp_path, tmp_path / "b", *search, "model.width=4", "hydra.sweeper.n_trials=1")
    assert other.returncode == 0, other.stderr[-3000:]
    again = sweep(tmp_path, tmp_path / "a", *search, "model.width=8", "hydra.sweeper.n_trials=1")
    assert "already has 1 finished trials" in again.stdout + again.stderr
    names = optuna.get_all_study_names(f"sqlite:///{db}")
    assert len(names) == 2 and all(n.startswith("patientcnn-") for n in names)


def test_the_best_trial_gets_the_full_report_afterwards(grid):
    """A trial's report is cheap in sweeps; --best-report rebuilds the best trial's data
    and ensemble and writes the full one (baselines included) into <sweep>/best/."""
    _, out = grid
    proc = run_cli("scripts/summarize_sweep.py", str(out), "--best-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = out / "best" / "report" / "report.md"
    assert page.exists() and "Gradient boosting" in page.read_text()
    best = pd.read_csv(out / "summary.csv")["trial"].iloc[0]
    assert f"trial {best} (the best)" in proc.stdout
