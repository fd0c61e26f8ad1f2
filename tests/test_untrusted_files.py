"""Checkpoints are data, never code: crafted, corrupt or foreign files are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from patientcnn.checkpoint import BUNDLE_KEY, BUNDLE_VERSION, load_bundle
from patientcnn.errors import UserError
from patientcnn.models.classifier import CNNClassifier


class Payload:
    """Unpickling this object creates a folder: the stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def bundle_dict(**hparams: object) -> dict:
    """A valid checkpoint as Lightning + BundleCallback write it, for a tiny model."""
    model = CNNClassifier(in_channels=2, seq_len=6, channels=[4], **hparams)
    return {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        BUNDLE_KEY: {"version": BUNDLE_VERSION, "data": {"columns": {}}, "threshold": 0.5},
    }


@pytest.fixture
def good_ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "good.ckpt"
    torch.save(bundle_dict(), path)
    return path


def test_valid_bundle_loads(good_ckpt: Path):
    model = load_bundle(good_ckpt).build_model()
    assert model(torch.zeros(1, 2, 6), torch.ones(1, 6, dtype=torch.bool)).shape == (1,)


@pytest.mark.parametrize("where", ["whole file", "inside the bundle"])
def test_pickled_payload_is_refused_and_never_runs(tmp_path: Path, where: str):
    marker = tmp_path / "payload_ran"
    if where == "whole file":
        content = Payload(marker)
    else:
        content = bundle_dict()
        content[BUNDLE_KEY]["data"] = Payload(marker)
    path = tmp_path / "evil.ckpt"
    torch.save(content, path)
    with pytest.raises(UserError, match=r"evil\.ckpt: not a readable patientcnn checkpoint"):
        load_bundle(path)
    assert not marker.exists()
    # the payload is real: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_target_in_stored_hyperparameters_is_never_instantiated(tmp_path: Path):
    marker = tmp_path / "target_ran"
    content = bundle_dict()
    content["hyper_parameters"]["_target_"] = "os.mkdir"
    content["hyper_parameters"]["path"] = str(marker)
    path = tmp_path / "target.ckpt"
    torch.save(content, path)
    with pytest.raises(
        UserError, match=r"target\.ckpt: .*not those of a patientcnn model.*_target_"
    ):
        load_bundle(path)
    assert not marker.exists()


def test_nested_target_in_a_hyperparameter_is_only_a_bad_value(tmp_path: Path):
    marker = tmp_path / "nested_ran"
    content = bundle_dict()
    content["hyper_parameters"]["activation"] = {"_target_": "os.mkdir", "path": str(marker)}
    path = tmp_path / "nested.ckpt"
    torch.save(content, path)
    bundle = load_bundle(path)
    with pytest.raises(UserError, match=r"nested\.ckpt: .*do not make a model.*activation"):
        bundle.build_model()
    assert not marker.exists()


def test_truncated_checkpoint(tmp_path: Path, good_ckpt: Path):
    path = tmp_path / "truncated.ckpt"
    data = good_ckpt.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"truncated\.ckpt: not a readable patientcnn checkpoint"):
        load_bundle(path)


def test_corrupt_checkpoint(tmp_path: Path):
    path = tmp_path / "noise.ckpt"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(UserError, match=r"noise\.ckpt: not a readable patientcnn checkpoint"):
        load_bundle(path)


def test_foreign_checkpoint(tmp_path: Path):
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(UserError, match=r"foreign\.ckpt: not a patientcnn checkpoint"):
        load_bundle(path)


def test_weights_that_do_not_fit(tmp_path: Path):
    content = bundle_dict()
    content["hyper_parameters"]["channels"] = [8]
    path = tmp_path / "mismatch.ckpt"
    torch.save(content, path)
    with pytest.raises(UserError, match=r"mismatch\.ckpt: the stored weights"):
        load_bundle(path).build_model()
