"""Timing and memory helpers shared by the benchmark sections."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import torch

ROOT = Path(__file__).resolve().parents[2]
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """Fastest of ``repeat`` runs, in seconds: the least disturbed by other load."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def best_times_interleaved(fns: list[Callable[[], object]], repeat: int = 3) -> list[float]:
    """Fastest of ``repeat`` runs of each, the functions taking turns (a, b, a, b, ...),
    so that a burst of load from other processes hits both sides of a ratio alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            started = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - started)
    return best


def peak_mb(fn: Callable[[], object]) -> float:
    """Peak memory one call adds above what the process held before it, in MB."""
    return run_with_peak(fn)[1]


def run_with_peak(fn: Callable[[], object]) -> tuple[object, float]:
    """``fn()``'s result and the peak memory the call added, in MB.

    On Linux this is the resident set (every allocator counts: numpy, Arrow, torch):
    the kernel's high-water mark is reset before the call and read after it. Elsewhere
    it falls back to the Python heap as tracemalloc sees it (numpy and pandas, not torch).
    """
    if not _can_reset_high_water_mark():
        return _traced(fn)
    gc.collect()
    _release_free_heap()
    before = _status_kb("VmRSS")
    CLEAR_REFS.write_text("5")
    result = fn()
    return result, max(_status_kb("VmHWM") - before, 0) / 1e3


def gpu_peak_mb(fn: Callable[[], object], device: torch.device) -> tuple[object, float | None]:
    """``fn()``'s result and the most GPU memory torch held during it (None on the CPU)."""
    if device.type != "cuda":
        return fn(), None
    torch.cuda.reset_peak_memory_stats(device)
    result = fn()
    return result, torch.cuda.max_memory_allocated(device) / 1e6


def _traced(fn: Callable[[], object]) -> tuple[object, float]:
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def _can_reset_high_water_mark() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _release_free_heap() -> None:
    """Hand freed heap pages back to the system, so an earlier case's garbage is not reused."""
    pa.default_memory_pool().release_unused()  # Arrow keeps its own pool
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status_kb(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{STATUS} has no {field}")
