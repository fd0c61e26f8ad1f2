"""Turning a UserError into one line on stderr and exit status 2, for every entry point."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from patientcnn.errors import UserError
from patientcnn.files import atomic_write

EXIT_USER_ERROR = 2
FAILED_TRIAL_FILE = "error.txt"


def report_user_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Hydra task: a UserError becomes ``error: <message>`` and exit status 2.

    With ``debug=true`` in the config the traceback is shown instead. In a multirun the
    trial is failed instead (see ``_failed_trial``) so that the sweep carries on.
    """

    @functools.wraps(task)
    def wrapper(cfg: Any) -> Any:
        try:
            return task(cfg)
        except UserError as err:
            if cfg.get("debug", False):
                raise
            if _in_multirun():
                return _failed_trial(err)
            logging.getLogger("patientcnn").debug("user error", exc_info=True)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper


def _failed_trial(err: UserError) -> float:
    """Log the error, keep it as ``error.txt`` in the trial's folder, return NaN.

    Optuna records a NaN objective as a failed trial and asks for the next one; the grid
    (basic) sweeper, which would stop at a raised error, carries on too. The sweep
    summary (scripts/summarize_sweep.py) reads ``error.txt`` for the trial's status.
    """
    from hydra.core.hydra_config import HydraConfig

    logging.getLogger("patientcnn").error("trial failed: %s", err)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    atomic_write(output_dir / FAILED_TRIAL_FILE, lambda tmp: tmp.write_text(f"{err}\n"))
    return float("nan")


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
