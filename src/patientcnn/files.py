"""Writing outputs so that an interrupted run never leaves a half-written file.

Temporary files live in the folder of the file they become, named after it and the
process that writes them (``.<name>.<pid>.<random>.tmp``), so the final rename is atomic
and a later run can tell a leftover of a killed process from one still being written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from patientcnn.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


def check_input_file(path: str | Path, what: str = "file") -> Path:
    """``path`` must be an existing regular file: a folder, FIFO, device or socket is
    refused by name before anything opens it (opening a FIFO would wait forever)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except OSError as err:
        raise UserError(f"{path}: cannot be opened ({err.strerror})") from err
    if stat.S_ISDIR(mode):
        raise UserError(f"{path}: is a folder, expected a {what}")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise UserError(f"{path}: is {kind} (a pipe, device or socket), expected a {what} on disk")
    return path


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (through links or relative paths too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def refuse_overwriting_inputs(output: str | Path, inputs: dict[str, str | Path | None]) -> None:
    """An output may never replace one of the run's inputs, not even with overwrite=true."""
    for role, path in inputs.items():
        if path is not None and Path(output).exists() and same_file(output, path):
            raise UserError(
                f"{output}: is the {role} of this run; writing there would replace it "
                "(overwrite=true does not apply to inputs); choose another output"
            )


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _owner(name: str) -> int | None:
    """The process id written into a temporary name (``.<target>.<pid>.<random>.tmp``
    or ``.patientcnn-chunks-<pid>-<random>``)."""
    stem = name.removesuffix(".tmp")
    for part in reversed(stem.replace("-", ".").split(".")[:-1]):
        if part.isdigit():
            return int(part)
    return None


def remove_stale_temporaries(folder: str | Path, patterns: tuple[str, ...]) -> list[Path]:
    """Remove leftovers of killed runs in ``folder`` matching ``patterns`` (globs): those
    whose writing process is gone. A live process's files are left alone."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for pattern in patterns:
        for path in folder.glob(pattern):
            pid = _owner(path.name)
            if pid is None or pid_alive(pid):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.info(
            "removed %d temporary file(s) left by an interrupted run in %s", len(removed), folder
        )
    return removed


def temporary_name_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def atomic_write(path: str | Path, write: Callable[[Path], None], overwrite: bool = True) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` in one step.

    The temporary file lives in the target folder so the rename is atomic on the same
    file system; on any failure it is removed and ``path`` is left as it was. Temporary
    files of ``path`` left by a killed process are removed first.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass overwrite=true to replace it")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent, (f".{path.name}.*.tmp",))
        fd, tmp = tempfile.mkstemp(
            prefix=temporary_name_prefix(path), suffix=".tmp", dir=path.parent
        )
    except OSError as err:
        raise UserError(
            f"{path}: cannot be written ({err.strerror or type(err).__name__})"
        ) from err
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        os.replace(tmp_path, path)
    except OSError as err:  # a full disk, a quota, a folder made read-only meanwhile
        if err.errno is None:
            raise
        raise UserError(f"{path}: cannot be written ({err.strerror})") from err
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, obj: object, overwrite: bool = True) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text), overwrite=overwrite)


class FolderLock:
    """One run at a time in a folder: ``<folder>/.lock`` holds the owner's pid and host.

    A lock whose process is gone (same host) is stale: it is replaced, with a note. A
    live owner, or an owner on another host, makes ``acquire`` a UserError.
    """

    def __init__(self, folder: str | Path, setting: str = "hydra.run.dir") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.setting = setting
        self.held = False

    def acquire(self) -> FolderLock:
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._clear_if_stale()
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(me)
            self.held = True
            return self
        raise UserError(f"{self.folder}: could not lock the run folder; try again")

    def _clear_if_stale(self) -> None:
        try:
            pid_text, _, host = self.path.read_text().strip().partition(" ")
        except OSError:
            return
        pid = int(pid_text) if pid_text.isdigit() else -1
        if host and host != socket.gethostname():
            raise UserError(
                f"{self.folder}: another run (process {pid} on {host}) holds this run folder; "
                f"wait for it, choose another {self.setting}, or delete {self.path} if that "
                "run is gone"
            )
        if pid_alive(pid) and pid != os.getpid():
            raise UserError(
                f"{self.folder}: another run (process {pid}) is using this run folder; wait "
                f"for it to finish or choose another {self.setting}"
            )
        log.warning("removing a stale lock of process %s in %s", pid, self.folder)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(frame):
    """A copy of a DataFrame whose text cells cannot run as spreadsheet formulas: a cell
    starting with = + - @, tab or carriage return gets a leading single quote (OWASP's
    advice against CSV injection). Numbers are left alone; Parquet outputs keep the
    exact values."""
    import pandas as pd

    out = frame.copy()
    for name in out.columns:
        column = out[name]
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            continue
        text = column.astype(object)
        risky = text.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_LEADS))
        if risky.any():
            out[name] = text.where(~risky.astype(bool), "'" + text.astype(str))
    return out
