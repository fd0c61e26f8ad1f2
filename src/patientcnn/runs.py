"""The run folder of a training: one run at a time, and no result-like leftovers on failure.

``RunGuard`` is a Hydra callback (configs/train.yaml, ``hydra.callbacks.run_guard``).
Before Hydra creates anything in ``hydra.run.dir`` it checks that the path can be a
folder and locks it (``FolderLock``): a second run into a busy folder stops with one
line, a lock left by a killed run is replaced. When the job fails, everything the run
created there is removed except its log, which ends with a line saying the run failed;
files that were there before (the interrupted run a ``resume=true`` continues) are kept.
An interrupted job (SIGTERM, Ctrl-C) is not a failure: its checkpoints stay for resume.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from patientcnn.config import check_targets
from patientcnn.distributed import secondary_rank
from patientcnn.errors import UserError
from patientcnn.exit_policy import exit_with
from patientcnn.files import LOCK_NAME, FolderLock

log = logging.getLogger(__name__)


class RunGuard(Callback):
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.lock: FolderLock | None = None
        self.before: set[str] = set()
        self.created = False

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or secondary_rank():  # rank 0 locks and cleans the folder
            return
        try:
            self._start(config)
        except UserError as err:  # Hydra would only warn about an exception here
            exit_with(err)

    def _start(self, config: DictConfig) -> None:
        check_targets({k: v for k, v in config.items_ex(resolve=False) if k != "hydra"}, "")
        check_env_set(config)
        folder = Path(str(config.hydra.run.dir)).absolute()  # hydra.job.chdir may move cwd
        if folder.exists() and not folder.is_dir():
            raise UserError(
                f"hydra.run.dir={folder}: is a file, not a folder; choose another run folder"
            )
        self.created = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(
                f"hydra.run.dir={folder}: cannot create the run folder ({err.strerror})"
            ) from err
        self.before = set(os.listdir(folder))
        self.lock = FolderLock(folder).acquire()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.lock is None or job_return.status is JobStatus.COMPLETED:
            return
        if _failed(job_return):
            self._clean_failed_run(config, job_return)
        else:  # SIGTERM, Ctrl-C: keep checkpoints/last.ckpt for resume=true
            _to_log_file(
                "run INTERRUPTED: no result yet; continue it with resume=true "
                f"hydra.run.dir={self.lock.folder}"
            )

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.lock is not None:
            self.lock.release()
            if self.created and not any(self.lock.folder.iterdir()):
                self.lock.folder.rmdir()  # stopped before writing anything, not even a log
            self.lock = None

    def _clean_failed_run(self, config: DictConfig, job_return: Any) -> None:
        folder = self.lock.folder
        log_name = f"{config.hydra.job.name}.log"
        for name in sorted(set(os.listdir(folder)) - self.before - {LOCK_NAME, log_name}):
            path = folder / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        _to_log_file(f"run FAILED: {_reason(job_return)}; this folder holds no result")


# Environment variables that make a process (or its children: DDP ranks, joblib
# workers) load or run code; a config may not set them through hydra.job.env_set.
CODE_LOADING_PREFIXES = ("LD_", "DYLD_", "PYTHON", "PERL5")
CODE_LOADING_NAMES = frozenset({"BASH_ENV", "ENV", "PATH", "NODE_OPTIONS", "SHELLOPTS"})


def check_env_set(config: DictConfig) -> None:
    for name in config.hydra.job.get("env_set") or {}:
        upper = str(name).upper()
        if upper.startswith(CODE_LOADING_PREFIXES) or upper in CODE_LOADING_NAMES:
            raise UserError(
                f"config hydra.job.env_set.{name}: {name} would let the config load code into "
                "this run; set it in your shell if you mean it"
            )


def _failed(job_return: Any) -> bool:
    """A failure (bad input, a bug), not an interruption (a signal, Ctrl-C)."""
    error = getattr(job_return, "_return_value", None)
    if isinstance(error, SystemExit):
        return getattr(error, "user_message", None) is not None
    return isinstance(error, Exception)


def _reason(job_return: Any) -> str:
    error = getattr(job_return, "_return_value", None)
    if isinstance(error, SystemExit):
        return getattr(error, "user_message", None) or f"exit status {error.code}"
    if isinstance(error, BaseException):
        text = str(error).strip()
        return text.splitlines()[0] if text else type(error).__name__
    return "the job did not complete"


def _to_log_file(message: str) -> None:
    """Write to the run's log file only (the console already shows the error)."""
    record = logging.LogRecord("patientcnn", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            handler.flush()
