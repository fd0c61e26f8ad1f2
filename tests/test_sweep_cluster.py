"""Sweeps on a cluster: several workers on one study share its n_trials, the journal file
works beside the database URLs, and a killed worker's trial is failed and re-queued."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import ROOT
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from hydra_plugins.patientcnn_sweeper.resumable_optuna import SURPLUS, WORKER, Slots
from hydra_plugins.patientcnn_sweeper.storage import open_storage
from patientcnn.data.synthetic import write_cohort

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
N_TRIALS = 6
TINY = (  # a trial of about a second: 5 steps of a one-layer CNN, no partners, no report
    "data=small",
    "model=cnn",
    "recipe.steps=5",
    "data.cv_folds=1",
    "data.split.test=0.2",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "partner.nets=[]",
    "report.enabled=false",
    "hparams_search=optuna",
    "hydra.sweeper.params=null",
    "model.depth=1",
    "model.width=8",
    "model.kernel_size=choice(3,5,7)",
    "model.lr=tag(log,interval(0.0001,0.01))",
)


def worker(tmp_path: Path, storage: str, *overrides: str) -> subprocess.Popen:
    """A sweep process as a user starts one per machine: the same command each time."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            *TINY,
            f"paths.data_dir={tmp_path / 'data'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=shared",
            *overrides,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def write_small_cohort(data_dir: Path) -> None:
    """The data=small cohort, written as the training task would write it on first use."""
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        cfg = compose(
            "train", ["data=small", f"paths.data_dir={data_dir}"], return_hydra_config=True
        )
    params = {k: v for k, v in cfg.data.synthetic.items() if k != "name"}
    write_cohort(Path(cfg.data.measurements).parent, **params)


def storage_url(tmp_path: Path, backend: str) -> str:
    if backend == "journal":
        return f"journal:{tmp_path / 'optuna.journal'}"
    return f"sqlite:///{tmp_path / 'optuna.db'}"


@pytest.mark.parametrize(
    "backend", ["journal", pytest.param("sqlite", marks=pytest.mark.slow)]
)  # about 25 s each on two free cores
def test_two_workers_on_one_study_share_its_n_trials(tmp_path, backend):
    url = storage_url(tmp_path, backend)
    write_small_cohort(tmp_path / "data")  # as on a cluster: the data exists before the workers
    workers = [worker(tmp_path, url, f"hydra.sweeper.n_trials={N_TRIALS}") for _ in range(2)]
    logs = [w.communicate(timeout=600)[0] for w in workers]
    for w, log in zip(workers, logs, strict=True):
        assert w.returncode == 0, log[-3000:]
        assert "Traceback" not in log

    trials = optuna.load_study(study_name="shared", storage=open_storage(url)).trials
    kept = [t for t in trials if not t.user_attrs.get(SURPLUS)]
    assert len(kept) == N_TRIALS and all(t.state == TrialState.COMPLETE for t in kept)
    assert all(t.state == TrialState.FAIL for t in trials if t.user_attrs.get(SURPLUS))
    settings = [tuple(sorted(t.params.items())) for t in kept]
    assert len(set(settings)) == N_TRIALS  # no trial proposed or run twice
    ran = [int(log.split("this worker ran ")[1].split()[0]) if "ran " in log else 0 for log in logs]
    assert sum(ran) == N_TRIALS and all(ran), ran  # started together, both ran trials
    assert len({t.user_attrs[WORKER] for t in kept}) == 2
    folders = sorted(int(p.name) for p in (tmp_path / "sweep").iterdir() if p.name.isdigit())
    assert folders == sorted(t.number for t in kept)  # a trial's folder is its number
    assert all((tmp_path / "sweep" / str(t.number) / "metrics.json").exists() for t in kept)


@pytest.mark.parametrize("backend", ["journal", "sqlite"])
def test_a_killed_workers_trial_is_failed_and_requeued_with_its_settings(tmp_path, backend):
    url = storage_url(tmp_path, backend)
    storage = open_storage(url, heartbeat_interval=1, grace_period=1, max_retry=1)
    study = optuna.create_study(study_name="s", storage=storage)
    killed = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    storage.record_heartbeat(killed._trial_id)  # its worker then dies: no more heartbeats
    alive = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    time.sleep(2.2)
    storage.record_heartbeat(alive._trial_id)  # this worker is still running its trial
    assert Slots(study.get_trials(), 3).free == 1

    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert trials[2].params == trials[0].params
    slots = Slots(trials, 3)  # the copy stands in the killed trial's slot: one slot still free
    assert (slots.taken, slots.free, slots.waiting, slots.finished) == (2, 1, 1, 0)
    again = study.ask()  # the next worker to ask runs the re-queued copy first
    assert again.number == 2 and again.params == trials[0].params
    optuna.storages.fail_stale_trials(study)  # the copy is not stale: its heartbeat is its own
    assert study.get_trials()[2].state == TrialState.RUNNING
    study.tell(again, 1.0)
    study.tell(alive, 2.0)
    slots = Slots(study.get_trials(), 3)
    assert (slots.taken, slots.free, slots.finished) == (2, 1, 2)


def test_an_extra_trial_asked_in_a_race_for_the_last_slot_is_surplus(tmp_path):
    study = optuna.create_study(study_name="s", storage=open_storage(f"journal:{tmp_path / 'j'}"))
    a, b = study.ask(), study.ask()  # two workers saw one free slot and both asked
    slots = Slots(study.get_trials(), 1)
    assert not slots.surplus(a.number) and slots.surplus(b.number)


@pytest.mark.slow
def test_a_worker_killed_mid_trial_leaves_its_trial_to_the_next_worker(tmp_path):
    """kill -9 a worker while its trial trains: once its heartbeat is stale, the next
    worker fails that trial, re-runs its settings in a new folder and completes n_trials."""
    url = storage_url(tmp_path, "journal")
    write_small_cohort(tmp_path / "data")
    beat = ("hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3")
    doomed = worker(tmp_path, url, "hydra.sweeper.n_trials=2", "recipe.steps=100000", *beat)
    storage = open_storage(url)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and doomed.poll() is None:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="shared", storage=storage)
        except KeyError:  # not created yet
            continue
        if any(t.state == TrialState.RUNNING for t in study.get_trials()):
            break
    time.sleep(3)  # into the training
    doomed.kill()
    doomed.wait()
    time.sleep(4)  # the grace period passes
    proc = worker(tmp_path, url, "hydra.sweeper.n_trials=2", *beat)
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log[-3000:]

    trials = optuna.load_study(study_name="shared", storage=open_storage(url)).trials
    assert trials[0].state == TrialState.FAIL  # the killed one
    copy = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert copy.state == TrialState.COMPLETE and copy.params == trials[0].params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    assert (tmp_path / "sweep" / str(copy.number) / "metrics.json").exists()
    assert not (tmp_path / "sweep" / "0" / "metrics.json").exists()


def test_a_trial_left_running_without_a_heartbeat_takes_no_slot(tmp_path):
    """An older sweep (or plain Optuna) left a trial RUNNING with no heartbeat: nobody can
    tell whether it lives, so after the grace period it neither holds a slot nor is waited
    for; the trials of this sweeper's workers always do."""
    study = optuna.create_study(study_name="s", storage=open_storage(f"journal:{tmp_path / 'j'}"))
    study.ask()  # no worker attribute: not run by this sweeper
    mine = study.ask()
    mine.set_user_attr(WORKER, "host:1")
    time.sleep(0.1)
    assert Slots(study.get_trials(), 3, orphan_after=60).taken == 2
    slots = Slots(study.get_trials(), 3, orphan_after=0.05)
    assert (slots.taken, slots.free, slots.running) == (1, 2, 1)
