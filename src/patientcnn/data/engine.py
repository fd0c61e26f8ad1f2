"""Which engine takes a long table to the grid: pandas in memory, or DuckDB out of core.

``data.engine``: ``pandas`` reads the whole table into memory (the reference path);
``duckdb`` bins it on disk with DuckDB, which spills to disk, and writes the grid once as
memory-mapped arrays in a cache folder (``patientcnn.data.engine_duckdb``); ``auto``
(the default) takes DuckDB when the table would need more than ``out_of_core.share`` of
the available memory in pandas, or when the measurements name several files (a glob).

This module only decides; it never imports DuckDB, so a run on the pandas path does not
pay for loading it.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from pathlib import Path

from patientcnn.errors import UserError

log = logging.getLogger(__name__)

ENGINES = ("auto", "pandas", "duckdb")
# Measured: a 30-million-row Parquet table of 10 columns peaked at 10.3 GB resident on the
# pandas path, about 4 copies of its values as float64: the read, the checked matrix,
# the grid and what is made from it.
PANDAS_COPIES = 4
GLOB_CHARS = ("*", "?", "[")


@dataclass(frozen=True)
class EngineSpec:
    """``data.engine`` and ``data.out_of_core``: the engine, when ``auto`` goes out of
    core, where the cached grids live, and DuckDB's own memory and thread limits."""

    engine: str = "auto"
    share: float = 0.5  # auto: DuckDB when pandas would need more than this share
    cache_dir: str | None = None  # null: a hidden folder beside the (first) measurement file
    memory_limit_gb: float | None = None  # DuckDB's limit before it spills; null: 25 %
    threads: int | None = None  # DuckDB's threads; null: all cores

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise UserError(f"data.engine must be one of {ENGINES}, got {self.engine!r}")
        if not (isinstance(self.share, (int, float)) and 0 < self.share <= 1):
            raise UserError(
                f"data.out_of_core.share must be a share of memory in (0, 1], got {self.share!r}"
            )
        if self.memory_limit_gb is not None and not float(self.memory_limit_gb) > 0:
            raise UserError(
                "data.out_of_core.memory_limit_gb must be positive or null, got "
                f"{self.memory_limit_gb!r}"
            )
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise UserError(
                f"data.out_of_core.threads must be a positive integer or null, got {self.threads!r}"
            )


def engine_spec(engine: str = "auto", settings: dict | None = None) -> EngineSpec:
    """The spec of ``data.engine`` / ``data.out_of_core`` (unknown settings named)."""
    settings = dict(settings or {})
    known = {"share", "cache_dir", "memory_limit_gb", "threads"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UserError(
            f"unknown data.out_of_core setting(s) {unknown}; known: {', '.join(sorted(known))}"
        )
    return EngineSpec(engine=engine, **settings)


def is_glob(path: str | Path) -> bool:
    return any(c in str(path) for c in GLOB_CHARS)


def input_files(path: str | Path) -> list[Path]:
    """The files a measurements path names: itself, or a glob's matches in sorted order."""
    if not is_glob(path):
        return [Path(path)]
    matches = sorted(Path(p) for p in glob.glob(str(path)))
    if not matches:
        raise UserError(f"{path}: no file matches this pattern")
    return matches


def pandas_bytes(files: list[Path]) -> int:
    """About what the pandas path would hold at its peak for these files."""
    from patientcnn.data.chunks import estimated_rows
    from patientcnn.data.tables import table_columns

    total = 0
    for path in files:
        columns = len(table_columns(path))  # first: it names a missing or unreadable file
        total += estimated_rows(path) * columns * 8 * PANDAS_COPIES
    return total


def choose(spec: EngineSpec | None, measurements: str | Path) -> str:
    """'pandas' or 'duckdb' for this measurements path (a file or a glob)."""
    spec = spec or EngineSpec(engine="pandas")
    several = is_glob(measurements)
    if spec.engine == "pandas":
        if several:
            raise UserError(
                f"{measurements}: several files (a pattern) need data.engine=duckdb or auto; "
                "data.engine=pandas reads one file"
            )
        return "pandas"
    if spec.engine == "duckdb" or several:
        return "duckdb"
    from patientcnn.data.reshape import available_memory

    available = available_memory()
    if available is None:
        return "pandas"
    needed = pandas_bytes(input_files(measurements))
    if needed > spec.share * available:
        log.info(
            "data.engine=auto: %s would need about %.1f GiB in memory, more than %.0f%% of the "
            "%.1f GiB available; taking it to the grid out of core with DuckDB",
            measurements,
            needed / 2**30,
            100 * spec.share,
            available / 2**30,
        )
        return "duckdb"
    return "pandas"
