"""What the user's input tables are and where they lie, without reading them.

``TableSpec`` is built once from the data config (``data.*``) or a checkpoint and handed
to the loaders (``patientcnn.data.cohort``) instead of a dozen forwarded arguments.
This module imports no numerical library (no pandas, torch or Lightning), so that an
entry point can refuse a missing input file in a fraction of a second, before it pays
for those imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from patientcnn.errors import UserError
from patientcnn.files import check_input_file

if TYPE_CHECKING:
    from patientcnn.data.eav import EAVSpec
    from patientcnn.data.engine import EngineSpec
    from patientcnn.data.reshape import GridSpec

DUPLICATES = ("error", "aggregate")
UNMATCHED = ("error", "drop")

# the data config keys (``data.*``) that name an input file
INPUT_FILE_KEYS = (
    "measurements",
    "labels",
    "test_measurements",
    "test_labels",
    "static",
    "test_static",
)


@dataclass(frozen=True)
class TableSpec:
    """How to read a long measurement table (and its labels) into a cohort.

    The columns' names (``id_col``, ``time_col``, ``label_col``, and ``split_col``, a
    per-patient train/val/test column); ``features``: the feature columns (an EAV
    table's variables) to keep, None for every numeric one; ``positive_label``: the label
    value meaning the outcome happened, when labels are not 0/1; ``duplicates``: rows
    sharing a patient and time are an 'error' or are combined ('aggregate', as ``grid.agg``
    combines rows sharing a step); ``unmatched``: patients in only one of measurements and
    labels stop the run ('error') or are left out ('drop'); ``eav``: the table is
    entity-attribute-value (None: wide); ``grid``: how times become steps (None: the
    default grid); ``engine``: pandas in memory, or DuckDB out of core
    (``patientcnn.data.engine``; None: pandas).
    """

    id_col: str = "patient_id"
    time_col: str = "time"
    label_col: str = "label"
    features: tuple[str, ...] | None = None
    positive_label: object | None = None
    split_col: str | None = None
    duplicates: str = "error"
    unmatched: str = "error"
    eav: EAVSpec | None = None
    grid: GridSpec | None = None
    engine: EngineSpec | None = None

    def __post_init__(self) -> None:
        if self.duplicates not in DUPLICATES:
            raise UserError(f"data.duplicates must be one of {DUPLICATES}, got {self.duplicates!r}")
        if self.unmatched not in UNMATCHED:
            raise UserError(f"data.unmatched must be one of {UNMATCHED}, got {self.unmatched!r}")
        object.__setattr__(self, "features", tuple(self.features) if self.features else None)
        if self.grid is None:
            from patientcnn.data.reshape import GridSpec  # numpy and pandas: not at import

            object.__setattr__(self, "grid", GridSpec())

    @property
    def columns(self) -> dict[str, str]:
        """The id, time and label column names, as the checkpoint stores them."""
        return {"id_col": self.id_col, "time_col": self.time_col, "label_col": self.label_col}

    @property
    def not_features(self) -> tuple[str, ...]:
        """The label and split columns: never features, even when a label table is given."""
        return tuple(c for c in (self.label_col, self.split_col) if c)


def check_input_files(data: Mapping) -> None:
    """Every input file named in the data config ``data`` must exist (``check_input_file``:
    the message the readers would give later, but before seconds of imports).

    A synthetic cohort's files are written by the run itself, so they are not checked;
    a key left unset (``???``) or not a plain path, and a pattern (``*``, ``?``, ``[``)
    that a loader may expand, are left to the full check when the data is read."""
    if _plain(data, "synthetic"):
        return
    for key in INPUT_FILE_KEYS:
        path = _plain(data, key)
        if isinstance(path, str) and path and not any(c in path for c in "*?["):
            check_input_file(path)


def _plain(data: Mapping, key: str) -> object:
    """``data[key]``, or None where it is absent, missing (``???``) or does not resolve."""
    try:
        return data.get(key)
    except Exception:  # noqa: BLE001  (OmegaConf's missing value or a broken interpolation)
        return None
