"""Turning a UserError into one line on stderr and exit status 2, for every entry point."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from patientcnn.config import first_line
from patientcnn.errors import UserError
from patientcnn.files import atomic_write

EXIT_USER_ERROR = 2
FAILED_TRIAL_FILE = "error.txt"
_FROM_TASK = "_patientcnn_from_task"


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
                _mark_from_task(err)
                raise
            if _in_multirun():
                return _failed_trial(err)
            logging.getLogger("patientcnn").debug("user error", exc_info=True)
            exit_with(err)
        except Exception as err:  # a bug: the traceback is shown, as Python would
            _mark_from_task(err)
            raise

    return wrapper


def exit_with(err: UserError) -> None:
    """Print ``error: <message>`` and exit with status 2 (a SystemExit: Hydra's callback
    runner, which swallows exceptions, lets it through)."""
    print(f"error: {err}", file=sys.stderr)
    stop = SystemExit(EXIT_USER_ERROR)
    stop.user_message = str(err)  # for the run folder's log (patientcnn.runs)
    raise stop from None


def run_main(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function; what fails before the task starts is one line too.

    Hydra composes the config, instantiates its own ``hydra.callbacks``, configures
    logging and creates the run folder before the task runs. A broken or refused config
    (an unknown key, a ``_target_`` outside the allow-list, a run folder that is a
    file) raised there becomes ``error: <message>`` and exit status 2 instead of
    Hydra's traceback. Errors raised by the task itself keep their handling
    (``report_user_errors``). SIGTERM unwinds like an exit, so temporary files are removed.
    """
    _exit_cleanly_on_sigterm()
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing a traceback
    try:
        main()
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as err:
        if getattr(err, _FROM_TASK, False):
            raise
        print(f"error: {describe_setup_error(err)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def describe_setup_error(err: BaseException) -> str:
    """One line for an error raised by Hydra or by our Hydra callback before the task."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror or first_line(err)}"
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        lines.append(first_line(cause))
    text = " ".join(lines) if lines else type(err).__name__
    return f"config: {text}"


def _mark_from_task(err: BaseException) -> None:
    with contextlib.suppress(AttributeError):
        setattr(err, _FROM_TASK, True)


def _exit_cleanly_on_sigterm() -> None:
    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds: finally blocks remove temporary files

    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, stop)


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
