"""Benchmarks of the pipeline, as ratios measured in one run (the machine may be noisy).

    python scripts/benchmark.py [--quick] [--only reshape,...] [--threads N] [--out benchmark.json]
                                [--rows N] [--data-dir DIR]

Each module in scripts/benchmarks/ is one section: it defines ``run(quick) -> list[dict]``
whose rows hold at least ``section``, ``case`` and ``value`` with ``unit``; a row may
add ``ratio`` (against the section's reference case) and ``peak_mb``.

Sections in ON_REQUEST run only when named in --only: ``quality`` trains on every set of
../shared/quality (tens of minutes; see scripts/benchmarks/quality.py and docs/QUALITY.md);
``outofcore`` takes a generated table of ``--rows`` rows (default 2 million) to the grid and
through one training epoch with the duckdb and pandas engines (scripts/benchmarks/outofcore.py).
A section whose ``run`` takes ``rows`` gets ``--rows``; one that takes ``data_dir`` writes
its generated tables there and reuses them on the next run (``--data-dir``; default: a
temporary folder, removed after).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

SECTIONS_DIR = Path(__file__).parent / "benchmarks"
ON_REQUEST = {"quality", "outofcore"}  # too long for a default run: only with --only


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--only", default="", help="comma-separated section names")
    parser.add_argument("--out", default="outputs/benchmark.json", help="JSON results file")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default); 1 is steadier on a shared machine",
    )
    parser.add_argument(
        "--rows", type=int, default=None, help="table rows for sections that take a size"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="keep generated tables here and reuse them (sections that generate large files)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    sys.path.insert(0, str(SECTIONS_DIR.parent))
    names = sorted(p.stem for p in SECTIONS_DIR.glob("*.py") if not p.stem.startswith("_"))
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            sys.exit(
                f"error: unknown section(s) {', '.join(unknown)}; choose from {', '.join(names)}"
            )
        names = [n for n in names if n in wanted]
    else:
        names = [n for n in names if n not in ON_REQUEST]

    rows: list[dict] = []
    for name in names:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        run = importlib.import_module(f"benchmarks.{name}").run
        takes = inspect.signature(run).parameters
        options = {"rows": args.rows} if args.rows is not None and "rows" in takes else {}
        if args.data_dir and "data_dir" in takes:
            options["data_dir"] = args.data_dir
        section_rows = run(quick=args.quick, **options)
        for row in section_rows:
            print("   " + format_row(row), flush=True)
        print(f"   ({time.perf_counter() - started:.1f} s)")
        rows += section_rows

    record = {"machine": machine(), "quick": args.quick, "command": sys.argv, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


def format_row(row: dict) -> str:
    digits = 3 if row["unit"] in ("fraction", "AUROC") else 2  # quality: 0.02 margins matter
    text = f"{row['case']:<48} {row['value']:>14,.{digits}f} {row['unit']}"
    if row.get("ratio") is not None:
        text += f"   x{row['ratio']:.2f}"
    if row.get("peak_mb") is not None:
        text += f"   peak {row['peak_mb']:,.0f} MB"
    if row.get("gpu_peak_mb") is not None:
        text += f"   GPU peak {row['gpu_peak_mb']:,.0f} MB"
    return text


def machine() -> dict:
    from benchmarks.quality import cpu_description

    return {
        **cpu_description(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


if __name__ == "__main__":
    main()
