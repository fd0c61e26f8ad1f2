"""The quality benchmark (scripts/benchmarks/quality.py): its scoring, targets and doc on
made-up figures (fast), and one real set end to end (slow, needs ../shared/quality)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPT = ROOT / "scripts" / "benchmarks" / "quality.py"


def _load_quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


quality = _load_quality()
SMALL_SET = quality.QUICK_SET  # Tecator: 172 train / 43 test patients x 100 steps


def _result(**figures) -> dict:
    """One set's result as run_benchmark records it: a 100 x 100 set with all peers."""
    base = {
        "status": "ok",
        "stage": None,
        "n_train": 100,
        "n_test": 50,
        "channels": 1,
        "length_min": 100,
        "length_max": 100,
        "majority": 0.6,
        "peers": {
            "MiniRocket": {"accuracy": 0.9, "auroc": 0.95, "wall_s": 1.0},
            "LogReg": {"accuracy": 0.8, "auroc": 0.85, "wall_s": 0.1},
            "HGB": {"accuracy": 0.7, "auroc": 0.75, "wall_s": 0.2},
        },
        "inceptiontime_published": None,
        "accuracy": 0.9,
        "auroc": 0.95,
        "train_s": 60.0,
        "predict_s": 5.0,
        "n_missing": 0,
    }
    return base | figures


def test_scoring_joins_ids_as_strings_and_counts_missing_patients_wrong(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,label\n007,1\n7,0\np3,0\np4,1\n")
    predictions = tmp_path / "predictions.csv"
    # "7" has no prediction ("007" must not stand for it); "zz" has no label
    predictions.write_text(
        "patient_id,probability,predicted_label\n007,0.9,1\np3,0.2,0\np4,0.4,0\nzz,0.5,1\n"
    )
    score = quality.score_predictions(predictions, labels)
    assert score["accuracy"] == pytest.approx(2 / 4)  # 007 and p3 right, p4 wrong, 7 missing
    assert score["n_missing"] == 1
    assert score["n_scored"] == 3
    assert score["n_unlabelled_predictions"] == 1
    assert score["auroc"] == pytest.approx(1.0)  # over 007, p3, p4: positives ranked first
    assert score["majority"] == pytest.approx(0.5)


def test_scoring_gives_no_auroc_when_the_scored_patients_share_one_outcome(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,label\na,1\nb,1\n")
    predictions = tmp_path / "predictions.csv"
    predictions.write_text("patient_id,probability,predicted_label\na,0.7,1\nb,0.3,0\n")
    score = quality.score_predictions(predictions, labels)
    assert score["accuracy"] == 0.5
    assert score["auroc"] is None


def test_set_targets_pass_fail_and_not_applicable():
    checks = quality.check_set(_result(accuracy=0.79, inceptiontime_published=0.80))
    assert checks["a"]["pass"] is False  # 0.79 < LogReg 0.8
    assert checks["b"]["pass"] is True  # >= majority 0.6 - 0.02
    assert checks["d"]["pass"] is True  # >= 0.80 - 0.02
    assert checks["f"]["pass"] is True  # 65 s <= 180 s
    assert "0.790 vs LogReg 0.800" in checks["a"]["text"]
    assert quality.check_set(_result())["d"]["pass"] is None  # no published figure


def test_a_tie_at_the_peers_precision_is_not_a_loss():
    # 47/61 = 0.770491..., which peers.csv writes as 0.7705
    checks = quality.check_set(_result(accuracy=47 / 61, peers={"LogReg": {"accuracy": 0.7705}}))
    assert checks["a"]["pass"] is True


def test_time_limits_follow_the_set_size():
    assert quality.time_limit(1_000, 500) == 180
    assert quality.time_limit(3_601, 500) == 1_200  # FordA
    assert quality.time_limit(10_000, 500) is None
    slow = quality.check_set(_result(train_s=170.0, predict_s=20.0))
    assert slow["f"]["pass"] is False


def test_a_failed_set_fails_every_criterion_that_applies():
    failed = _result(accuracy=None, auroc=None, stage="train", status="error: too few")
    del failed["predict_s"]  # training failed: predict never ran
    checks = quality.check_set(failed)
    assert [checks[k]["pass"] for k in "abf"] == [False, False, False]
    assert checks["d"]["pass"] is None
    assert checks["a"]["text"] == "no result (train failed)"


def test_overall_targets_and_the_mean_over_the_same_sets():
    synthetic = {
        "status": "ok",
        "cnn_auroc": 0.869,
        "baselines_auroc": {"logistic_regression": 0.893, "gradient_boosting": 0.904},
    }
    results = {"A": _result(accuracy=0.95), "B": _result(accuracy=0.85)}
    targets = quality.check_targets(results, synthetic)["overall"]
    assert targets["a"]["pass"] is True
    assert targets["c"]["pass"] is True  # mean 0.90 >= MiniRocket's 0.90 over A and B
    assert targets["e"]["pass"] is False
    assert "gradient_boosting 0.904" in targets["e"]["text"]
    assert targets["all"]["pass"] is False and "(e)" in targets["all"]["text"]

    results["B"] = _result(accuracy=None, stage="train", status="error: refused")
    targets = quality.check_targets(results, None)["overall"]
    assert targets["c"]["pass"] is False and "1 set(s) without a result" in targets["c"]["text"]
    assert targets["e"]["pass"] is None  # synthetic not run


def test_every_criterion_passing_passes_overall():
    synthetic = {"status": "ok", "cnn_auroc": 0.95, "baselines_auroc": {"lr": 0.9, "gb": 0.91}}
    targets = quality.check_targets({"A": _result(accuracy=0.95)}, synthetic)["overall"]
    assert targets["all"]["pass"] is True, targets
    assert targets["d"]["pass"] is None  # no published figure: not counted against


def test_spread_sets_seeds_side_by_side_and_counts_the_runs_that_pass(tmp_path):
    def record(seed: int | None, **sets) -> dict:
        return {"overrides": [] if seed is None else [f"seed={seed}"], "sets": sets}

    records = [
        record(None, A=_result(accuracy=0.80, auroc=1.0), B=_result()),
        record(1, A=_result(accuracy=0.90, auroc=0.99)),  # B not run with this seed
        record(2, A=_result(accuracy=0.75, auroc=0.98), B=_result(accuracy=None, stage="train")),
    ]
    header, _, row_a, row_b = quality.spread_table(records)
    assert "| default seed | seed 1 | seed 2 |" in header
    assert row_a.startswith("| A | 0.800 (1.000) | 0.900 (0.990) | 0.750 (0.980) |")
    assert "| 0.817 (0.750-0.900) |" in row_a  # mean and range of the three
    assert row_a.endswith("| 2 of 3 / 3 of 3 / n/a / 3 of 3 |")  # 0.75 < LogReg's 0.8
    assert "| – | train failed |" in row_b and "| 0.900 (0.900-0.900) |" in row_b  # it counts
    assert row_b.endswith("| 1 of 2 / 1 of 2 / n/a / 1 of 2 |")  # as failing, not as absent

    files = []
    for i, r in enumerate(records):
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(r))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--spread", *map(str, files)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[2] == row_a


def test_published_inceptiontime_column_is_read_from_the_readme_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "# sets\n\n| set | N | InceptionTime publ. | other |\n|---|---|---|---|\n"
        "| A | 20 | 0.850 | x |\n| B | 30 | – | y |\n\nMean accuracy: 0.9\n"
    )
    assert quality.read_published_inceptiontime(readme) == {"A": 0.85, "B": None}


def test_checkpoint_from_metrics_json_else_best_ckpt(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"checkpoint": ""}))
    assert quality.find_checkpoint(run) is None
    (run / "checkpoints" / "best.ckpt").write_bytes(b"")
    assert quality.find_checkpoint(run) == run / "checkpoints" / "best.ckpt"
    (run / "metrics.json").write_text(json.dumps({"checkpoint": str(tmp_path / "fold.ckpt")}))
    assert quality.find_checkpoint(run) == tmp_path / "fold.ckpt"


def test_a_failed_command_reports_its_last_stderr_line(tmp_path):
    command = [
        sys.executable,
        "-c",
        "import sys; sys.stderr.write('bar 10%\\rbar 50%\\nerror: too few patients\\n'); "
        "sys.exit(2)",
    ]
    outcome = quality.run_timed(command, tmp_path / "log.txt")
    assert outcome["returncode"] == 2
    assert outcome["status"] == "error: too few patients"
    assert "bar 50%" in (tmp_path / "log.txt").read_text()


def test_extra_overrides_follow_the_double_dash():
    opts = quality.parse_args(["--sets", "A,B", "--no-doc", "--", "model=x", "data.batch_size=8"])
    assert opts.sets == ["A", "B"] and opts.doc is None and opts.jobs == 1
    assert opts.overrides == ["model=x", "data.batch_size=8"]
    command = quality.train_command(ROOT, ROOT / "run", opts.report, opts.overrides)
    assert command[-3:] == ["report.enabled=false", "model=x", "data.batch_size=8"]


def test_doc_names_the_subset_the_failures_and_the_verdicts():
    results = {
        "A": _result(accuracy=0.95),
        "B": _result(accuracy=None, stage="train", status="error: refused"),
    }
    record = {
        "date": "2026-11-25 10:00 UTC",
        "command": "python scripts/benchmarks/quality.py --sets A,B",
        "overrides": ["model=x"],
        "report": False,
        "jobs": 2,
        "sets_in_root": ["A", "B", "C"],
        "sets_run": ["A", "B"],
        "subset": True,
        "git": {"commit": "abc1234", "branch": "quality-bench", "dirty": False},
        "machine": {
            "cpu": "Example CPU",
            "cpu_capability": "AVX2",
            "cpu_count": 2,
            "cpus_usable": 2,
            "torch_threads": 2,
            "torch": "2.13.0",
            "python": "3.11",
            "loadavg_start": [1.0, 1.0, 1.0],
            "loadavg_end": [2.0, 1.0, 1.0],
        },
        "sets": results,
        "synthetic": None,
        "means": quality.mean_accuracies(results),
        "targets": quality.check_targets(results, None),
    }
    doc = quality.render_doc(record)
    assert "**2 of the 3 sets** (A, B)" in doc
    assert "`model=x`" in doc
    # the CPU is named: its vector kernels change the seconds and the last digits
    assert "2 CPU cores (2 usable; Example CPU, torch kernels AVX2)" in doc
    assert "seconds are not comparable" in doc
    assert "train failed: error: refused" in doc
    assert "| A | 100 / 50 | 1 x 100 | 0.600 | **0.950** / 0.950 |" in doc
    assert "(c) **FAIL**" in doc and "(e) **n/a**" in doc
    rows = quality.rows(record)
    assert {r["case"] for r in rows} >= {"A accuracy", "A AUROC", "B train + predict"}
    assert all(math.isfinite(r["value"]) for r in rows)


@pytest.mark.slow
@pytest.mark.skipif(
    not (quality.DEFAULT_ROOT / SMALL_SET).is_dir(), reason="quality root not present"
)
def test_one_small_set_end_to_end(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--sets",
            SMALL_SET,
            "--out-dir",
            str(tmp_path),
            "--no-doc",
            "--skip-synthetic",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "quality.json").read_text())["sets"][SMALL_SET]
    assert result["status"] == "ok", result
    assert math.isfinite(result["accuracy"]) and math.isfinite(result["auroc"])
    assert result["n_missing"] == 0
    assert (tmp_path / SMALL_SET / "predictions.csv").is_file()
    assert f"[1/1] {SMALL_SET}" in proc.stdout
