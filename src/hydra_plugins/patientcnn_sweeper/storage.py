"""Where a study lives, and how a killed worker's trial comes back.

``hydra.sweeper.storage`` is an SQLAlchemy URL (``sqlite:///outputs/optuna.db``,
``postgresql://user:password@host/db``) or ``journal:PATH``: Optuna's journal file (an
append-only log; the storage Optuna recommends on NFS, where SQLite's locks are unsafe).

Every storage gets Optuna's heartbeat: the worker that runs a trial records a heartbeat
every ``heartbeat_interval`` seconds, and before asking for trials every worker fails the
RUNNING trials whose heartbeat is older than ``grace_period`` (its worker was killed:
preempted, out of time, out of memory) and re-queues each with the same settings
(``RetryHeartbeatStaleTrialCallback``, up to ``max_retry`` times), so that the next free
worker runs it instead of the study losing it. RDBStorage has the heartbeat built in;
the journal storage gets it here, the heartbeat kept as a trial system attribute.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # Optuna's own heartbeat interface
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

JOURNAL_PREFIX = "journal:"
HEARTBEAT = "patientcnn:heartbeat"  # a trial's last heartbeat (Unix time) in a journal
CREATE_ATTEMPTS = 5


def open_storage(
    url: str,
    heartbeat_interval: int = 60,
    grace_period: int | None = None,
    max_retry: int | None = 3,
) -> optuna.storages.BaseStorage:
    """The study storage of ``url`` (see the module), with heartbeat and retry."""
    if not isinstance(url, str) or not url:
        raise ValueError(
            "hydra.sweeper.storage must be a database URL (sqlite:///..., postgresql://...) "
            "or journal:PATH"
        )
    with warnings.catch_warnings():  # heartbeat and retry are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = Requeue(max_retry=max_retry)
        if url.startswith(JOURNAL_PREFIX):
            path = Path(url[len(JOURNAL_PREFIX) :].removeprefix("//"))
            path.parent.mkdir(parents=True, exist_ok=True)
            return HeartbeatJournalStorage(
                JournalFileBackend(str(path)), heartbeat_interval, grace_period, retry
            )
        _make_sqlite_folder(url)
        for attempt in range(CREATE_ATTEMPTS):
            try:
                return RDBStorage(
                    url,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=retry,
                )
            except sqlalchemy.exc.DBAPIError:
                # workers started together on a new database race to create its tables:
                # the loser finds them made by the winner on its next try
                if attempt == CREATE_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 + random.random())


class Requeue(RetryHeartbeatStaleTrialCallback):
    """Optuna's re-queueing of a failed trial (a WAITING copy with its settings), without
    the failed trial's last heartbeat: copied along, it would make the copy stale the
    moment a worker picks it up."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != HEARTBEAT}
        super().__call__(study, trial)


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat RDBStorage has: each heartbeat is a
    trial system attribute; a RUNNING trial whose last one is older than the grace
    period (twice the interval unless given) is stale. Trials that never recorded a
    heartbeat are never stale, as in RDBStorage."""

    def __init__(
        self,
        backend: JournalFileBackend,
        heartbeat_interval: int,
        grace_period: int | None,
        callback: Callable[[optuna.Study, FrozenTrial], None] | None,
    ) -> None:
        super().__init__(backend)
        if heartbeat_interval <= 0 or (grace_period is not None and grace_period <= 0):
            raise ValueError("heartbeat_interval and grace_period must be positive seconds")
        self._heartbeat_interval = int(heartbeat_interval)
        self._grace_period = int(grace_period or 2 * heartbeat_interval)
        self._stale_callback = callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [
            t._trial_id
            for t in running
            if HEARTBEAT in t.system_attrs
            and now - float(t.system_attrs[HEARTBEAT]) > self._grace_period
        ]

    def get_heartbeat_interval(self) -> int:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._stale_callback


def _make_sqlite_folder(url: str) -> None:
    """SQLite creates the database file but not its folder (e.g. outputs/ on a fresh clone)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and url != prefix + ":memory:":
        Path(url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)
