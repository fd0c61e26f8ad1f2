"""Exported models (ONNX, TorchScript) give PyTorch's probabilities for any batch size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli

from patientcnn.checkpoint import bundle_from_networks, load_bundle, save_bundle
from patientcnn.data.preprocess import Preprocessor
from patientcnn.data.reshape import GridSpec
from patientcnn.errors import UserError
from patientcnn.export import export_checkpoint
from patientcnn.models.registry import create_network, network_names

FEATURES = ["hr", "map", "spo2"]


SMALL = {  # a small network of each family
    "cnn": {"channels": [8, 8], "kernel_size": 3, "dilation": [1, 2]},
    "resnet": {"channels": [8, 8]},
    "inceptiontime": {"depth": 3, "width": 4, "bottleneck": 4, "kernel_size": 8},
    "tcn": {"depth": 2, "width": 8},
}


def make_checkpoint(folder, family: str, calibration: dict | None = None, **extra):
    """A 2-member ensemble with non-trivial batch-norm statistics and a calibration, saved
    as a bundle without training; ``extra``: settings beyond the family's SMALL ones."""
    config = {**SMALL[family], **extra}
    torch.manual_seed(0)
    preprocessor = Preprocessor(missing_indicators=True).fit(
        np.random.default_rng(0).normal(size=(20, 16, 3)), FEATURES
    )
    channels = preprocessor.output_features
    nets = []
    for _ in range(2):
        net = create_network(family, len(channels), 16, **config).train()
        with torch.no_grad():
            for _ in range(5):
                valid = torch.ones(32, 16, dtype=torch.bool)
                valid[:4, 10:] = False
                net(torch.randn(32, len(channels), 16) * 3 + 1, valid)
        nets.append(net.eval())
    data = {
        "columns": {"id_col": "patient_id", "time_col": "time", "label_col": "label"},
        "grid": GridSpec().state(),
        "preprocessor": preprocessor.state(),
        "input_channels": channels,
    }
    bundle = bundle_from_networks(
        nets,
        family,
        config,
        len(channels),
        16,
        data,
        threshold=0.3,
        calibration=calibration or {"method": "platt", "scale": 0.7, "shift": -0.2},
    )
    return save_bundle(folder / f"{family}{len(extra)}.ckpt", bundle)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("model"), "cnn")


def inputs(batch: int, channels: int = 6, length: int = 16, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, length, generator=generator)
    valid = torch.ones(batch, length, dtype=torch.bool)
    valid[0, 11:] = False  # a short stay, padded at the end
    return x, valid


def reference(checkpoint, x, valid) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(load_bundle(checkpoint).build_model()(x, valid)).numpy()


def test_onnx_matches_pytorch_for_any_batch_size(checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = export_checkpoint(checkpoint, "onnx", tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["x", "valid"]
    for batch in (1, 7, 64):
        x, valid = inputs(batch)
        (got,) = session.run(None, {"x": x.numpy(), "valid": valid.numpy()})
        assert got.shape == (batch,)
        np.testing.assert_allclose(got, reference(checkpoint, x, valid), atol=1e-5, rtol=0)
    side = json.loads((tmp_path / "model.onnx.json").read_text())
    assert side["input_channels"] == ["hr", "map", "spo2", *(f"{f}__observed" for f in FEATURES)]
    assert side["threshold"] == 0.3 and side["inputs"]["x"] == ["N", 6, 16]


def test_torchscript_cli_matches_pytorch_and_keeps_existing_files(checkpoint, tmp_path):
    out = tmp_path / "model.pt"
    args = ("scripts/export.py", f"checkpoint={checkpoint}", "format=torchscript", f"output={out}")
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = torch.jit.load(str(out))
    for batch in (1, 9):
        x, valid = inputs(batch, seed=batch)
        with torch.no_grad():
            np.testing.assert_allclose(
                loaded(x, valid).numpy(), reference(checkpoint, x, valid), atol=1e-5, rtol=0
            )
    before = out.read_bytes()
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2 and "overwrite=true" in proc.stderr
    assert "Traceback" not in proc.stderr and out.read_bytes() == before


def test_unknown_format_is_a_user_error(checkpoint, tmp_path):
    with pytest.raises(UserError, match="format must be one of onnx, torchscript"):
        export_checkpoint(checkpoint, "tflite", tmp_path / "m.tflite")


def assert_both_exports_give(expected, ckpt, x, valid, folder) -> None:
    """TorchScript and ONNX exports of ``ckpt`` give ``expected`` for (x, valid)."""
    scripted = torch.jit.load(str(export_checkpoint(ckpt, "torchscript", folder / "m.pt")))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x, valid).numpy(), expected, atol=1e-5, rtol=0)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(export_checkpoint(ckpt, "onnx", folder / "m.onnx")))
    (got,) = session.run(None, {"x": x.numpy(), "valid": valid.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "family, extra",
    [("resnet", {}), ("inceptiontime", {}), ("tcn", {}), ("inceptiontime", {"downsample": 3})],
)
def test_every_family_exports(family, extra, tmp_path):
    """Each registered network family (and a downsampled one) exports to TorchScript and
    ONNX with the same outputs."""
    assert family in network_names()
    ckpt = make_checkpoint(tmp_path, family, **extra)
    x, valid = inputs(5)
    valid[1, :4] = False  # a stay padded at the start (align=end)
    expected = reference(ckpt, x, valid)
    assert_both_exports_give(expected, ckpt, x, valid, tmp_path)


def test_isotonic_calibration_exports(tmp_path):
    """The isotonic knots travel into both exported graphs (clamps and sums only)."""
    knots = [[-1.0, 0.0, 0.5, 2.0], [0.05, 0.2, 0.6, 0.9]]
    ckpt = make_checkpoint(
        tmp_path, "cnn", {"method": "isotonic", "scale": 1.0, "shift": 0.0, "knots": knots}
    )
    x, valid = inputs(7)
    expected = reference(ckpt, x, valid)
    assert expected.min() >= 0.05 - 1e-6 and expected.max() <= 0.9 + 1e-6
    assert_both_exports_give(expected, ckpt, x, valid, tmp_path)
