"""`python scripts/benchmark.py --quick` runs every section and writes its rows (no timings asserted)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

REQUIRED = {"section", "case", "value", "unit"}
SECTIONS = {"bootstrap", "eav", "inference", "irregular", "load", "predict", "reshape"}


@pytest.mark.slow
def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "benchmark.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    sections = {row["section"] for row in rows}
    assert SECTIONS | {"training", "scaling"} <= sections
    for row in rows:
        assert row.keys() >= REQUIRED, row
        assert row["value"] > 0
    for section in sections:  # each gives its memory: a row's peak, or rows of resident MB
        kept = [row for row in rows if row["section"] == section]
        assert any("peak_mb" in row or row["unit"] == "MB RSS" for row in kept), section
    training = [row for row in rows if row["section"] == "training"]
    assert [row["ratio"] for row in training][0] == 1.0  # the raw loop is the reference


def test_unknown_section_is_named():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--only", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "unknown section(s) nope" in proc.stderr
