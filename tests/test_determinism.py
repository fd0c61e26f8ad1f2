"""The same seed and config give identical metrics in two separate runs on the CPU."""

from __future__ import annotations

from pathlib import Path

from conftest import read_metrics, train_run


def test_same_seed_same_metrics_on_cpu(tmp_path: Path):
    overrides = ("trainer=cpu", "recipe.steps=20", "data.cv_folds=2", "seed=7")
    first, out_a = train_run(tmp_path / "a", *overrides)
    second, out_b = train_run(tmp_path / "b", *overrides)
    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    a, b = read_metrics(out_a), read_metrics(out_b)
    assert a["metrics"] == b["metrics"]  # exactly: every float, every metric
    a["cohort"].pop("test_source"), b["cohort"].pop("test_source")  # names each run's folder
    assert a["cohort"] == b["cohort"]
    assert a["members"] == b["members"]
