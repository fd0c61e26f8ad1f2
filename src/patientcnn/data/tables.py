"""Reading one table file (CSV or Parquet) and validating its columns and cells.

Every check names the file, the column and, where there is one, the patient and row
(1-based, header excluded) so the user can find the problem. Values are never quoted:
they may be patient data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from patientcnn.errors import UserError
from patientcnn.files import check_input_file

CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class TableRows:
    """A table's rows with what every message about one of them names: the file they were
    read from, and the id column that says whose row it is. Built once per table and
    handed to the row checks (``check_ids``, ``time_in_hours``, ``feature_matrix``...)."""

    df: pd.DataFrame
    path: str | Path
    id_col: str
    # the id column factorized once, as read (``id_codes``): each row's code into the
    # distinct ids as text; shared by the duplicate check and the reshape, which would
    # otherwise hash millions of Python strings twice. None: computed when needed.
    patients: pd.Categorical | None = None

    def patient_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(codes per row, -1 where the id is missing; the distinct ids as text)."""
        if self.patients is not None:
            return self.patients.codes.astype(np.int64), np.asarray(self.patients.categories)
        return id_codes(self.df[self.id_col])


def read_table(path: str | Path, id_col: str | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet table, turning every reader failure into a UserError.

    ``id_col``, when the table has it, is kept as text exactly as written in the file
    (``0007`` stays ``0007``, never 7; ``1`` and ``01`` are two patients): CSV ids are
    read as strings, Parquet integer ids become their decimal string. Two columns with
    the same name are an error naming it.
    """
    rows = read_rows(path, id_col)
    if rows.patients is not None:
        codes, text = rows.patient_codes()
        rows.df[id_col] = pd.Series(_expand(codes, text), index=rows.df.index, dtype=object)
    return rows.df


def read_rows(path: str | Path, id_col: str | None = None) -> TableRows:
    """``read_table`` for a long table of many rows per patient: the id column stays
    factorized (a ``pd.Categorical`` of the ids as text, also ``TableRows.patients``)
    for the checks and the reshape that follow, instead of one Python string per row.
    Group by it with ``observed=True`` (pandas' default)."""
    path = Path(path)
    table_columns(path)  # the file's type, encoding and header, before the reader sees it
    sep = delimiter(path)
    raw = None  # the id column as written, when the reader may have changed it
    try:
        if is_parquet(path):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep=sep, engine="pyarrow")
            if id_col in df.columns and _maybe_not_as_written(df[id_col]):
                raw = _raw_ids(path, sep, id_col)
    except UserError:
        raise
    except Exception as err:  # the readers raise many types; all mean "cannot parse"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if reason.startswith("CSV parse error"):  # pyarrow quotes the row: patient data
            reason = _ragged_row(path, sep) or "CSV parse error"
        raise UserError(f"{path}: cannot be read as a table ({reason[:200]})") from err
    if df.shape[1] == 0 or len(df) == 0:
        raise UserError(f"{path}: the table is empty (no data rows)")
    df.columns = [str(c) for c in df.columns]
    patients = None
    if id_col in df.columns:
        ids = df[id_col] if raw is None else raw
        patients = pd.Categorical.from_codes(*id_codes(ids), validate=False)
        df[id_col] = pd.Series(patients, index=df.index)
    return TableRows(df, path, id_col or "", patients)


def table_columns(path: str | Path) -> list[str]:
    """The column names of a CSV or Parquet file, reading only its header or schema.

    The one place that tells a table's file type: an unknown suffix, a CSV-named file
    that is not UTF-8 text, and two columns of one name are errors naming the file.
    """
    path = check_input_file(path)
    if is_parquet(path):
        columns = parquet_columns(path)
    elif path.name.lower().endswith(CSV_SUFFIXES):
        check_text_file(path)
        columns = csv_header(path, delimiter(path))
    else:
        raise UserError(f"{path}: unknown file type; use .csv, .tsv, .csv.gz, .parquet or .pq")
    check_unique_columns(columns, path)
    return columns


def is_parquet(path: Path) -> bool:
    return path.name.lower().endswith(PARQUET_SUFFIXES)


def delimiter(path: Path) -> str:
    """A CSV file's field separator: a tab for .tsv, else a comma."""
    return "\t" if path.name.lower().endswith(".tsv") else ","


def _maybe_not_as_written(column: pd.Series) -> bool:
    """Whether the reader may have changed ids: parsed them as numbers, dates or
    booleans ('0007' -> 7), or read an id such as 'NA' as missing."""
    return not pd.api.types.is_string_dtype(column) or bool(column.isna().any())


def _raw_ids(path: Path, sep: str, id_col: str):
    """The id column exactly as written, as Arrow text (a ``pyarrow.ChunkedArray``);
    only an empty cell is a missing id (null)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(delimiter=sep),
        convert_options=pacsv.ConvertOptions(
            include_columns=[id_col],
            column_types={id_col: pa.string()},
            strings_can_be_null=False,
        ),
    )
    column = table.column(id_col)
    empty = pc.equal(pc.utf8_trim_whitespace(column), "")
    return pc.if_else(empty, None, column)  # factorized in Arrow: no Python str per row


def ids_as_text(ids: pd.Series | np.ndarray) -> pd.Series | np.ndarray:
    """Patient ids as strings, exactly as stored: text as it is, integers (and floats
    holding whole numbers, as integer columns with gaps become) as their decimal string,
    bytes decoded; a missing or empty id is missing (NaN)."""
    series = ids if isinstance(ids, pd.Series) else pd.Series(np.asarray(ids).reshape(-1))
    out = _expand(*id_codes(series))
    return pd.Series(out, index=series.index, dtype=object) if isinstance(ids, pd.Series) else out


def id_codes(ids) -> tuple[np.ndarray, np.ndarray]:
    """Each row's code (-1: a missing or empty id) into the distinct ids as text
    (``ids_as_text`` of each distinct value; in no promised order: the reshape orders
    patients with ``reshape.id_order``).

    The column is factorized once in its own type (integers, Arrow text), and only the
    distinct values become Python strings: a table of 5 million rows and 100,000
    patients makes 100,000 strings, not 5 million. Distinct values that are one text
    (``1`` and ``"1"`` in a column of mixed objects) are one patient."""
    codes = None
    dtype = getattr(ids, "dtype", None)
    arrow_text = isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"
    if not isinstance(ids, pd.Series) or arrow_text:  # Arrow text: ``_raw_ids``, pandas str
        codes, uniques = _arrow_codes(ids.array if arrow_text else ids)
        ids = ids if codes is not None or arrow_text else pd.Series(ids.to_pandas(), dtype="str")
    elif ids.dtype.kind in "iu":
        codes, uniques = dense_factorize(ids.to_numpy())
    if codes is None:
        codes, uniques = pd.factorize(ids, use_na_sentinel=True)
    text, kept = _texts(pd.Series(uniques))
    merged, distinct = pd.factorize(text.where(kept, None).to_numpy(dtype=object))
    codes = np.asarray(codes, dtype=np.int64)
    table = np.append(merged.astype(np.int64), -1)  # code -1 (missing) stays -1
    return table[codes], np.asarray(distinct, dtype=object)


def _arrow_codes(column) -> tuple[np.ndarray | None, object]:
    """Codes (-1: null) and distinct values of an Arrow text column, hashed by Arrow.
    Arrow encodes a chunked column with one memo table, so every chunk's dictionary is
    the final one; anything else is left to pandas (None)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = (
        pa.chunked_array([pa.array(column)]) if not isinstance(column, pa.ChunkedArray) else column
    )
    encoded = pc.dictionary_encode(column).chunks
    if not encoded:
        return None, None
    dictionary = encoded[-1].dictionary
    same = dictionary.buffers()[-1].address  # one dictionary shared by every chunk
    shared = all(chunk.dictionary.buffers()[-1].address == same for chunk in encoded)
    if not shared and not all(chunk.dictionary.equals(dictionary) for chunk in encoded):
        return None, None
    codes = np.concatenate(
        [chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False) for chunk in encoded]
    ).astype(np.int64)
    return codes, pd.Series(dictionary.to_pandas(), dtype="str")


def dense_factorize(values: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Codes and distinct values of integers whose range is at most a few times their
    count (ids numbered from a base, whole-hour times), by counting instead of hashing;
    (None, None) for a sparse range. Distinct values come in increasing order."""
    if len(values) == 0:
        return None, None
    low, high = int(values.min()), int(values.max())
    if high - low >= 4 * len(values):
        return None, None
    offset = (values - low).astype(np.int64)
    present = np.bincount(offset, minlength=high - low + 1) > 0
    rank = np.cumsum(present) - 1
    return rank[offset], np.flatnonzero(present) + low


def _texts(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Distinct ids as text, and whether each is an id (not blank)."""
    kind = values.dtype.kind if isinstance(values.dtype, np.dtype) else None
    if kind == "f":
        whole = np.isfinite(values) & (values == np.floor(values))
        if whole.all():
            values, kind = values.astype("Int64"), "i"
    if kind in ("i", "u") or pd.api.types.is_string_dtype(values.dtype):
        text = values.astype("string")  # vectorised; text stays exactly as it is
    else:
        text = values.map(_one_id).astype("string")
    kept = text.notna() & text.str.strip().ne("").fillna(False).astype(bool)
    return text.astype(object), kept.to_numpy(dtype=bool)


def _expand(codes: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Row ids as Python strings (NaN where missing) from codes: each distinct string is
    shared by its rows, not made again per row."""
    return np.append(text, np.nan).astype(object)[codes]


def _one_id(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def check_text_file(path: Path) -> None:
    """A file named like CSV that is compressed, binary or not UTF-8 is named as such
    (the CSV reader would only say "CSV parse error")."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    gz = path.name.lower().endswith(".gz")
    if head[:2] == b"\x1f\x8b" and not gz:
        raise UserError(f"{path}: is gzip-compressed but not named .gz; rename it to .csv.gz")
    if gz:
        if head[:2] != b"\x1f\x8b":
            raise UserError(f"{path}: is named .gz but is not gzip-compressed")
        return
    for magic, what in (
        (b"PK\x03\x04", "a zip archive (an Excel .xlsx file is one); export it as CSV"),
        (b"PAR1", "a Parquet file; name it .parquet"),
        (b"\x28\xb5\x2f\xfd", "zstd-compressed; decompress it first"),
    ):
        if head.startswith(magic):
            raise UserError(f"{path}: is {what}")
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] == b"\x31\x41\x59\x26\x53\x59":
        raise UserError(f"{path}: is bzip2-compressed; decompress it first")
    for bom, encoding in (
        (b"\xff\xfe\x00\x00", "UTF-32"),
        (b"\x00\x00\xfe\xff", "UTF-32"),
        (b"\xff\xfe", "UTF-16"),
        (b"\xfe\xff", "UTF-16"),
    ):
        if head.startswith(bom):
            raise UserError(f"{path}: is {encoding} encoded; save it as UTF-8 text")
    if b"\x00" in head:
        raise UserError(
            f"{path}: holds NUL bytes: a binary file or a UTF-16/32 file without a byte "
            "order mark; save it as UTF-8 text"
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if len(head) < 4096 or err.start < len(head) - 4:  # not a character cut at 4 KiB
            raise UserError(
                f"{path}: is not UTF-8 text (byte {err.start + 1} is not valid UTF-8; "
                "a Latin-1 or Windows-1252 export?); save it as UTF-8"
            ) from None


def csv_header(path: Path, sep: str) -> list[str]:
    """The column names of a CSV file's first line, exactly as written."""
    import csv
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig", errors="replace") as handle:
            return next(csv.reader(handle, delimiter=sep), [])
    except (OSError, EOFError, csv.Error) as err:
        raise UserError(f"{path}: cannot be read as a table ({type(err).__name__})") from err


def parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return [str(c) for c in pq.read_schema(path).names]
    except Exception as err:  # pyarrow raises several types; all mean "not Parquet"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: cannot be read as a table ({reason[:200]})") from err


def check_unique_columns(columns: list[str], path: str | Path) -> None:
    """Two columns of one name would be read as two features (pandas renames one)."""
    seen: dict[str, int] = {}
    for position, name in enumerate(columns, start=1):
        if name in seen and name.strip() != "":
            raise UserError(
                f"{path}: column name '{name}' appears more than once (columns {seen[name]} "
                f"and {position}); give each column its own name"
            )
        seen.setdefault(name, position)


def _ragged_row(path: Path, sep: str) -> str | None:
    """Which data row has another number of fields than the header (counts only)."""
    import csv
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", newline="") as handle:
            reader = csv.reader(handle, delimiter=sep)
            width = len(next(reader, []))
            for row, fields in enumerate(reader, start=1):
                if fields and len(fields) != width:
                    return f"row {row} has {len(fields)} fields but the header has {width}"
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None


def require_columns(
    df: pd.DataFrame, path: str | Path, columns: dict[str, str], fix: str | None = None
) -> None:
    """Check that each role's column exists; ``columns`` maps role (e.g. 'id') to name.
    ``fix``: how to fix a missing one (default: set ``data.<role>_col``)."""
    for role, column in columns.items():
        if column not in df.columns:
            shown = ", ".join(map(str, df.columns[:20]))
            more = f" and {len(df.columns) - 20} more" if len(df.columns) > 20 else ""
            hint = ""
            if df.shape[1] == 1 and any(sep in str(df.columns[0]) for sep in ";\t|"):
                hint = " (the file seems to use another delimiter than ',')"
            raise UserError(
                f"{path}: no {role} column '{column}'{hint}; columns are: {shown}{more}. "
                + (fix or f"Set data.{role}_col to the right name.")
            )


def resolve_features(
    df: pd.DataFrame, path: str | Path, exclude: list[str], features: list[str] | None
) -> list[str]:
    """Explicit features are checked to exist; by default every other numeric column."""
    if features:
        missing = [f for f in features if f not in df.columns]
        if missing:
            raise UserError(f"{path}: feature columns not found: {', '.join(missing)}")
        clash = [f for f in features if f in exclude]
        if clash:
            raise UserError(
                f"{path}: {', '.join(clash)} cannot be both a feature and the id/time/label column"
            )
        return list(features)
    chosen = [c for c in df.columns if c not in exclude and looks_numeric(df[c])]
    if not chosen:
        others = [c for c in df.columns if c not in exclude]
        raise UserError(
            f"{path}: no numeric feature columns found (other columns: {', '.join(others) or 'none'}); "
            "list them with data.features=[...]"
        )
    return chosen


def looks_numeric(column: pd.Series) -> bool:
    """Numeric, or text that is mostly numbers (so a stray word is reported, not dropped)."""
    if pd.api.types.is_numeric_dtype(column):
        return True
    if pd.api.types.is_datetime64_any_dtype(column):
        return False
    present = column.notna() & (column.astype(str).str.strip() != "")
    if not present.any():
        return False
    parsed = pd.to_numeric(column[present], errors="coerce").notna()
    return bool(parsed.mean() >= 0.5)


def feature_matrix(rows: TableRows, features: list[str]) -> np.ndarray:
    """The feature columns as float32 (rows, C); NaN marks a missing value.

    A value that is present but not a number, or infinite, is an error naming the row.
    """
    df, path = rows.df, rows.path
    out = np.empty((len(df), len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        column = df[name]
        if pd.api.types.is_bool_dtype(column):
            column = column.astype("float32")
        if not pd.api.types.is_numeric_dtype(column):
            numeric = pd.to_numeric(column, errors="coerce")
            bad = numeric.isna() & column.notna() & (column.astype(str).str.strip() != "")
            if bad.any():
                _raise_at_row(
                    rows,
                    name,
                    int(np.flatnonzero(bad.to_numpy())[0]),
                    "is not a number",
                    int(bad.sum()),
                )
            column = numeric
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isnan(values).all():
            raise UserError(
                f"{path}: column '{name}' has no values (empty in every row); "
                "leave it out with data.features=[...]"
            )
        infinite = np.isinf(values)
        if infinite.any():
            _raise_at_row(
                rows,
                name,
                int(np.flatnonzero(infinite)[0]),
                "is infinite",
                int(infinite.sum()),
            )
        out[:, j] = values
    return out


def time_in_hours(rows: TableRows, time_col: str, allow_negative: bool = False) -> np.ndarray:
    """The time column as float64: numbers as they are (steps or hours), datetimes in hours.

    Negative numbers are an error unless ``allow_negative`` (times relative to an anchor,
    such as labs drawn before admission, may precede it).
    """
    df = rows.df
    column = df[time_col]
    numeric = looks_numeric(column) and not pd.api.types.is_bool_dtype(column)
    if numeric:
        parsed = pd.to_numeric(column, errors="coerce")  # numbers with a stray word
        _check_parsed(rows, time_col, column, parsed.isna())
        values = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        if pd.api.types.is_datetime64_any_dtype(column):
            stamps = column
        else:
            stamps = _parse_datetimes(rows, time_col, column)
            _check_parsed(rows, time_col, column, stamps.isna())
        if getattr(stamps.dt, "tz", None) is not None:
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        values = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
        values[stamps.isna().to_numpy()] = np.nan
        values /= 3.6e12  # nanoseconds -> hours; only differences are used downstream
    missing = np.isnan(values)
    if missing.any():
        _raise_at_row(
            rows,
            time_col,
            int(np.flatnonzero(missing)[0]),
            "is missing",
            int(missing.sum()),
        )
    if np.isinf(values).any():
        _raise_at_row(
            rows,
            time_col,
            int(np.flatnonzero(np.isinf(values))[0]),
            "is infinite",
            int(np.isinf(values).sum()),
        )
    negative = values < 0  # date-times before 1970 are negative hours, and fine
    if numeric and negative.any() and not allow_negative:
        _raise_at_row(
            rows,
            time_col,
            int(np.flatnonzero(negative)[0]),
            "is negative (times are steps or hours since admission, 0 or later)",
            int(negative.sum()),
        )
    return values


TZ_SUFFIX = r"(?:Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$"


def _parse_datetimes(rows: TableRows, time_col: str, column: pd.Series) -> pd.Series:
    """Date-time text -> timestamps. Stamps that all carry a UTC offset are compared in
    UTC; stamps with and without one cannot be ordered and are an error naming the row."""
    path = rows.path
    try:
        return pd.to_datetime(column, errors="coerce", format="mixed")
    except (ValueError, TypeError) as err:
        if "timezone" not in str(err).lower() and "offset" not in str(err).lower():
            raise UserError(
                f"{path}: column '{time_col}' cannot be read as date-times ({type(err).__name__})"
            ) from err
    text = column.astype(str).str.strip()
    aware = text.str.contains(TZ_SUFFIX, regex=True).to_numpy() & column.notna().to_numpy()
    naive = ~aware & column.notna().to_numpy() & (text != "").to_numpy()
    if aware.any() and naive.any():
        minority = naive if naive.sum() <= aware.sum() else aware
        _raise_at_row(
            rows,
            time_col,
            int(np.flatnonzero(minority)[0]),
            "mixes date-times with and without a time zone (e.g. +02:00 or Z); give all "
            "of them one, or none; the first of the less common kind is",
            int(minority.sum()),
        )
    try:
        return pd.to_datetime(column, errors="coerce", format="mixed", utc=True)
    except (ValueError, TypeError) as err:
        raise UserError(
            f"{path}: column '{time_col}' cannot be read as date-times ({type(err).__name__})"
        ) from err


def _check_parsed(rows: TableRows, time_col: str, column: pd.Series, failed: pd.Series) -> None:
    """Cells that hold something (not blank) and did not parse are an error; only the
    failed cells are looked at as text."""
    failed = (failed & column.notna()).to_numpy(dtype=bool)
    if not failed.any():
        return
    where = np.flatnonzero(failed)
    bad = where[(column.iloc[where].astype(str).str.strip() != "").to_numpy(dtype=bool)]
    if len(bad):
        _raise_at_row(rows, time_col, int(bad[0]), "is neither a number nor a date-time", len(bad))


def check_duplicate_times(rows: TableRows, time_col: str, hours: np.ndarray) -> None:
    """Two rows for the same patient and time are an error unless data.duplicates=aggregate."""
    codes, _ = rows.patient_codes()
    repeated = repeated_rows(codes, hours)
    if repeated is not None:
        _raise_at_row(
            rows,
            time_col,
            int(np.flatnonzero(repeated)[0]),
            "repeats an earlier row's time for the same patient "
            "(set data.duplicates=aggregate to combine such rows)",
            int(repeated.sum()),
        )


def repeated_rows(codes: np.ndarray, hours: np.ndarray) -> np.ndarray | None:
    """Whether each row repeats an earlier row's (patient code, time); None when no row
    does. Exact (times compared as stored), and linear: a table sorted by patient and
    time is recognised in one pass, others count (patient, distinct time) pairs."""
    if len(codes) < 2:
        return None
    step, rise = np.diff(codes), np.diff(hours)
    if np.all((step > 0) | ((step == 0) & (rise > 0))):
        return None
    whole = (
        hours.min() > -(2**52) and hours.max() < 2**52 and np.array_equal(hours, np.floor(hours))
    )
    times, distinct = dense_factorize(hours.astype(np.int64)) if whole else (None, None)
    if times is None:
        times, distinct = pd.factorize(hours, use_na_sentinel=False)
    pair = codes.astype(np.int64) * len(distinct) + times
    size = (int(codes.max()) + 1) * len(distinct)
    if size <= 8 * len(pair) and np.bincount(pair, minlength=size).max() <= 1:
        return None
    repeated = pd.Series(pair).duplicated().to_numpy()
    return repeated if repeated.any() else None


def check_ids(rows: TableRows) -> None:
    """Every row names its patient."""
    df, path, id_col = rows.df, rows.path, rows.id_col
    known = rows.patients is not None  # codes from the read: -1 is a missing id
    missing = rows.patients.codes < 0 if known else df[id_col].isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise UserError(
            f"{path}: column '{id_col}' is empty in row {row + 1} "
            f"({int(missing.sum())} rows without a patient id)"
        )


def _raise_at_row(rows: TableRows, column: str, row: int, problem: str, count: int) -> None:
    df, path, id_col = rows.df, rows.path, rows.id_col
    patient = df[id_col].iloc[row] if id_col in df.columns else "?"
    more = f" ({count} rows in all)" if count > 1 else ""
    raise UserError(
        f"{path}: column '{column}' {problem} in row {row + 1} (patient {patient}){more}"
    )
