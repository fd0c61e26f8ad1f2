"""The Optuna sweeper for clusters: one study, one budget, any number of workers.

The pinned hydra-optuna-sweeper treats ``n_trials`` as "trials this process adds" and
builds a fresh sampler with the configured seed, so rerunning an interrupted, seeded study
adds ``n_trials`` more trials whose first proposals repeat the finished ones, and two
workers started on one study run ``n_trials`` each. Here:

- ``n_trials`` is the study's total, shared by every worker (a sweep process started on
  the same study: a rerun after an interruption, a second login node, a SLURM job).
  Each trial takes one of the study's ``n_trials`` slots; before every batch a worker
  counts the slots taken in the storage and asks only for free ones, and a worker that
  loses the race for the last slot records its extra trial as FAIL with the user
  attribute ``surplus`` and never runs it. A worker stops when every slot is taken.
- Each trial's proposal is seeded with ``seed + trial number``: reproducible, and two
  workers never propose the same settings from the same seed.
- A trial's run folder is its trial number (``hydra.sweep.subdir``), so the workers of
  one study share one sweep folder without clashing.
- A killed worker's trials are failed once their heartbeat is stale and re-queued with
  the same settings (``storage.py``); the next worker to ask runs them, in a new folder.
  A worker stopped by Ctrl-C or SIGTERM re-queues its running trials at once. A worker
  whose slots are all taken waits while other workers' trials run, to re-run any whose
  worker dies, so the study is complete when the last worker returns.

A study is a question asked of one cohort. ``study_name: auto`` names it after what it
asks: the data, model, recipe, partner, objective, seed, direction and search space (a
hash of them), so the same command resumes its own study while a sweep on other data or
over another space starts a new one instead of "resuming" a stranger's. A named study
(``hydra.sweeper.study_name=...``) is used as given.
"""

from __future__ import annotations

import copy
import datetime
import functools
import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from hydra.core.config_store import ConfigStore
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import OmegaConf, read_write
from optuna.storages import fail_stale_trials
from optuna.trial import TrialState

from hydra_plugins.patientcnn_sweeper.storage import open_storage

log = logging.getLogger(__name__)

SAMPLER_TARGETS = ("hydra_plugins.hydra_optuna_sweeper.*", "optuna.*")
SURPLUS = "surplus"  # user attribute of a trial asked beyond n_trials, never run
WORKER = "worker"  # user attribute: host:pid of the sweep process that ran the trial
POLL_SECONDS = 5  # how often a worker with nothing to run looks at the others' trials


@dataclass
class ResumableOptunaSweeperConf(OptunaSweeperConf):
    """The plugin's settings plus the heartbeat (see ``storage.py``)."""

    _target_: str = "hydra_plugins.patientcnn_sweeper.resumable_optuna.ResumableOptunaSweeper"
    heartbeat_interval: int = 60  # seconds between a running trial's heartbeats
    grace_period: int | None = None  # stale after this many seconds (None: 2 x interval)
    max_retry: int | None = 3  # re-queues of one killed trial (None: no limit)


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="patientcnn_optuna",
    node=ResumableOptunaSweeperConf,
    provider="patientcnn",
)


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper's OptunaSweeper with a shared study budget (see module)."""

    def __init__(
        self,
        sampler: Any,
        heartbeat_interval: int = 60,
        grace_period: int | None = None,
        max_retry: int | None = 3,
        **kwargs: Any,
    ) -> None:
        self.sampler_config = sampler
        self.heartbeat = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "max_retry": max_retry,
        }
        super().__init__(sampler=sampler, **kwargs)

    def sweep(self, arguments: list[str]) -> None:
        with warnings.catch_warnings():  # heartbeat and retry are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return self._sweep(arguments)

    def _sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        if impl.n_jobs < 1:  # joblib's n_jobs=-1 ("all cores") would make an endless loop
            impl.n_jobs = os.cpu_count() or 1
        if impl.study_name in (None, "auto"):
            impl.study_name = study_identity(impl.config, impl.params, arguments, impl.direction)
            # every trial's config (and so hydra.sweep.dir) resolves the derived name too
            arguments = [*arguments, f"hydra.sweeper.study_name={impl.study_name}"]
            with read_write(impl.config.hydra.sweeper):
                impl.config.hydra.sweeper.study_name = impl.study_name
            impl.sweep_dir = impl.config.hydra.sweep.dir
            log.info(
                "study %r: named after the data, model, recipe, objective and search space "
                "(hydra.sweeper.study_name=NAME names it yourself)",
                impl.study_name,
            )
        if impl.storage is None:
            raise ValueError("hydra.sweeper.storage is required: the study must be stored")
        storage = open_storage(str(impl.storage), **self.heartbeat)
        space, fixed_params, fixed_overrides = self._search_space(arguments)
        study = optuna.create_study(
            study_name=impl.study_name,
            storage=storage,
            sampler=impl.sampler,
            directions=impl._get_directions(),
            load_if_exists=True,
        )
        fail_stale_trials(study)
        slots = self._slots(study)
        if slots.finished >= impl.n_trials:
            log.info(
                "study %r already has %d finished trials of n_trials=%d; raise "
                "hydra.sweeper.n_trials to add more",
                impl.study_name,
                slots.finished,
                impl.n_trials,
            )
            return None
        if slots.taken:
            log.info(
                "%s study %r: %d finished trials, %d to go",
                "joining" if slots.running else "resuming",
                impl.study_name,
                slots.finished,
                impl.n_trials - slots.finished,
            )
        worker = f"{socket.gethostname()}:{os.getpid()}"
        ran, waiting_told = 0, False
        while True:
            fail_stale_trials(study)  # a killed worker's trials: failed and re-queued
            slots = self._slots(study)
            wanted = min(impl.n_jobs, slots.free + slots.waiting)
            if wanted <= 0 and slots.running:  # stay: a dead worker's trial is re-run here
                if not waiting_told:
                    log.info(
                        "every trial of n_trials=%d is taken; waiting for %d running in "
                        "other workers (a trial whose worker dies is re-run here)",
                        impl.n_trials,
                        slots.running,
                    )
                    waiting_told = True
                time.sleep(min(POLL_SECONDS, self.heartbeat["heartbeat_interval"]))
                continue
            if wanted <= 0:
                break
            trials = []
            for _ in range(wanted):
                trial = study.ask()
                trial.set_user_attr(WORKER, worker)
                study._storage.record_heartbeat(trial._trial_id)  # alive from the start
                if self._slots(study).surplus(trial.number):
                    trial.set_user_attr(SURPLUS, True)
                    study.tell(trial, state=TrialState.FAIL)
                    break
                self._propose(study, trial, space, fixed_params)
                trials.append(trial)
            if not trials:
                break
            overrides = [
                (
                    *(f"{k}={v}" for k, v in {**t.params, **fixed_params}.items()),
                    *fixed_overrides,
                    f"hydra.sweep.subdir={t.number}",
                )
                for t in trials
            ]
            returns = self._launch(study, trials, overrides)
            self._tell(study, trials, returns)
            ran += len(trials)
        slots = self._slots(study)
        log.info(
            "study %r: this worker ran %d trials; %d of n_trials=%d finished",
            impl.study_name,
            ran,
            slots.finished,
            impl.n_trials,
        )
        self._save_best(study)
        return None

    def _slots(self, study) -> Slots:
        interval = self.heartbeat["heartbeat_interval"]
        grace = self.heartbeat["grace_period"] or 2 * interval
        return Slots(study.get_trials(deepcopy=False), self.sweeper.n_trials, grace)

    def _search_space(self, arguments: list[str]):
        """The plugin's parsing of ``params`` and the command line: (distributions, fixed
        settings, other overrides)."""
        impl = self.sweeper
        impl._process_searchspace_config()
        space, fixed_params, fixed_overrides = create_params_from_overrides(
            [*impl._parse_sweeper_params_config(), *arguments]
        )
        if isinstance(impl.sampler, functools.partial):  # the grid sampler needs the space
            if impl.sampler.func is not optuna.samplers.GridSampler:
                raise ValueError(f"unsupported sampler {impl.sampler.func.__name__}")
            grid = {k: impl._to_grid_sampler_choices(d) for k, d in space.items()}
            impl.sampler = impl.sampler(grid)
            impl.n_trials = min(impl.n_trials, math.prod(len(v) for v in grid.values()))
        for name in fixed_params:
            space.pop(name, None)
        return space, fixed_params, fixed_overrides

    def _propose(self, study, trial, space, fixed_params) -> None:
        """Suggest the trial's settings (a re-queued trial keeps its own), with the sampler
        seeded by ``seed + trial number`` when the sampler config has a seed."""
        seed = self.sampler_config.get("seed")
        if seed is not None and not isinstance(study.sampler, optuna.samplers.GridSampler):
            study.sampler = instantiate(
                self.sampler_config,
                seed=int(seed) + trial.number,
                _execution_whitelist_=SAMPLER_TARGETS,
            )
        for name, distribution in space.items():
            trial._suggest(name, distribution)
        for name, value in fixed_params.items():
            trial.set_user_attr(name, value)
        if self.sweeper.custom_search_space_extender:
            self.sweeper.custom_search_space_extender(self.sweeper.config, trial)

    def _launch(self, study, trials, overrides):
        """Run the batch with the heartbeat of its trials; an interrupted batch (Ctrl-C,
        SIGTERM, a launcher error) fails and re-queues its trials before stopping."""
        impl = self.sweeper
        stop = threading.Event()
        beat = threading.Thread(
            target=_heartbeats,
            args=(study._storage, [t._trial_id for t in trials], stop),
            daemon=True,
        )
        beat.start()
        try:
            return impl.launcher.launch(overrides, initial_job_idx=trials[0].number)
        except BaseException:
            _requeue(study, trials)
            raise
        finally:
            stop.set()
            beat.join()

    def _tell(self, study, trials, returns) -> None:
        """Record each trial's objective; a failed job or a NaN objective is a FAIL. Stop
        (re-raising the trial's error) when more than ``max_failure_rate`` of the batch
        failed."""
        failures = 0
        for trial, ret in zip(trials, returns, strict=True):
            try:
                value = ret.return_value  # raises the error of a failed job
                values = [float(v) for v in value] if len(study.directions) > 1 else float(value)
                study.tell(trial, values)  # a NaN objective is recorded as FAIL
                failed = study._storage.get_trial(trial._trial_id).state == TrialState.FAIL
            except Exception as err:
                log.warning("trial %d failed: %s", trial.number, err)
                study.tell(trial, state=TrialState.FAIL)
                failed = True
            failures += failed
        if failures / len(returns) > self.sweeper.max_failure_rate:
            log.error(
                "%d of %d trials failed (max_failure_rate=%s)",
                failures,
                len(returns),
                self.sweeper.max_failure_rate,
            )
            for ret in returns:
                ret.return_value  # noqa: B018 (raises the trial's error, with its traceback)

    def _save_best(self, study) -> None:
        impl = self.sweeper
        if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            log.error(
                "no trial of study %r completed; each failed trial's folder holds error.txt",
                impl.study_name,
            )
            raise SystemExit(2)
        if len(study.directions) > 1:
            best = {
                "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials]
            }
        else:
            best = {"best_params": study.best_trial.params, "best_value": study.best_trial.value}
            log.info(
                "best trial %d: %s = %s",
                study.best_trial.number,
                best["best_params"],
                best["best_value"],
            )
        OmegaConf.save(
            OmegaConf.create({"name": "optuna", **best}),
            f"{impl.config.hydra.sweep.dir}/optimization_results.yaml",
        )


class Slots:
    """The study's ``n_trials`` slots as its stored trials take them.

    Each trial that is not a re-queued copy (nor marked surplus) takes the next slot, in
    trial-number order; a re-queued copy stands in the slot of the trial it retries, whose
    failure then no longer counts as a result. Trials taking slot ``n_trials`` or later
    are surplus (asked in a race for the last slot).

    A RUNNING trial that no worker of this sweeper ran (no ``worker`` attribute, so no
    heartbeat) and that started more than ``orphan_after`` seconds ago was left running
    by a process without heartbeats (an older version of this sweeper, plain Optuna): it
    takes no slot and nobody waits for it.
    """

    def __init__(
        self,
        trials: list[optuna.trial.FrozenTrial],
        n_trials: int,
        orphan_after: float = 120.0,
    ) -> None:
        self.n_trials = n_trials
        now = datetime.datetime.now()  # Optuna's datetime_start is local time too

        def orphan(t: optuna.trial.FrozenTrial) -> bool:
            started = t.datetime_start
            return (
                t.state == TrialState.RUNNING
                and WORKER not in t.user_attrs
                and started is not None
                and (now - started).total_seconds() > orphan_after
            )

        trials = [t for t in trials if not t.user_attrs.get(SURPLUS) and not orphan(t)]
        originals = [t.number for t in trials if _retried(t) is None]
        self.slot = {number: i for i, number in enumerate(sorted(originals))}
        retried = {n for t in trials for n in _retry_history(t)}
        current = [t for t in trials if t.number not in retried]  # each slot's latest attempt
        self.taken = len(originals)
        self.free = max(0, n_trials - self.taken)
        self.finished = sum(t.state.is_finished() for t in current)
        self.running = sum(t.state == TrialState.RUNNING for t in current)
        self.waiting = sum(
            t.state == TrialState.WAITING and self.slot.get(_original(t), 0) < n_trials
            for t in current
        )

    def surplus(self, number: int) -> bool:
        slot = self.slot.get(number)
        return slot is not None and slot >= self.n_trials


def _retried(trial: optuna.trial.FrozenTrial) -> int | None:
    """The number of the trial this one re-queues (None: not a re-queued copy); read from
    the system attributes ``RetryHeartbeatStaleTrialCallback`` writes, as its
    ``retried_trial_number`` does."""
    return trial.system_attrs.get("failed_trial")


def _retry_history(trial: optuna.trial.FrozenTrial) -> list[int]:
    """The earlier attempts this trial re-queues (``retry_history``, as above)."""
    return trial.system_attrs.get("retry_history", [])


def _original(trial: optuna.trial.FrozenTrial) -> int:
    retried = _retried(trial)
    return trial.number if retried is None else retried


def _heartbeats(storage, trial_ids: list[int], stop: threading.Event) -> None:
    interval = storage.get_heartbeat_interval()
    while True:
        for trial_id in trial_ids:
            try:
                storage.record_heartbeat(trial_id)
            except Exception as err:  # a storage hiccup must not end the heartbeat
                log.warning("heartbeat of trial id %d not recorded: %s", trial_id, err)
        if stop.wait(interval):
            return


def _requeue(study, trials) -> None:
    """Fail the trials still running and re-queue them, as a stale heartbeat would."""
    storage = study._storage
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial in trials:
        if storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            if callback is not None:
                callback(study, copy.deepcopy(storage.get_trial(trial._trial_id)))
        log.warning("trial %d interrupted: failed and re-queued", trial.number)


STUDY_KEYS = ("data", "model", "recipe", "partner", "calibration", "objective", "seed")


def study_identity(config, params, arguments: list[str], direction) -> str:
    """``patientcnn-<hash>`` of what the study asks (the keys above, the searched
    parameters, the command-line overrides and the direction)."""
    asked = {key: _plain(config.get(key)) for key in STUDY_KEYS}
    asked["params"] = OmegaConf.to_container(params, resolve=True) if params else None
    asked["arguments"] = sorted(arguments)
    asked["direction"] = str(direction)
    digest = hashlib.sha256(json.dumps(asked, sort_keys=True, default=str).encode())
    return f"patientcnn-{digest.hexdigest()[:12]}"


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
