"""Interrupted runs: a killed run resumes from its last checkpoint; a NaN loss stops a run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, read_metrics, train_run
from omegaconf import OmegaConf

from patientcnn.errors import UserError
from patientcnn.train import resume_requested

STEPS = 40
RESUMABLE = (
    f"recipe.steps={STEPS}",
    "recipe.evaluations=8",  # a checkpoint every 5 steps
    "callbacks.early_stopping=null",  # every run goes the full STEPS
    "data.cv_folds=2",  # two members: the first finishes, the second is interrupted
)


def start_training(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    """The same command line as train_run, started in the background."""
    out = tmp_path / "run"
    overrides = [
        "data=small",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={out}",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "data.split.test=0.2",
        *RESUMABLE,
        *extra,
    ]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return proc, out


def kill_after_first_checkpoint(proc: subprocess.Popen, last: Path) -> None:
    deadline = time.monotonic() + 300
    while not last.exists():
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_run_resumes_to_the_same_step_count(tmp_path: Path):
    proc, out = start_training(tmp_path / "killed")
    last = out / "checkpoints" / "fold1" / "last.ckpt"
    kill_after_first_checkpoint(proc, last)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists()
    stopped_at = torch.load(last, weights_only=True)["global_step"]
    assert stopped_at < STEPS, "the run was not interrupted midway"

    resumed, _ = train_run(tmp_path / "killed", *RESUMABLE, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert "member fold0: trained before the interruption, reused" in log
    assert f"member fold1: resuming from {last}" in log

    reference, ref_out = train_run(tmp_path / "reference", *RESUMABLE)
    assert reference.returncode == 0, reference.stderr[-3000:]
    got, want = read_metrics(out), read_metrics(ref_out)
    assert [m["steps_run"] for m in got["members"]] == [STEPS, STEPS]
    assert got["members"][0] == want["members"][0]  # the finished member is the same one
    # the same data and model; only the shuffling and dropout draws after the restart differ
    for key in ("val/loss", "test/loss"):
        assert abs(got["metrics"][key] - want["metrics"][key]) < 0.05, (key, got, want)
    assert abs(got["metrics"]["test/auroc"] - want["metrics"]["test/auroc"]) < 0.1


@pytest.mark.parametrize(
    "settings",
    [{"resume": True}, {"ckpt_path": "last"}, {"resume": True, "ckpt_path": "last"}],
)
def test_resume_and_ckpt_path_last_continue_this_run(tmp_path: Path, settings):
    cfg = OmegaConf.create({"resume": False, "ckpt_path": None, **settings})
    with pytest.raises(UserError, match="resume=true: no checkpoint under"):
        resume_requested(cfg, tmp_path)
    last = tmp_path / "checkpoints" / "split" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    assert resume_requested(cfg, tmp_path)


def test_a_checkpoint_path_points_to_resume(tmp_path: Path):
    cfg = OmegaConf.create({"resume": True, "ckpt_path": str(tmp_path / "x.ckpt")})
    with pytest.raises(UserError, match="pass resume=true"):
        resume_requested(cfg, tmp_path)


def test_nan_loss_stops_the_run_naming_epoch_and_step(tmp_path: Path):
    proc, out = train_run(tmp_path, "model.lr=1e30")  # the first update sends the weights to inf
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert re.search(
        r"^error: the training loss became nan at epoch \d+, step \d+", proc.stderr, re.M
    )
    assert not (out / "metrics.json").exists()


def test_sigterm_is_an_interruption_not_a_failure(tmp_path: Path):
    """A polite kill (SIGTERM: a scheduler's time limit) keeps last.ckpt for resume=true;
    only a failed run is cleaned up. The lock is released either way."""
    proc, out = start_training(
        tmp_path, "recipe.steps=1000000", "recipe.evaluations=200000"
    )  # until stopped
    deadline = time.monotonic() + 300
    while (last := next(out.rglob("last.ckpt"), None)) is None:  # any checkpoint layout
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)
    assert proc.returncode != 0
    assert last.exists() and not (out / "metrics.json").exists()
    assert not (out / ".lock").exists()
    assert "run INTERRUPTED" in (out / "train.log").read_text()


def test_a_second_run_into_a_busy_run_folder_is_refused(tmp_path: Path):
    """Two trainings into one folder: the second stops with one line and touches nothing."""
    proc, out = start_training(
        tmp_path, "recipe.steps=1000000", "recipe.evaluations=200000"
    )  # until killed
    deadline = time.monotonic() + 300
    while next(out.rglob("*.ckpt"), None) is None:  # the first run is well under way
        assert proc.poll() is None, "the first run ended early"
        assert time.monotonic() < deadline, "no checkpoint folder after 300 s"
        time.sleep(0.01)
    before = sorted(p.name for p in out.iterdir())
    second, _ = train_run(tmp_path, *RESUMABLE)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert second.returncode == 2, second.stderr[-3000:]
    assert re.fullmatch(
        rf"error: {re.escape(str(out))}: another run \(process {proc.pid}\) is using this "
        r"run folder; wait for it to finish or choose another hydra\.run\.dir\n",
        second.stderr,
    ), second.stderr
    assert sorted(p.name for p in out.iterdir()) == before
