"""Run many command lines of one entry point in a single Python process.

Starting Python with torch and Lightning costs seconds; a catalogue of bad inputs that
each fail while loading would spend almost all its time there. This runs the script
file itself (``runpy``, as ``python script.py ARGS`` does) once per case with its own
``sys.argv``, and records exit status, stdout and stderr of each case separately, and
the top-level packages imported by then (cases run in order, in one process).

Usage: ``python tests/cli_batch.py SCRIPT CASES.json RESULTS.json`` where CASES maps a
case name to its argument list.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import subprocess
import sys
import traceback
from pathlib import Path


def run_batch(script: Path, cases: dict[str, list[str]], folder: Path) -> dict[str, dict]:
    """Run every case of ``script`` in one subprocess; {name: {rc, stdout, stderr, imported}}."""
    cases_file, results_file = folder / "cases.json", folder / "results.json"
    cases_file.write_text(json.dumps(cases))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, __file__, str(script), str(cases_file), str(results_file)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cli_batch failed:\n{proc.stderr[-3000:]}")
    return json.loads(results_file.read_text())


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def main(script: str, cases_file: str, results_file: str) -> None:
    cases = json.loads(Path(cases_file).read_text())
    results = {}
    for name, argv in cases.items():
        out, err = io.StringIO(), io.StringIO()
        rc = 0
        sys.argv = [script, *argv]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as stop:
                rc = _exit_code(stop.code)
            except BaseException:  # what Python would print for an uncaught exception
                traceback.print_exc()
                rc = 1
        imported = sorted({module.partition(".")[0] for module in sys.modules})
        results[name] = {
            "rc": rc,
            "stdout": out.getvalue(),
            "stderr": err.getvalue(),
            "imported": imported,
        }
    Path(results_file).write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:4])
