"""Distributed (DDP) training on two CPU processes with the gloo backend.

Each process trains on a disjoint shard of the training patients per epoch, validation
metrics are gathered over every patient exactly once (they equal the single-process
metrics), and the training task run under ``trainer=ddp`` writes its outputs from rank 0
only: a checkpoint that one CPU process then uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, read_metrics, run_cli, train_run

N_TRAIN, N_VAL = 160, 61  # as in tests/ddp_check.py


@pytest.fixture(scope="module")
def two_ranks(small_cohort, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "ddp_check.py"), str(small_cohort), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_each_process_trains_on_a_disjoint_shard_of_the_patients(two_ranks):
    assert [r["rank"] for r in two_ranks] == [0, 1]
    assert all(r["world_size"] == 2 for r in two_ranks)
    epochs = [r["train"] for r in two_ranks]
    for first, second in zip(*epochs, strict=True):  # per epoch
        assert len(first) == len(second) == N_TRAIN // 2  # the same number of steps
        assert not set(first) & set(second)
        assert sorted(first + second) == list(range(N_TRAIN))
    assert epochs[0][0] != epochs[0][1]  # reshuffled each epoch


def test_validation_metrics_count_every_patient_once_and_equal_one_process(two_ranks):
    served = [set(r["val"]) for r in two_ranks]
    assert sorted(len(r["val"]) for r in two_ranks) == [N_VAL // 2, N_VAL // 2 + 1]
    assert not served[0] & served[1]
    assert served[0] | served[1] == set(range(N_TRAIN, N_TRAIN + N_VAL))
    single = two_ranks[0]["single_process"]
    assert set(single) <= set(two_ranks[0]["logged"])
    for rank in two_ranks:  # every process logged the metrics of all patients
        for name, value in single.items():
            assert rank["logged"][name] == pytest.approx(value, rel=1e-6, abs=1e-7), name


def test_ddp_training_task_writes_from_rank_zero_and_the_checkpoint_runs_on_one_cpu(tmp_path):
    """The default path (cross-validation folds, the closed-form partners) under
    trainer=ddp on two CPU processes: no traceback, one set of outputs."""
    proc, out = train_run(
        tmp_path,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data.cv_folds=2",
        "report.enabled=false",
        "trainer.sync_batchnorm=true",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    log = proc.stdout + proc.stderr
    assert "trainer.sync_batchnorm=true is switched off" in log
    assert "distributed training: 2 processes, each serving a shard of" in log
    names = {p.name for p in out.iterdir()}
    assert names == {
        ".hydra",
        "checkpoints",
        "config.yaml",
        "metrics.json",
        "validation_predictions.csv",
        "train.log",
        "train_ddp_process_1.log",  # rank 1's log: the only thing it writes
    }
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "best.ckpt",
        "fold0",
        "fold1",
    ]
    record = read_metrics(out)
    assert [m["member"] for m in record["members"]] == ["fold0", "fold1"]
    assert 0.0 <= record["metrics"]["test/auroc"] <= 1.0
    assert (
        "rank 0 fits the partners and writes the outputs"
        in (out / "train_ddp_process_1.log").read_text()
    )

    preds = tmp_path / "preds.csv"
    scored = run_cli(
        "scripts/predict.py",
        f"checkpoint={out / 'checkpoints' / 'best.ckpt'}",
        f"input={tmp_path / 'data' / 'synthetic' / 'small' / 'measurements.csv'}",
        f"output={preds}",
        "device=cpu",
        "progress=false",
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert preds.exists()


@pytest.mark.slow
def test_ddp_refits_an_ensemble_of_one_split(tmp_path):
    """The refit (every rank needs the best step rank 0 read) and seeds x members."""
    proc, out = train_run(
        tmp_path,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "recipe.refit=true",
        "model.ensemble=2",
        "report.enabled=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_metrics(out)
    assert [m["member"] for m in record["members"]] == ["split_seed0", "split_seed1"]
    assert all(m["refit_steps"] >= 1 for m in record["members"])


def test_sync_batchnorm_would_drop_the_padding_mask_so_it_stays_off():
    """Why trainer.sync_batchnorm=true is switched off: torch's conversion replaces the
    masked BatchNorm with one that cannot take the mask (the first forward fails)."""
    from patientcnn.models.classifier import Classifier

    net = Classifier(2, 20, net="inceptiontime", depth=3, width=4, bottleneck=4).net
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net).eval()
    x, valid = torch.randn(3, 2, 20), torch.ones(3, 20, dtype=torch.bool)
    with pytest.raises(TypeError):
        converted(x, valid, None)
