"""A long table taken to the grid out of core by DuckDB, cached as memory-mapped arrays.

The pandas path (``cohort.load_measurements``) reads the whole table into memory; a
MIMIC-IV ``chartevents`` extract of 300 million rows does not fit. Here DuckDB, which
spills to disk, copies the needed columns into a database file once, checks them,
numbers the patients, bins every row onto the grid and combines rows that share a bin;
the cells arrive sorted and are written sequentially into an (N, L, C) float32 ``.npy``
file, beside the stays' lengths and the ids. Memory follows DuckDB's limit and one block
of patients, not the table.

The result lives in a cache folder keyed by a hash of the inputs (paths, sizes,
modification times) and of every data setting that shapes the grid; a second run with
the same files and settings opens it instead of rebuilding it (and says so).

The pandas path is the reference and this one reproduces it exactly (tested: the same
tensors, stay lengths and ids for wide and EAV tables, CSV and Parquet, duplicates and
every aggregation and grid option). What SQL cannot reproduce exactly is refused with a
message instead: date-time text that is not ISO 8601, ids stored as decimal numbers, and
(CSV only, whose rows DuckDB does not number) ``agg=last`` over rows sharing a time.
Messages name the file, the column and a patient; rows are not numbered (DuckDB scans in
parallel), except a CSV value that DuckDB's own reader cannot convert.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from patientcnn.data.engine import EngineSpec
from patientcnn.data.reshape import PatientArrays, available_memory, id_order
from patientcnn.data.spec import TableSpec
from patientcnn.data.tables import PARQUET_SUFFIXES, table_columns
from patientcnn.errors import UserError
from patientcnn.files import remove_stale_temporaries

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # raise when the cached files' meaning changes: old caches are not reused
CACHE_FOLDER = ".patientcnn-cache"
BUILDING = ".building-"  # + pid + key: a killed build's folder is removed by the next run
DUCKDB_SHARE = 0.25  # DuckDB's memory limit: this share of the available memory by default
BLOCK_BYTES = 16 << 20  # patients are written in blocks of about this many bytes
FETCH_ROWS = 1 << 20  # cells per batch fetched from DuckDB
CLIP = float(2**62)  # as reshape.to_arrays: a time of 1e300 must not wrap around
NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT")
NUMERIC += ("UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "BOOLEAN")
INTEGER = tuple(t for t in NUMERIC if t not in ("FLOAT", "DOUBLE", "DECIMAL", "BOOLEAN"))
DATETIME = ("TIMESTAMP", "DATE")  # every TIMESTAMP kind (with time zone, _NS, _MS, _S)
TZ_SUFFIX = r"(Z|UTC|GMT|[+-]\d{2}(:?\d{2})?)$"  # a time zone ends the text (tables.TZ_SUFFIX)


@dataclass
class Grid:
    """What ``load_measurements`` returns: the mapped arrays and one row per patient."""

    arrays: PatientArrays
    patients: pd.DataFrame  # id_col and the carried columns (label, split), one row each
    folder: Path
    reused: bool


def load_measurements(
    path: str | Path, files: list[Path], table: TableSpec, exclude: tuple[str, ...] = ()
) -> Grid:
    """The DuckDB twin of ``cohort.load_measurements``: the same arrays (``x`` a read-only
    memory map) and, instead of the raw table, one row per patient holding ``id_col`` and
    those of the ``exclude`` columns (label, split) that the table has. ``table`` says how
    to read it (``table.engine``: the cache folder and DuckDB's limits)."""
    spec = table.engine or EngineSpec(engine="duckdb")
    id_col, time_col, features = table.id_col, table.time_col, table.features
    grid, duplicates, eav = table.grid, table.duplicates, table.eav
    columns = _columns(files)
    carry = [c for c in exclude if c and c in columns]
    settings = {
        "version": CACHE_VERSION,
        "id_col": id_col,
        "time_col": time_col,
        "features": list(features) if features else None,
        "grid": grid.state() | {"max_steps": grid.max_steps},
        "duplicates": duplicates,
        "eav": eav.state() if eav else None,
        "carry": carry,
    }
    root = Path(spec.cache_dir) if spec.cache_dir else files[0].resolve().parent / CACHE_FOLDER
    key = cache_key(files, settings)
    folder = root / key
    if (folder / "meta.json").is_file():
        log.info(
            "data.engine=duckdb: reusing the grid cached in %s (same files and settings)", folder
        )
        return Grid(*_open(folder, id_col), folder, True)
    work = root / f"{BUILDING}{os.getpid()}-{key}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(root, (f"{BUILDING}*",))
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
    except OSError as err:
        raise UserError(
            f"{root}: the grid cache cannot be written there ({err.strerror}); choose a "
            "writable folder with data.out_of_core.cache_dir"
        ) from err
    started = time.perf_counter()
    try:
        _Build(path, files, columns, table, carry, spec, work).run(settings)
        (work / "work.duckdb").unlink(missing_ok=True)
        shutil.rmtree(work / "spill", ignore_errors=True)
        if folder.exists():  # another run built it meanwhile
            shutil.rmtree(work, ignore_errors=True)
        else:
            os.replace(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info(
        "data.engine=duckdb: %s taken to the grid in %.1f s and cached in %s (a later run "
        "with the same files and settings reuses it; delete the folder to free the disk)",
        path,
        time.perf_counter() - started,
        folder,
    )
    return Grid(*_open(folder, id_col), folder, False)


def cache_key(files: list[Path], settings: dict) -> str:
    """A hash of the files (resolved path, size, modification time) and the settings."""
    stamp = []
    for f in files:
        info = f.stat()
        stamp.append([str(f.resolve()), info.st_size, info.st_mtime_ns])
    text = json.dumps({"files": stamp, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _open(folder: Path, id_col: str) -> tuple[PatientArrays, pd.DataFrame]:
    meta = json.loads((folder / "meta.json").read_text())
    x = np.load(folder / "x.npy", mmap_mode="r", allow_pickle=False)
    lengths = np.load(folder / "lengths.npy", allow_pickle=False)
    ids = np.load(folder / "ids.npy", allow_pickle=False).astype(object)
    patients = pd.read_parquet(folder / "patients.parquet")
    patients.insert(0, id_col, ids)
    return PatientArrays(x, lengths, ids, list(meta["features"]), meta["align"]), patients


def _columns(files: list[Path]) -> list[str]:
    """The shared header of every file; all CSV or all Parquet."""
    kinds = {f.name.lower().endswith(PARQUET_SUFFIXES) for f in files}
    if len(kinds) > 1:
        raise UserError(f"{files[0].parent}: the files mix CSV and Parquet; give one kind")
    columns = table_columns(files[0])
    for f in files[1:]:
        other = table_columns(f)
        if other != columns:
            raise UserError(
                f"{f}: its columns ({', '.join(other[:10])}) differ from those of {files[0]} "
                f"({', '.join(columns[:10])}); every file of a pattern needs the same columns"
            )
    return columns


def q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + str(name).replace('"', '""') + '"'


def lit(text: str) -> str:
    """A quoted SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def _reason(err: Exception) -> str:
    """DuckDB's first line, with anything quoted (it may be a value) blanked out."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return re.sub(r"(\"[^\"]*\"|'[^']*')", "'...'", text)[:200]


def _values(col: str) -> str:
    """SQL for a patient group: 1 when ``col`` holds one value (or is empty) throughout,
    2 when it changes (two values, or a value and a gap). min/max, not count(DISTINCT):
    DuckDB spills a GROUP BY's min and max to disk past its memory limit, not DISTINCT."""
    return (
        f"CASE WHEN min({col}) IS DISTINCT FROM max({col}) "
        f"OR count({col}) NOT IN (0, count(*)) THEN 2 ELSE 1 END"
    )


class _Build:
    """One build of the grid, in a work folder holding DuckDB's database and spill files."""

    def __init__(self, path, files, columns, table: TableSpec, carry, spec, work) -> None:
        self.path, self.files, self.columns = str(path), files, columns
        self.id_col, self.time_col = table.id_col, table.time_col
        self.features = list(table.features) if table.features else None
        self.grid, self.duplicates, self.eav = table.grid, table.duplicates, table.eav
        self.carry = carry
        self.work = work
        self.parquet = files[0].name.lower().endswith(PARQUET_SUFFIXES)
        self.con = duckdb.connect(str(work / "work.duckdb"))
        limit = spec.memory_limit_gb
        if limit is None:
            available = available_memory() or 4 << 30
            limit = max(DUCKDB_SHARE * available / 2**30, 0.25)
        for setting in (
            f"SET memory_limit = '{float(limit):.3f}GB'",
            f"SET temp_directory = {lit(work / 'spill')}",
            "SET preserve_insertion_order = false",
            "SET TimeZone = 'UTC'",
            "SET enable_progress_bar = false",
            *([f"SET threads = {int(spec.threads)}"] if spec.threads else []),
        ):
            self.con.execute(setting)

    # -- reading -------------------------------------------------------------------------

    def sql(self, text: str):
        try:
            return self.con.execute(text)
        except duckdb.Error as err:
            raise UserError(f"{self.path}: cannot be read as a table ({_reason(err)})") from err

    def one(self, text: str):
        rows = self.sql(text).fetchall()  # whole: DuckDB wants every result finished
        return rows[0] if rows else None

    def source(self, varchar: tuple[str, ...] = ()) -> str:
        files = "[" + ", ".join(lit(f) for f in self.files) + "]"
        if self.parquet:
            return f"read_parquet({files}, file_row_number = true, filename = true)"
        sep = "\t" if self.files[0].name.lower().endswith(".tsv") else ","
        types = ", ".join(f"{lit(c)}: 'VARCHAR'" for c in (self.id_col, *varchar))
        return f"read_csv({files}, header = true, delim = {lit(sep)}, types = {{{types}}})"

    def copy(self, needed: list[str]) -> None:
        """The needed columns, once, into DuckDB's database: later passes read it, not the
        file. A CSV value DuckDB's reader cannot convert is named by column and line."""
        varchar = (self.eav.value_col,) if self.eav else ()
        # CSV times as text: DuckDB's reader would guess day-first or month-first formats;
        # here only numbers and ISO 8601 date-times are read, anything else is refused
        varchar += (self.time_col, *([self.grid.anchor_col] if self.grid.anchor_col else []))
        chosen = ", ".join(q(c) for c in needed)
        if self.parquet:
            files = "[" + ", ".join(lit(f) for f in self.files) + "]"
            rn = f"CAST(list_position({files}, filename) AS BIGINT) * 1099511627776 + file_row_number"
        else:
            rn = "CAST(NULL AS BIGINT)"
        try:
            self.con.execute(
                f"CREATE TABLE src AS SELECT {chosen}, {rn} AS __rn FROM {self.source(varchar)}"
            )
        except duckdb.Error as err:
            found = re.search(r'Line: (\d+).*?converting column "([^"]+)"', str(err), re.S)
            if not found:
                raise UserError(f"{self.path}: cannot be read as a table ({_reason(err)})") from err
            line, column = int(found.group(1)), found.group(2)
            patient = self._first_not_number(column, varchar)
            raise UserError(
                f"{self.path}: column '{column}' is not a number in line {line} "
                f"(row {line - 1}, patient {patient}); data.engine=pandas reads such a "
                "column as text and names every such row"
            ) from err
        self.types = {
            name: kind.upper()
            for name, kind in self.con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'src'"
            ).fetchall()
        }

    def _first_not_number(self, column: str, varchar: tuple[str, ...]) -> str:
        row = self.one(
            f"SELECT {q(self.id_col)} FROM {self.source((*varchar, column))} WHERE "
            f"TRY_CAST({q(column)} AS DOUBLE) IS NULL AND trim({q(column)}) <> '' LIMIT 1"
        )
        return row[0] if row else "?"

    def kind(self, column: str) -> str:
        return self.types[column].split("(")[0]

    # -- expressions ---------------------------------------------------------------------

    def id_expr(self) -> tuple[str, str]:
        """The id as text (``pid``), and a key whose text is the id (``key``): the stored
        text, or the whole number. Aggregations over (patient, time) group by the key:
        DuckDB cannot spill a GROUP BY on strings made by a cast (it ran out of memory
        at 100 M rows), while it spills one on stored text or on numbers."""
        c, kind = q(self.id_col), self.kind(self.id_col)
        if kind == "VARCHAR":  # text exactly as written; empty or blank is missing
            text = f"CASE WHEN trim({c}) = '' THEN NULL ELSE {c} END"
            return text, text
        if kind in INTEGER:
            return f"CAST({c} AS VARCHAR)", c
        if kind in ("FLOAT", "DOUBLE"):
            bad = self.one(f"SELECT {c} FROM src WHERE {c} <> floor({c}) LIMIT 1")
            if bad is None:
                return f"CAST(CAST({c} AS BIGINT) AS VARCHAR)", f"CAST({c} AS BIGINT)"
        raise UserError(
            f"{self.path}: column '{self.id_col}' holds {kind.lower()} values; "
            "data.engine=duckdb reads ids stored as text or whole numbers (use data.engine=pandas)"
        )

    def time_expr(self, column: str) -> tuple[str, str]:
        """(SQL of hours as DOUBLE, 'numbers' or 'date-times'), as tables.time_in_hours."""
        c, kind = q(column), self.kind(column)
        if kind in NUMERIC and kind != "BOOLEAN":
            return f"CAST({c} AS DOUBLE)", "numbers"
        if kind.startswith(DATETIME):
            stamp = c if kind.startswith("TIMESTAMP") else f"CAST({c} AS TIMESTAMP)"
            return f"CAST(epoch_ns({stamp}) AS DOUBLE) / 3.6e12", "date-times"
        if kind == "VARCHAR":
            text = f"{c} IS NOT NULL AND trim({c}) <> ''"
            stamp = f"TRY_CAST({c} AS TIMESTAMPTZ)"  # an offset applied, none read as UTC
            aware = f"regexp_matches(trim({c}), '{TZ_SUFFIX}')"
            numbers, stamps, present, zoned = self.one(
                f"SELECT count(*) FILTER (TRY_CAST({c} AS DOUBLE) IS NOT NULL), "
                f"count(*) FILTER ({stamp} IS NOT NULL), count(*) FILTER ({text}), "
                f"count(*) FILTER ({text} AND {aware}) FROM src"
            )
            if present and numbers >= present / 2:
                return f"TRY_CAST({c} AS DOUBLE)", "numbers"
            if stamps == present:
                if 0 < zoned < present:
                    minority = aware if zoned <= present - zoned else f"NOT {aware}"
                    pid = self.one(
                        f"SELECT {self.id_sql} FROM src WHERE {text} AND {minority} LIMIT 1"
                    )
                    raise UserError(
                        f"{self.path}: column '{column}' mixes date-times with and without a "
                        "time zone (e.g. +02:00 or Z); give all of them one, or none; the first "
                        f"of the less common kind is in a row of patient {pid[0] if pid else '?'} "
                        f"({min(zoned, present - zoned)} rows in all)"
                    )
                return f"CAST(epoch_ns({stamp}) AS DOUBLE) / 3.6e12", "date-times"
            pid = self.one(
                f"SELECT {self.id_sql} FROM src WHERE {text} AND {stamp} IS NULL LIMIT 1"
            )
            raise UserError(
                f"{self.path}: column '{column}' is neither a number nor an ISO 8601 date-time "
                f"(2024-01-31 13:45:00) in {present - stamps} rows (the first: patient "
                f"{pid[0] if pid else '?'}); data.engine=pandas reads more date-time forms"
            )
        raise UserError(f"{self.path}: column '{column}' holds {kind.lower()} values, not times")

    def value_expr(self, column: str) -> str:
        """A feature or EAV value as DOUBLE: NaN and empty are NULL, as NaN in pandas."""
        c, kind = q(column), self.kind(column)
        if kind in NUMERIC:
            v = f"CAST({c} AS DOUBLE)"
        elif kind == "VARCHAR":
            v = f"TRY_CAST({c} AS DOUBLE)"
        else:
            raise UserError(
                f"{self.path}: column '{column}' holds {kind.lower()} values, not numbers"
            )
        return f"CASE WHEN isnan({v}) THEN NULL ELSE {v} END"

    def not_number(self, column: str) -> str:
        """SQL true where a text value is present but not a number."""
        c = q(column)
        if self.kind(column) != "VARCHAR":
            return "false"
        return f"({c} IS NOT NULL AND trim({c}) <> '' AND TRY_CAST({c} AS DOUBLE) IS NULL)"

    def fail(self, where: str, problem: str, count: int, column: str) -> None:
        """A one-line error naming the column and the first such row's patient."""
        pid = self.one(f"SELECT pid FROM rows WHERE {where} LIMIT 1")
        more = f" ({count} rows in all)" if count > 1 else ""
        raise UserError(
            f"{self.path}: column '{column}' {problem} in a row of patient "
            f"{pid[0] if pid else '?'}{more}"
        )

    # -- the build -----------------------------------------------------------------------

    def run(self, settings: dict) -> None:
        id_col, time_col, anchor_col = self.id_col, self.time_col, self.grid.anchor_col
        roles = {"id": id_col, "time": time_col}
        if anchor_col:
            roles["anchor"] = anchor_col
        if self.eav:
            roles |= {"variable": self.eav.variable_col, "value": self.eav.value_col}
        for role, column in roles.items():
            if column not in self.columns:
                shown = ", ".join(self.columns[:20])
                raise UserError(
                    f"{self.path}: no {role} column '{column}'; columns are: {shown}. "
                    f"Set data.{role}_col to the right name."
                )
        if self.eav:
            clash = {self.eav.variable_col, self.eav.value_col} & {id_col, time_col, *self.carry}
            if clash:
                raise UserError(
                    f"{self.path}: column '{clash.pop()}' cannot be both an EAV column and "
                    "another role"
                )
            wide_features: list[str] = []
            data = [self.eav.variable_col, self.eav.value_col]
        else:
            not_features = {id_col, time_col, anchor_col, *self.carry}
            wide_features = self._wide_candidates(not_features)
            data = wide_features
        needed = list(
            dict.fromkeys(
                [id_col, time_col, *([anchor_col] if anchor_col else []), *data, *self.carry]
            )
        )
        self.copy(needed)
        self.id_sql, key = self.id_expr()
        hours, time_kind = self.time_expr(time_col)
        anchor = "CAST(NULL AS DOUBLE)"
        if anchor_col:
            anchor, anchor_kind = self.time_expr(anchor_col)
            if anchor_kind != time_kind:
                raise UserError(
                    f"{self.path}: time column '{time_col}' holds {time_kind} but anchor column "
                    f"'{anchor_col}' holds {anchor_kind}; both must be the same kind of time"
                )
        if not self.eav:
            wide_features = self._resolve_wide(wide_features)
        parts = [
            f"{self.id_sql} AS pid",
            f"{key} AS key",
            f"{hours} AS hours",
            f"{anchor} AS anchor",
            "__rn AS rn",
            *(f"{q(c)} AS {q('c_' + c)}" for c in self.carry),
        ]
        if self.eav:
            parts += [
                f"CAST({q(self.eav.variable_col)} AS VARCHAR) AS var",
                f"{self.value_expr(self.eav.value_col)} AS val",
                f"{self.not_number(self.eav.value_col)} AS bad",
            ]
        else:
            parts += [f"{self.value_expr(c)} AS v{j}" for j, c in enumerate(wide_features)]
            parts += [f"{self.not_number(c)} AS bad{j}" for j, c in enumerate(wide_features)]
        self.sql(f"CREATE VIEW rows AS SELECT {', '.join(parts)} FROM src")
        self._check_rows(time_kind)
        if self.eav:
            features = self._check_eav()
        else:
            features = wide_features
            self._check_wide(features)
        patients = self._patients()
        self._write(patients, features, settings)

    def _wide_candidates(self, not_features: set) -> list[str]:
        if self.features:
            missing = [f for f in self.features if f not in self.columns]
            if missing:
                raise UserError(f"{self.path}: feature columns not found: {', '.join(missing)}")
            clash = [f for f in self.features if f in not_features]
            if clash:
                raise UserError(
                    f"{self.path}: {', '.join(clash)} cannot be both a feature and the "
                    "id/time/label column"
                )
            return list(self.features)
        return [c for c in self.columns if c not in not_features]

    def _resolve_wide(self, candidates: list[str]) -> list[str]:
        """As tables.resolve_features: named features as given; by default every column
        that is numeric, or text that is mostly numbers (a stray word is then reported)."""
        if self.features:
            return candidates
        chosen = []
        for c in candidates:
            kind = self.kind(c)
            if kind in NUMERIC:
                chosen.append(c)
            elif kind == "VARCHAR":
                numbers, present = self.one(
                    f"SELECT count(*) FILTER (TRY_CAST({q(c)} AS DOUBLE) IS NOT NULL AND "
                    f"trim({q(c)}) <> ''), count(*) FILTER (trim({q(c)}) <> '') FROM src"
                )
                if numbers >= present / 2:  # an empty column reads as numbers in pandas too
                    chosen.append(c)
        if not chosen:
            raise UserError(
                f"{self.path}: no numeric feature columns found (other columns: "
                f"{', '.join(candidates) or 'none'}); list them with data.features=[...]"
            )
        return chosen

    def _check_rows(self, time_kind: str) -> None:
        """Ids, times and the anchor, as tables.check_ids and time_in_hours check them."""
        t, a = q(self.time_col), self.grid.anchor_col
        no_id, no_time, inf, negative, no_anchor = self.one(
            "SELECT count(*) FILTER (pid IS NULL), count(*) FILTER (hours IS NULL), "
            "count(*) FILTER (isinf(hours)), count(*) FILTER (hours < 0), "
            "count(*) FILTER (anchor IS NULL) FROM rows"
        )
        if no_id:
            raise UserError(
                f"{self.path}: column '{self.id_col}' is empty in {no_id} rows (rows without "
                "a patient id)"
            )
        if no_time:
            raw = self.one(
                f"SELECT count(*) FILTER ({t} IS NULL OR trim(CAST({t} AS VARCHAR)) = '') FROM src"
            )[0]
            problem = "is missing" if raw == no_time else "is neither a number nor a date-time"
            self.fail("hours IS NULL", problem, no_time, self.time_col)
        if inf:
            self.fail("isinf(hours)", "is infinite", inf, self.time_col)
        if negative and time_kind == "numbers" and not a:
            self.fail(
                "hours < 0",
                "is negative (times are steps or hours since admission, 0 or later)",
                negative,
                self.time_col,
            )
        if a and no_anchor:
            self.fail("anchor IS NULL", "is missing", no_anchor, a)

    def _check_wide(self, features: list[str]) -> None:
        checks = []
        for j in range(len(features)):
            checks += [
                f"count(*) FILTER (bad{j})",
                f"count(v{j})",
                f"count(*) FILTER (isinf(v{j}))",
            ]
        if self.duplicates == "error":
            # a GROUP BY spills to disk past the memory limit; count(DISTINCT) does not
            repeated, pid = self.one(
                "SELECT coalesce(sum(n - 1), 0), CAST(any_value(key) AS VARCHAR) FROM "
                "(SELECT key, count(*) AS n FROM rows GROUP BY key, hours HAVING count(*) > 1)"
            )
            if repeated:
                raise UserError(
                    f"{self.path}: column '{self.time_col}' repeats an earlier row's time for the "
                    f"same patient in a row of patient {pid} ({repeated} rows in all; set "
                    "data.duplicates=aggregate to combine such rows)"
                )
        counts = self.one(f"SELECT {', '.join(checks)} FROM rows")
        for j, name in enumerate(features):
            bad, present, inf = counts[3 * j : 3 * j + 3]
            if bad:
                self.fail(f"bad{j}", "is not a number", bad, name)
            if not present:
                raise UserError(
                    f"{self.path}: column '{name}' has no values (empty in every row); "
                    "leave it out with data.features=[...]"
                )
            if inf:
                self.fail(f"isinf(v{j})", "is infinite", inf, name)

    def _check_eav(self) -> list[str]:
        """As eav.eav_rows: names present, values numbers (or dropped), no repeats."""
        spec, var_col = self.eav, self.eav.variable_col
        no_name = self.one("SELECT count(*) FILTER (var IS NULL) FROM rows")[0]
        if no_name:
            pid = self.one("SELECT pid FROM rows WHERE var IS NULL LIMIT 1")[0]
            raise UserError(
                f"{self.path}: column '{var_col}' is empty in a row of patient {pid} "
                f"({no_name} rows without a variable name)"
            )
        bad = self.one("SELECT count(*) FILTER (bad) FROM rows")[0]
        if bad:
            counts = self.sql(
                "SELECT var, count(*) AS n FROM rows WHERE bad GROUP BY var "
                "ORDER BY n DESC, var LIMIT 5"
            ).fetchall()
            by_variable = ", ".join(f"'{v}' {n}" for v, n in counts)
            pid, var = self.one("SELECT pid, var FROM rows WHERE bad LIMIT 1")
            where = (
                f"{bad} values of column '{spec.value_col}' are not numbers (by variable: "
                f"{by_variable}); the first found is variable '{var}', patient {pid}"
            )
            if spec.non_numeric == "error":
                raise UserError(
                    f"{self.path}: {where}; set data.eav.non_numeric=drop to leave them out"
                )
            log.warning("%s: %s; left out (data.eav.non_numeric=drop)", self.path, where)
        inf = self.one("SELECT count(*) FILTER (isinf(val)) FROM rows")[0]
        if inf:
            pid, var = self.one("SELECT pid, var FROM rows WHERE isinf(val) LIMIT 1")
            raise UserError(
                f"{self.path}: column '{spec.value_col}' is infinite in a row of variable "
                f"'{var}', patient {pid} ({inf} rows)"
            )
        if self.features is None:
            known = sorted(r[0] for r in self.sql("SELECT DISTINCT var FROM rows").fetchall())
        else:
            known = list(self.features)
        taken = {self.id_col, self.time_col, *(c for c in (self.grid.anchor_col, *self.carry) if c)}
        taken &= set(known)
        if taken:
            raise UserError(
                f"{self.path}: variable '{taken.pop()}' has the name of the id, time, label or "
                "another column; rename it in the data"
            )
        self.con.register("__vars", pd.DataFrame({"var": known, "fi": np.arange(len(known))}))
        self.sql("CREATE TABLE vars AS SELECT var, CAST(fi AS INTEGER) AS fi FROM __vars")
        self.con.unregister("__vars")
        if self.duplicates == "error":
            found = self.one(
                "SELECT CAST(r.key AS VARCHAR), r.var, count(*) OVER () FROM rows r JOIN vars "
                "USING (var) WHERE r.val IS NOT NULL GROUP BY r.key, r.hours, r.var "
                "HAVING count(*) > 1 LIMIT 1"
            )
            if found:
                pid, var, n = found
                raise UserError(
                    f"{self.path}: variable '{var}' repeats at one time for patient {pid} "
                    f"({n} such times); set data.duplicates=aggregate to combine them as values "
                    "within one grid step are"
                )
        return known

    def _patients(self) -> pd.DataFrame:
        """One row per patient: id, first time, anchor, carried values; checked constant."""
        parts = [
            "pid",
            "min(hours) AS first",
            "min(anchor) AS anchor",
            f"{_values('anchor')} AS anchor_n",
        ]
        for c in self.carry:
            col = q("c_" + c)
            parts += [f"max({col}) AS {col}", f"{_values(col)} AS {q('n_' + c)}"]
        table = self.sql(f"SELECT {', '.join(parts)} FROM rows GROUP BY pid").df()
        constant = [("anchor", self.grid.anchor_col)] if self.grid.anchor_col else []
        constant += [("n_" + c, c) for c in self.carry]
        for counted, column in constant:
            counts = table["anchor_n" if counted == "anchor" else counted].to_numpy()
            varying = np.flatnonzero(counts > 1)
            if len(varying):
                raise UserError(
                    f"{self.path}: column '{column}' must be constant per patient but changes "
                    f"within patient {table['pid'].iloc[varying[0]]} ({len(varying)} patients in all)"
                )
        order = id_order(table["pid"].to_numpy(dtype=object))
        table = table.iloc[order].reset_index(drop=True)
        table["code"] = np.arange(len(table), dtype=np.int64)
        return table

    def _bins(self, shift: bool) -> str:
        origin = "r.anchor" if self.grid.anchor_col else "c.first"
        step = repr(float(self.grid.step))
        raw = (
            f"CAST(greatest(least(floor((r.hours - {origin}) / {step} + 1e-9), {CLIP!r}), "
            f"{-CLIP!r}) AS BIGINT)"
        )
        return raw + (" + c.shift" if shift else "")

    def _write(self, patients: pd.DataFrame, features: list[str], settings: dict) -> None:
        grid, n = self.grid, len(patients)
        codes = patients[["pid", "code", "first"]].copy()
        codes["shift"] = 0
        self.con.register("__codes", codes)
        self.sql("CREATE TABLE codes AS SELECT * FROM __codes")
        self.con.unregister("__codes")
        join = "FROM rows r JOIN codes c USING (pid)"
        if grid.anchor_col is None:
            span = self._per_code(
                f"SELECT c.code AS code, max({self._bins(False)}) + 1 AS v {join} GROUP BY c.code",
                n,
                0,
            )
            if grid.length is None:
                self._check_span(span, patients)
            length = int(grid.length) if grid.length is not None else int(span.max())
            lengths = np.minimum(span, length)
            shift = length - span if grid.align == "end" else np.zeros(n, np.int64)
        else:
            length = int(grid.length)
            shift = np.full(n, length if grid.align == "end" else 0, dtype=np.int64)
        if shift.any():
            self.con.register("__shift", pd.DataFrame({"code": np.arange(n), "s": shift}))
            self.sql("UPDATE codes SET shift = s FROM __shift WHERE codes.code = __shift.code")
            self.con.unregister("__shift")
        bins = self._bins(True)
        self.sql(f"CREATE VIEW binned AS SELECT c.code, {bins} AS bin, r.* {join}")
        if grid.anchor_col is not None:
            if grid.align == "end":
                first = self._per_code(
                    f"SELECT code, min(bin) FILTER (bin < {length}) AS v FROM binned GROUP BY code",
                    n,
                    length,
                )
                lengths = length - np.maximum(first, 0)
            else:
                last = self._per_code(
                    "SELECT code, max(bin + 1) FILTER (bin >= 0) AS v FROM binned GROUP BY code",
                    n,
                    0,
                )
                lengths = np.minimum(last, length)
        aggs = grid.aggregations(list(features))
        self._write_cells(n, length, features, aggs)
        np.save(self.work / "lengths.npy", lengths.astype(np.int64), allow_pickle=False)
        np.save(self.work / "ids.npy", patients["pid"].to_numpy(dtype=str), allow_pickle=False)
        carried = pd.DataFrame({c: patients["c_" + c] for c in self.carry})
        carried.to_parquet(self.work / "patients.parquet", index=False)
        meta = {
            "features": list(features),
            "align": grid.align,
            "shape": [n, length, len(features)],
            "inputs": [str(f) for f in self.files],
            "settings": settings,
        }
        (self.work / "meta.json").write_text(json.dumps(meta, indent=1, default=str))

    def _per_code(self, select: str, n: int, default: int) -> np.ndarray:
        """One integer per patient from ``select`` (columns code, v; ``default`` if NULL)."""
        frame = self.sql(select).df()
        out = np.full(n, default, dtype=np.int64)
        has = frame["v"].notna().to_numpy()
        out[frame["code"].to_numpy()[has]] = frame["v"][has].to_numpy(dtype=np.int64)
        return out

    def _check_span(self, span: np.ndarray, patients: pd.DataFrame) -> None:
        if self.grid.max_steps is None or not len(span):
            return
        longest = int(np.argmax(span))
        if int(span[longest]) <= int(self.grid.max_steps):
            return
        raise UserError(
            f"{self.path}: patient {patients['pid'].iloc[longest]} spans {int(span[longest])} "
            f"grid steps (its latest row lies that far from its first), more than "
            f"data.grid.max_steps={self.grid.max_steps}; check that row's time, or set "
            "data.grid.length (steps kept per patient), a larger data.grid.step, or a larger "
            "data.grid.max_steps"
        )

    def _write_cells(self, n: int, length: int, features: list[str], aggs: list[str]) -> None:
        """Combine the values sharing a grid step (``aggs``) and write them in order.

        A wide table is grouped by step, one aggregate per feature (one group per step);
        an EAV table by step and variable (one group per observed cell, so hundreds of
        variables cost no more than a few)."""
        n_features = len(features)
        inside = f"bin >= 0 AND bin < {length}"
        if self.eav:
            cells = (
                f"SELECT code * {length} + bin AS flat, vars.fi AS fi, CAST(val AS FLOAT) AS x, "
                f"hours, rn FROM binned JOIN vars USING (var) WHERE val IS NOT NULL AND {inside}"
            )
            values = ["x"] * n_features
        else:
            casts = ", ".join(f"CAST(v{j} AS FLOAT) AS x{j}" for j in range(n_features))
            cells = f"SELECT code * {length} + bin AS flat, hours, rn, {casts} FROM binned WHERE {inside}"
            values = [f"x{j}" for j in range(n_features)]
        self.sql(f"CREATE VIEW cells AS {cells}")
        last = [j for j, agg in enumerate(aggs) if agg == "last"]
        if last and not self.parquet and self.duplicates == "aggregate":
            self._refuse_tied_last(last, values)
        combine = {
            "mean": "CAST(sum(CAST({x} AS DOUBLE)) / count({x}) AS FLOAT)",
            "min": "min({x})",
            "max": "max({x})",
            "last": "arg_max({x}, {{'h': hours, 'r': rn}}) FILTER ({x} IS NOT NULL)",
        }
        if self.eav:
            by = {a: [j for j, b in enumerate(aggs) if b == a] for a in set(aggs)}
            cases = [
                f"WHEN fi IN ({', '.join(map(str, by[a]))}) THEN {combine[a].format(x='x')}"
                for a in sorted(by)
            ]
            value = (
                f"CASE {' '.join(cases)} END" if len(cases) > 1 else combine[aggs[0]].format(x="x")
            )
            query = f"SELECT flat, fi, {value} AS x FROM cells GROUP BY flat, fi ORDER BY flat, fi"
        else:
            parts = ", ".join(
                combine[agg].format(x=x) + f" AS a{j}"
                for j, (agg, x) in enumerate(zip(aggs, values, strict=True))
            )
            query = f"SELECT flat, {parts} FROM cells GROUP BY flat ORDER BY flat"
        try:
            reader = self.con.sql(query).to_arrow_reader(FETCH_ROWS)
        except duckdb.Error as err:
            raise UserError(f"{self.path}: cannot be read as a table ({_reason(err)})") from err
        with _GridWriter(self.work / "x.npy", n, length, n_features) as writer:
            for batch in reader:
                flat = batch.column(0).to_numpy().astype(np.int64)
                if self.eav:
                    column = batch.column(1).to_numpy().astype(np.int64)
                    value = batch.column(2).to_numpy(zero_copy_only=False).astype(np.float32)
                else:
                    column = None
                    value = np.stack(
                        [c.to_numpy(zero_copy_only=False) for c in batch.columns[1:]], axis=1
                    ).astype(np.float32)
                writer.add(flat, value, column)

    def _refuse_tied_last(self, last: list[int], values: list[str]) -> None:
        """agg=last over rows sharing a time needs the file's row order: refused for CSV."""
        if self.eav:
            tied = self.one(
                f"SELECT count(*) FROM (SELECT flat, fi, hours FROM cells WHERE fi IN "
                f"({', '.join(map(str, last))}) GROUP BY ALL HAVING count(*) > 1)"
            )[0]
        else:
            counts = ", ".join(f"count({values[j]}) AS n{j}" for j in last)
            most = f"greatest({', '.join(f'n{j}' for j in last)}, 0)"
            tied = self.one(
                f"SELECT count(*) FROM (SELECT {counts} FROM cells GROUP BY flat, hours) "
                f"WHERE {most} > 1"
            )[0]
        if tied:
            raise UserError(
                f"{self.path}: {tied} grid steps hold several values of a feature with "
                "data.grid.agg=last at the same time, and DuckDB does not keep a CSV file's "
                "row order to choose the later row; use data.engine=pandas or a Parquet file"
            )


class _GridWriter:
    """Writes an (N, L, C) float32 .npy file from grid steps that arrive sorted, one block
    of patients at a time (NaN where nothing came): memory is one block."""

    def __init__(self, path: Path, n: int, length: int, n_features: int) -> None:
        header = np.lib.format.open_memmap(path, "w+", np.float32, (n, length, n_features))
        offset = header.offset
        del header
        self.handle = open(path, "r+b")  # noqa: SIM115  (closed in __exit__)
        self.handle.seek(offset)
        self.n, self.length, self.width = n, length, n_features
        self.block = max(1, BLOCK_BYTES // max(length * n_features * 4, 1))
        self.start = 0
        self.buffer = np.full((self.block * length, n_features), np.nan, dtype=np.float32)

    def add(self, flat: np.ndarray, value: np.ndarray, column: np.ndarray | None = None) -> None:
        """``flat`` (sorted): patient x length + step; ``value`` (n, C), or (n,) with
        ``column`` the feature of each."""
        while len(flat):
            end = (self.start + self.block) * self.length
            k = int(np.searchsorted(flat, end))
            where = flat[:k] - self.start * self.length
            if column is None:
                self.buffer[where] = value[:k]
            else:
                self.buffer[where, column[:k]] = value[:k]
            if k == len(flat):
                return
            self._flush()
            flat, value = flat[k:], value[k:]
            column = None if column is None else column[k:]

    def _flush(self) -> None:
        count = min(self.block, self.n - self.start)
        if count > 0:
            self.handle.write(self.buffer[: count * self.length].tobytes())
        self.buffer.fill(np.nan)
        self.start += self.block

    def __enter__(self) -> _GridWriter:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                while self.start < self.n:
                    self._flush()
        finally:
            self.handle.close()
