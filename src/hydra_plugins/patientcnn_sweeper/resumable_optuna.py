"""The Optuna sweeper, made resumable: a rerun finishes a stored study instead of redoing it.

The pinned hydra-optuna-sweeper treats ``n_trials`` as "trials to add" and builds a fresh
sampler with the configured seed, so rerunning an interrupted, seeded study adds
``n_trials`` more trials whose first random proposals repeat the finished ones exactly.
Here ``n_trials`` is the study's total: a rerun runs only the trials still missing, with
the sampler seeded by ``seed + trials already stored`` (still reproducible, never a
repeat), and numbers its run folders after the stored trials.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper's OptunaSweeper with total ``n_trials`` and resume (see module)."""

    def __init__(self, sampler: Any, **kwargs: Any) -> None:
        self.sampler_config = sampler
        super().__init__(sampler=sampler, **kwargs)

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        if impl.n_jobs < 1:  # joblib's n_jobs=-1 ("all cores") would make an endless loop
            impl.n_jobs = os.cpu_count() or 1
        _make_sqlite_folder(impl.storage)
        stored = _stored_trials(impl.storage, impl.study_name)
        if stored:
            finished = sum(t.state.is_finished() for t in stored)
            remaining = impl.n_trials - finished
            if remaining <= 0:
                log.info(
                    "study %r already has %d finished trials of n_trials=%d; raise "
                    "hydra.sweeper.n_trials to add more",
                    impl.study_name,
                    finished,
                    impl.n_trials,
                )
                return None
            log.info(
                "resuming study %r: %d finished trials, %d to go",
                impl.study_name,
                finished,
                remaining,
            )
            impl.n_trials = remaining
            impl.job_idx = len(stored)
            seed = self.sampler_config.get("seed")
            if seed is not None:
                impl.sampler = instantiate(
                    self.sampler_config,
                    seed=int(seed) + len(stored),
                    _execution_whitelist_=("hydra_plugins.hydra_optuna_sweeper.*", "optuna.*"),
                )
        try:
            return impl.sweep(arguments)
        except ValueError:  # the plugin asks for the best trial even when none completed
            stored = _stored_trials(impl.storage, impl.study_name)
            if not stored or any(t.state == optuna.trial.TrialState.COMPLETE for t in stored):
                raise
            log.error(
                "no trial of study %r completed; each failed trial's folder holds error.txt",
                impl.study_name,
            )
            raise SystemExit(2) from None


def _stored_trials(storage: str | None, study_name: str | None) -> list[optuna.trial.FrozenTrial]:
    if storage is None or study_name is None:
        return []
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet
        return []
    return study.get_trials(deepcopy=False)


def _make_sqlite_folder(storage: str | None) -> None:
    """SQLite creates the database file but not its folder (e.g. outputs/ on a fresh clone)."""
    prefix = "sqlite:///"
    if isinstance(storage, str) and storage.startswith(prefix):
        Path(storage[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)
