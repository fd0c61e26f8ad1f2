"""Checkpoints are data, never code: crafted, corrupt or foreign files are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from patientcnn.checkpoint import BUNDLE_KEY, bundle_from_networks, load_bundle
from patientcnn.errors import UserError
from patientcnn.models.registry import create_network


class Payload:
    """Unpickling this object creates a folder: the stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def bundle_dict() -> dict:
    """A valid checkpoint as the training task writes it, for a tiny model."""
    net = create_network("cnn", 2, 6, channels=[4])
    bundle = bundle_from_networks([net], "cnn", {"channels": [4]}, 2, 6, {"columns": {}})
    return {BUNDLE_KEY: bundle.to_dict()}


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


def test_target_in_stored_network_settings_is_never_instantiated(tmp_path: Path):
    marker = tmp_path / "target_ran"
    content = bundle_dict()
    content[BUNDLE_KEY]["network"]["config"]["_target_"] = "os.mkdir"
    content[BUNDLE_KEY]["network"]["config"]["path"] = str(marker)
    path = tmp_path / "target.ckpt"
    torch.save(content, path)
    with pytest.raises(UserError, match=r"target\.ckpt: .*not a registry name with plain settings"):
        load_bundle(path)
    assert not marker.exists()


def test_unknown_network_name_is_refused(tmp_path: Path):
    content = bundle_dict()
    content[BUNDLE_KEY]["network"]["name"] = "os.system"
    path = tmp_path / "name.ckpt"
    torch.save(content, path)
    with pytest.raises(UserError, match=r"name\.ckpt: .*do not make a model.*not a network"):
        load_bundle(path).build_model()


def test_bundle_of_an_older_version_is_one_line(tmp_path: Path):
    content = bundle_dict()
    content[BUNDLE_KEY]["version"] = 1
    path = tmp_path / "old.ckpt"
    torch.save(content, path)
    with pytest.raises(UserError, match=r"old\.ckpt: checkpoint bundle version 1 is not supported"):
        load_bundle(path)


def test_nested_target_in_a_hyperparameter_is_only_a_bad_value(tmp_path: Path):
    marker = tmp_path / "nested_ran"
    content = bundle_dict()
    content[BUNDLE_KEY]["network"]["config"]["activation"] = {
        "_target_": "os.mkdir",
        "path": str(marker),
    }
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
    content[BUNDLE_KEY]["network"]["config"]["channels"] = [8]
    path = tmp_path / "mismatch.ckpt"
    torch.save(content, path)
    with pytest.raises(UserError, match=r"mismatch\.ckpt: the stored weights"):
        load_bundle(path).build_model()
