"""Splitting a long table into chunks of whole patients, in bounded memory.

A small file is one chunk: the file itself. A large one is streamed once (Parquet row
groups or CSV blocks, never the whole file) and each row goes to one of several
temporary Parquet files chosen by a hash of its patient id, so every patient lands
wholly in one partition whatever the row order; each partition is then read on its own.
Peak memory follows the partition size (``chunk_rows``), not the file size.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from patientcnn.data.tables import delimiter, is_parquet, table_columns
from patientcnn.errors import UserError
from patientcnn.files import remove_stale_temporaries

CSV_BLOCK_BYTES = 16 << 20  # pyarrow CSV block: rows arrive about this many bytes at a time
CHUNKS_PREFIX = ".patientcnn-chunks-"  # + pid: a killed run's folder is found and removed


def estimated_rows(path: Path) -> int:
    """Parquet: the exact row count from the footer; CSV: an estimate from the first MB."""
    if is_parquet(path):
        return pq.ParquetFile(path).metadata.num_rows
    compressed = path.name.lower().endswith(".gz")
    with (gzip.open if compressed else open)(path, "rb") as f:
        sample = f.read(1 << 20)
        consumed = f.fileobj.tell() if compressed else len(sample)  # bytes of the file read
    lines = sample.count(b"\n")
    if len(sample) < 1 << 20:  # the whole file was read
        return lines
    return int(path.stat().st_size / max(consumed, 1) * lines)


@contextmanager
def patient_chunks(
    path: str | Path,
    columns: list[str],
    numeric: list[str],
    chunk_rows: int,
    tmp_dir: str | Path | None = None,
    progress: bool = False,
) -> Iterator[list[Path]]:
    """Yield files that each hold whole patients: ``[path]`` itself when it is small.

    Only ``columns`` (the id column first) are copied into the partitions, ids as text,
    the ``numeric`` ones as floats. The partitions live in a hidden folder in ``tmp_dir`` (the
    caller passes the output's folder by default, never the system temp folder, so
    patient data stays where the user put it). They are removed on exit, also after an
    error or SIGTERM; the folder of a killed process is removed by the next run.
    """
    path = Path(path)
    rows = estimated_rows(path)
    if rows <= chunk_rows:
        yield [path]
        return
    n_parts = max(2, math.ceil(rows / chunk_rows))
    where = Path(tmp_dir) if tmp_dir is not None else path.parent
    where.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(where, (f"{CHUNKS_PREFIX}*",))
    prefix = f"{CHUNKS_PREFIX}{os.getpid()}-"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=where) as folder:
        yield _partition(path, columns, numeric, n_parts, Path(folder), rows, progress)


def _partition(
    path: Path,
    columns: list[str],
    numeric: list[str],
    n_parts: int,
    folder: Path,
    rows: int,
    progress: bool,
) -> list[Path]:
    writers: dict[int, pq.ParquetWriter] = {}
    bar = tqdm(total=rows, unit="rows", desc="partitioning", disable=not progress, leave=False)
    try:
        for batch in _batches(path, columns, numeric):
            ids = batch.column(0).to_pandas()
            parts = pd.util.hash_array(ids.astype(str).to_numpy(dtype=object)) % n_parts
            order = np.argsort(parts, kind="stable")
            sorted_parts = parts[order]
            table = pa.Table.from_batches([batch]).take(pa.array(order))
            bounds = np.flatnonzero(np.diff(sorted_parts)) + 1
            for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(order)], strict=True):
                part = int(sorted_parts[start])
                if part not in writers:
                    writers[part] = pq.ParquetWriter(
                        folder / f"part-{part:05d}.parquet", table.schema
                    )
                writers[part].write_table(table.slice(start, stop - start))
            bar.update(batch.num_rows)
    except UserError:
        raise
    except Exception as err:
        raise UserError(_streaming_error(path, err)) from err
    finally:
        for writer in writers.values():
            writer.close()
        bar.close()
    return sorted(folder.glob("part-*.parquet"))


def _batches(path: Path, columns: list[str], numeric: list[str]) -> Iterator[pa.RecordBatch]:
    if is_parquet(path):
        # one row group at a time: iter_batches over the whole file buffers ahead, and its
        # peak memory grew with the file
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            yield from parquet.read_row_group(group, columns=columns).to_batches(1 << 18)
        return
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(delimiter=delimiter(path)),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns,
            # a feature whose first block holds only integers may hold decimals later
            # the id, and the columns after id and time that are not numeric (an EAV
            # table's variable and value), as text: a value column may mix in words
            column_types={
                columns[0]: pa.string(),
                **{c: pa.float64() if c in numeric else pa.string() for c in columns[2:]},
            },
            strings_can_be_null=False,  # an id 'NA' is an id; an empty one is caught later
        ),
    )
    yield from reader


def _streaming_error(path: Path, err: Exception) -> str:
    """A reader failure as a message naming the column but never the value (patient data)."""
    found = re.search(r"column #(\d+): CSV conversion error to (\w+)", str(err))
    if found:
        column = table_columns(path)[int(found.group(1))]
        kind = "a number" if found.group(2) in ("double", "float") else found.group(2)
        return (
            f"{path}: column '{column}' holds a value that is not {kind} (found while "
            "streaming the file in chunks, where rows are not numbered)"
        )
    return f"{path}: cannot be read as a table ({_reason(err)})"


def _reason(err: Exception) -> str:
    """The reader's first line, with anything quoted (it may be a value) blanked out."""
    text = str(err).strip()
    text = text.splitlines()[0] if text else type(err).__name__
    return re.sub(r"'[^']*'", "'...'", text)[:200]
