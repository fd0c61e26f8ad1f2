"""Turning a UserError into one line on stderr and exit status 2, for every entry point."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

from patientcnn.errors import UserError

EXIT_USER_ERROR = 2


def report_user_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Hydra task: a UserError becomes ``error: <message>`` and exit status 2.

    With ``debug=true`` in the config the traceback is shown instead. In a multirun the
    error is re-raised so the sweeper can mark the trial failed and carry on.
    """

    @functools.wraps(task)
    def wrapper(cfg: Any) -> Any:
        try:
            return task(cfg)
        except UserError as err:
            if cfg.get("debug", False) or _in_multirun():
                raise
            logging.getLogger("patientcnn").debug("user error", exc_info=True)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
