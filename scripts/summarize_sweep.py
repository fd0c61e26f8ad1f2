"""Summarise a sweep: every trial, best first, as a table and a plot.

    python scripts/summarize_sweep.py outputs/sweeps/patientcnn-28e3c045ce84 --best-report
    python scripts/summarize_sweep.py outputs/sweeps/2026-01-01_12-00-00 --minimize

Prints the table and writes summary.csv, summary.md and summary.png (the objective
against each swept setting) into the sweep folder. The direction is the Optuna
sweeper's (from multirun.yaml); grid sweeps are maximised unless --minimize is given.
--best-report writes the full evaluation report (baselines, importance, 1000 resamples)
of the best trial into <sweep>/best/report/ (trials write a cheap one); run it from the
folder the sweep ran in, so that the trials' data paths resolve.
"""

import argparse
import sys
from pathlib import Path

from patientcnn.errors import UserError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder, e.g. outputs/sweeps/...")
    parser.add_argument("--minimize", action="store_true", help="lower objective is better")
    parser.add_argument(
        "--best-report", action="store_true", help="full report of the best trial in <sweep>/best"
    )
    args = parser.parse_args()
    import pandas as pd  # after parsing: --help and usage errors need no pandas

    from patientcnn.sweep_summary import shown, summarize, sweep_maximizes

    try:
        maximize = not args.minimize and sweep_maximizes(args.sweep_dir)
        table, paths = summarize(args.sweep_dir, maximize)
        with pd.option_context("display.width", 250, "display.max_columns", None):
            print(shown(table).drop(columns=["error"], errors="ignore").to_string(index=False))
        print("\nwrote " + ", ".join(str(p) for p in paths.values()))
        if args.best_report:
            best = table.iloc[0]
            if best["status"] != "ok":
                raise UserError(f"{args.sweep_dir}: no trial finished, so none is best")
            from patientcnn.report.rerun import report_finished_run

            page = report_finished_run(args.sweep_dir / best["trial"], args.sweep_dir / "best")
            print(f"full report of trial {best['trial']} (the best): {page}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
