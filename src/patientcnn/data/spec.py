"""What the user's input tables are and where they lie, without reading them.

This module imports no numerical library (no pandas, torch or Lightning), so that an
entry point can refuse a missing input file in a fraction of a second, before it pays
for those imports.
"""

from __future__ import annotations

from collections.abc import Mapping

from patientcnn.files import check_input_file

# the data config keys (``data.*``) that name an input file
INPUT_FILE_KEYS = (
    "measurements",
    "labels",
    "test_measurements",
    "test_labels",
    "static",
    "test_static",
)


def check_input_files(data: Mapping) -> None:
    """Every input file named in the data config ``data`` must exist (``check_input_file``:
    the message the readers would give later, but before seconds of imports).

    A synthetic cohort's files are written by the run itself, so they are not checked;
    a key left unset (``???``) or not a plain path is left to the full config check."""
    if _plain(data, "synthetic"):
        return
    for key in INPUT_FILE_KEYS:
        path = _plain(data, key)
        if isinstance(path, str) and path:
            check_input_file(path)


def _plain(data: Mapping, key: str) -> object:
    """``data[key]``, or None where it is absent, missing (``???``) or does not resolve."""
    try:
        return data.get(key)
    except Exception:  # noqa: BLE001  (OmegaConf's missing value or a broken interpolation)
        return None
