"""The Optuna sweeper, made resumable: a rerun finishes a stored study instead of redoing it.

The pinned hydra-optuna-sweeper treats ``n_trials`` as "trials to add" and builds a fresh
sampler with the configured seed, so rerunning an interrupted, seeded study adds
``n_trials`` more trials whose first random proposals repeat the finished ones exactly.
Here ``n_trials`` is the study's total: a rerun runs only the trials still missing, with
the sampler seeded by ``seed + trials already stored`` (still reproducible, never a
repeat), and numbers its run folders after the stored trials.

A study is a question asked of one cohort. ``study_name: auto`` names it after what it
asks: the data, model, recipe, partner, objective, seed, direction and search space (a
hash of them), so the same command resumes its own study while a sweep on other data or
over another space starts a new one instead of "resuming" a stranger's. A named study
(``hydra.sweeper.study_name=...``) is used as given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import OmegaConf, read_write

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
