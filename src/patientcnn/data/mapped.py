"""Training, validation and scoring straight from memory-mapped (N, L, C) files.

The DuckDB engine (``engine_duckdb``) leaves the cohort on disk as an (N, L, C) float32
``.npy`` file. Here that file is served without ever holding N patients in memory:

- ``MappedArrays`` stands where ``PatientArrays`` stands; ``subset`` and
  ``select_features`` only record which patients and channels they mean;
- ``observed_share`` and ``fit_preprocessor`` make one streaming pass over a block of
  patients at a time; the statistics are merged in float64 (Chan et al.'s pairwise
  update), so they equal the in-memory ``Preprocessor.fit`` up to rounding in the last
  digits (tested);
- ``mapped_tensors`` writes the preprocessed (N, C', L) inputs once to a second file in
  the grid's cache folder, and ``MappedTensor`` reads the rows of each batch from it with
  ``os.pread``, so the pages read are not kept in the process's resident memory.

``MappedTensor`` answers the few tensor calls the training code makes on a split
(``len``, ``shape``, indexing that returns a real tensor, ``to``, ``cpu``, ``numpy``);
``take`` is the lazy row selection ``PatientDataModule.select`` uses. Peak memory is a
few batches plus one block of patients, not N.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from patientcnn.data.preprocess import (
    Preprocessor,
    _safe_std,
    checked_std,
    time_since_observed,
)
from patientcnn.data.reshape import PatientArrays
from patientcnn.errors import UserError

if TYPE_CHECKING:
    from patientcnn.data.spec import TableSpec

BLOCK_BYTES = 8 << 20  # patients are read in blocks of about this many bytes of grid: a
# block's preprocessing makes several copies of it (int64 step indices among them)


class RowFile:
    """Rows of a C-order ``.npy`` file, read with ``os.pread`` (no page stays mapped)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        header = np.load(self.path, mmap_mode="r", allow_pickle=False)  # the header only
        if not header.flags.c_contiguous:
            raise UserError(f"{self.path}: a Fortran-order array cannot be read by rows")
        self.shape, self.dtype, self.offset = tuple(header.shape), header.dtype, header.offset
        del header
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.fd = os.open(self.path, os.O_RDONLY)
        weakref.finalize(self, os.close, self.fd)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), *shape[1:])``: the rows, in the order given; runs of consecutive
        rows are read with one call."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if not len(rows):
            return out
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
            first, count = int(ordered[start]), int(stop - start)
            data = os.pread(self.fd, count * self.row_bytes, self.offset + first * self.row_bytes)
            if len(data) != count * self.row_bytes:
                raise UserError(f"{self.path}: is shorter than its header says; delete it")
            block = np.frombuffer(data, dtype=self.dtype).reshape(count, *self.shape[1:])
            out[order[start:stop]] = block
        return out


class LazyGrid:
    """The (n, L, c) grid of some patients and channels of a ``RowFile``, read on demand."""

    def __init__(self, file: RowFile, rows: np.ndarray, channels: np.ndarray) -> None:
        self.file, self.rows, self.channels = file, rows, channels
        self.shape = (len(rows), file.shape[1], len(channels))
        self.dtype = file.dtype
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, index) -> np.ndarray:
        block = self.file.read(self.rows[index])
        if (
            len(self.channels) != self.file.shape[2]
            or (self.channels != np.arange(len(self.channels))).any()
        ):
            block = block[:, :, self.channels]
        return block

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, tuple):
            return self.read(index[0])[(slice(None), *index[1:])]
        return self.read(index)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every row in memory: only for small cohorts and code not written for maps."""
        block = self.read(slice(None))
        return block if dtype is None else block.astype(dtype)


class MappedArrays:
    """``PatientArrays`` whose ``x`` stays in a file: the same fields, read on demand."""

    def __init__(
        self,
        file: RowFile,
        lengths: np.ndarray,
        ids: np.ndarray,
        features: list[str],
        align: str,
        folder: Path,
        rows: np.ndarray | None = None,
        channels: np.ndarray | None = None,
    ) -> None:
        self.file, self.folder = file, Path(folder)
        self.rows = np.arange(file.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        self.channels = (
            np.arange(file.shape[2]) if channels is None else np.asarray(channels, dtype=np.int64)
        )
        self.lengths, self.ids, self.features, self.align = lengths, ids, list(features), align
        self.x = LazyGrid(file, self.rows, self.channels)

    @classmethod
    def from_arrays(cls, arrays: PatientArrays, path: str | Path, folder: Path) -> MappedArrays:
        return cls(RowFile(path), arrays.lengths, arrays.ids, arrays.features, arrays.align, folder)

    @property
    def valid(self) -> np.ndarray:
        return valid_steps(self.lengths, self.x.shape[1], self.align)

    def subset(self, index: np.ndarray) -> MappedArrays:
        index = np.asarray(index)
        return MappedArrays(
            self.file,
            self.lengths[index],
            self.ids[index],
            self.features,
            self.align,
            self.folder,
            self.rows[index],
            self.channels,
        )

    def select_features(self, names: list[str]) -> MappedArrays:
        index = [self.features.index(name) for name in names]
        return MappedArrays(
            self.file,
            self.lengths,
            self.ids,
            list(names),
            self.align,
            self.folder,
            self.rows,
            self.channels[index],
        )

    def blocks(self):
        """(positions, x (n, L, c), valid (n, L)) for blocks of about BLOCK_BYTES."""
        per = max(1, BLOCK_BYTES // max(self.file.row_bytes, 1))
        for start in range(0, len(self.rows), per):
            where = slice(start, min(start + per, len(self.rows)))
            valid = valid_steps(self.lengths[where], self.x.shape[1], self.align)
            yield where, self.x.read(where), valid


def is_mapped(arrays) -> bool:
    return isinstance(arrays, MappedArrays)


def valid_steps(lengths: np.ndarray, steps: int, align: str) -> np.ndarray:
    """(n, L) bool: the stay's steps, as PatientArrays.valid."""
    grid = np.arange(steps)
    if align == "end":
        return grid[None, :] >= (steps - lengths)[:, None]
    return grid[None, :] < lengths[:, None]


def observed_share(arrays) -> np.ndarray:
    """(C,) share of patients with at least one observed value of each feature."""
    if not is_mapped(arrays):
        return (~np.isnan(arrays.x)).any(axis=1).mean(axis=0)
    seen = np.zeros(len(arrays.features), dtype=np.int64)
    for _, x, _ in arrays.blocks():
        seen += (~np.isnan(x)).any(axis=1).sum(axis=0)
    return seen / max(len(arrays.rows), 1)


class _Moments:
    """Per-channel count, mean and sum of squared deviations in float64, merged block by
    block (Chan, Golub and LeVeque's pairwise update)."""

    def __init__(self, channels: int) -> None:
        self.n = np.zeros(channels)
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)

    def add(self, values: np.ndarray) -> None:
        """``values`` (rows, channels), NaN where not observed."""
        seen = ~np.isnan(values)
        n = seen.sum(axis=0).astype(np.float64)
        if not n.any():
            return
        filled = np.where(seen, values, 0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, filled.sum(axis=0) / n, 0.0)
        m2 = (np.where(seen, filled - mean, 0.0) ** 2).sum(axis=0)
        total = self.n + n
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mean - self.mean
            share = np.where(total > 0, n / total, 0.0)
            self.m2 = self.m2 + m2 + delta**2 * self.n * share
            self.mean = self.mean + delta * share
        self.n = total

    def std(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.m2 / self.n)


def fit_preprocessor(preprocessor: Preprocessor, arrays) -> Preprocessor:
    """``preprocessor.fit`` on ``arrays``: in memory, or in one streaming pass over a
    mapped cohort giving the same statistics (float64, merged block by block)."""
    if not is_mapped(arrays):
        return preprocessor.fit(arrays.x, arrays.features, arrays.valid)
    channels = len(arrays.features)
    values, since = _Moments(channels), _Moments(channels)
    for _, x, valid in arrays.blocks():
        values.add(x.reshape(-1, channels))
        if preprocessor.time_since_observed:
            since.add(time_since_observed(x, valid, preprocessor.step)[valid])
    preprocessor.std = checked_std(arrays.features, values.n, values.std())
    preprocessor.features = list(arrays.features)
    preprocessor.mean = values.mean.astype(np.float64)
    if preprocessor.time_since_observed:
        preprocessor.since_mean = since.mean.astype(np.float64)
        preprocessor.since_std = _safe_std(since.std())
    return preprocessor


def mapped_tensors(
    arrays: MappedArrays, preprocessor: Preprocessor, y: np.ndarray, static: np.ndarray
) -> tuple:
    """``(x (N, C', L), valid (N, L), y (N,), static (N, S))`` as the in-memory
    ``PatientDataModule._tensors``, x and valid read from files per batch. The
    preprocessed inputs are written once (block by block) under the grid's cache folder,
    named by a hash of the patients, channels and fitted statistics, and reused."""
    state = json.dumps(preprocessor.state(), sort_keys=True)
    digest = hashlib.sha256(
        state.encode() + arrays.rows.tobytes() + arrays.channels.tobytes()
    ).hexdigest()[:20]
    folder = arrays.folder / "tensors"
    folder.mkdir(exist_ok=True)
    path = folder / f"{digest}.npy"
    steps, channels = arrays.x.shape[1], len(preprocessor.output_features)
    if not path.is_file():
        tmp = folder / f".{digest}.{os.getpid()}.tmp"
        header = np.lib.format.open_memmap(
            tmp, "w+", np.float32, (len(arrays.rows), channels, steps)
        )
        offset = header.offset
        del header
        try:
            with open(tmp, "r+b") as handle:
                handle.seek(offset)
                for _, x, valid in arrays.blocks():
                    out = preprocessor.transform(x, valid)  # (n, L, C')
                    handle.write(np.ascontiguousarray(out.transpose(0, 2, 1)).tobytes())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    x = MappedTensor(RowFile(path))
    valid = ValidTensor(arrays.lengths, steps, arrays.align)
    return (
        x,
        valid,
        torch.from_numpy(y.astype(np.float32)),
        torch.from_numpy(np.ascontiguousarray(static, dtype=np.float32)),
    )


class _RowsTensor:
    """What a split's tensor must answer in the training code, over rows read on demand."""

    dtype: torch.dtype
    rows: np.ndarray

    def _read(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _view(self, rows: np.ndarray):
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(np.prod(self.shape))

    def element_size(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()

    def __getitem__(self, index) -> torch.Tensor:
        """A real tensor of the rows ``index`` (slice, integers, numpy or torch)."""
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        if isinstance(index, (int, np.integer)):
            return torch.from_numpy(self._read(self.rows[[int(index)]]))[0]
        return torch.from_numpy(self._read(self.rows[index]))

    def rows_view(self, index: np.ndarray):
        """The rows ``index`` without reading them."""
        return self._view(self.rows[np.asarray(index)])

    def cpu(self):
        return self

    def numpy(self) -> np.ndarray:
        """Every row in memory (the training report's baselines ask for it)."""
        return self._read(self.rows)

    def to(self, device, *args, **kwargs) -> torch.Tensor:
        """All rows on ``device``, copied a block at a time (host memory: one block)."""
        device = torch.device(device)
        out = torch.empty(self.shape, dtype=self.dtype, device=device)
        per = max(1, BLOCK_BYTES // max(self.numel() // max(len(self), 1) * 4, 1))
        for start in range(0, len(self), per):
            out[start : start + per] = torch.from_numpy(self._read(self.rows[start : start + per]))
        return out


class MappedTensor(_RowsTensor):
    """(n, C', L) float32 rows of a preprocessed file."""

    dtype = torch.float32

    def __init__(self, file: RowFile, rows: np.ndarray | None = None) -> None:
        self.file = file
        self.rows = np.arange(file.shape[0]) if rows is None else rows
        self.shape = torch.Size((len(self.rows), *file.shape[1:]))

    def _read(self, rows: np.ndarray) -> np.ndarray:
        return self.file.read(rows)

    def _view(self, rows: np.ndarray) -> MappedTensor:
        return MappedTensor(self.file, rows)


class ValidTensor(_RowsTensor):
    """(n, L) bool stay masks, made per batch from the stay lengths."""

    dtype = torch.bool

    def __init__(self, lengths: np.ndarray, steps: int, align: str, rows=None) -> None:
        self.lengths, self.steps, self.align = lengths, steps, align
        self.rows = np.arange(len(lengths)) if rows is None else rows
        self.shape = torch.Size((len(self.rows), steps))

    def _read(self, rows: np.ndarray) -> np.ndarray:
        return valid_steps(self.lengths[rows], self.steps, self.align)

    def _view(self, rows: np.ndarray) -> ValidTensor:
        return ValidTensor(self.lengths, self.steps, self.align, rows)


def take(tensor, index: np.ndarray):
    """``tensor[index]``; for a mapped tensor a view that reads nothing yet."""
    if isinstance(tensor, _RowsTensor):
        return tensor.rows_view(index)
    return tensor[index]


def scoring_blocks(path, table: TableSpec):
    """A scoring table, read as ``table`` says, taken to the grid out of core (cached
    beside it), then served as ``PatientArrays`` one block of patients at a time, in id
    order: predict's memory is one block, whatever the file's size."""
    from patientcnn.data import engine_duckdb
    from patientcnn.data.engine import input_files

    built = engine_duckdb.load_measurements(path, input_files(path), table)
    arrays = MappedArrays.from_arrays(built.arrays, built.folder / "x.npy", built.folder)
    for where, x, _ in arrays.blocks():
        yield PatientArrays(
            x, arrays.lengths[where], arrays.ids[where], arrays.features, arrays.align
        )
