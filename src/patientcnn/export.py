"""Exporting a checkpoint's model for deployment outside Python training code.

The exported graph takes what the model takes, the preprocessed input: ``x`` (N, C, L)
float32 and ``valid`` (N, L) bool (True on a patient's real steps, False on padding),
with a dynamic batch dimension N, and returns the probability (N,). Preprocessing is
not in the graph; a JSON file beside the model holds everything needed to reproduce it
(channel order, grid, imputation and normalisation statistics) and the threshold.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from patientcnn.checkpoint import Bundle, load_bundle
from patientcnn.errors import UserError
from patientcnn.files import atomic_write, write_json

log = logging.getLogger(__name__)

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT_NAMES = ["x", "valid"]
OUTPUT_NAMES = ["probability"]


class ProbabilityModel(nn.Module):
    """The trained ensemble (calibration included) with the sigmoid applied: deployers want
    probabilities."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x, valid))


def export_checkpoint(
    checkpoint: str | Path, fmt: str, output: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Write the model (and its JSON description) for ``fmt``; return the model's path."""
    if fmt not in SUFFIXES:
        raise UserError(f"format must be one of {', '.join(SUFFIXES)}, got {fmt!r}")
    checkpoint = Path(checkpoint)
    path = Path(output) if output else checkpoint.with_suffix(SUFFIXES[fmt])
    sidecar = path.with_name(path.name + ".json")
    for target in (path, sidecar):
        if target.exists() and not overwrite:
            raise UserError(f"{target} already exists; pass overwrite=true to replace it")
    bundle = load_bundle(checkpoint)
    model = ProbabilityModel(bundle.build_model()).eval()
    example = example_inputs(bundle, batch=3)
    writer = _write_onnx if fmt == "onnx" else _write_torchscript
    atomic_write(path, lambda tmp: writer(model, example, tmp), overwrite=overwrite)
    write_json(sidecar, describe(bundle, fmt), overwrite=overwrite)
    log.info("wrote %s and %s", path, sidecar)
    return path


def example_inputs(bundle: Bundle, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of the model's shape: random values, every step real but the last of one patient."""
    channels, length = bundle.in_channels, bundle.seq_len
    valid = torch.ones(batch, length, dtype=torch.bool)
    valid[0, length // 2 :] = False
    return torch.randn(batch, channels, length, generator=torch.Generator().manual_seed(0)), valid


def describe(bundle: Bundle, fmt: str) -> dict:
    """What a deployer needs beside the graph to prepare inputs and read outputs."""
    return {
        "format": fmt,
        "inputs": {
            "x": ["N", bundle.in_channels, bundle.seq_len],
            "valid": ["N", bundle.seq_len],
        },
        "outputs": {"probability": ["N"]},
        "input_channels": list(bundle.data["input_channels"]),
        "threshold": bundle.threshold,
        "network": {"name": bundle.network["name"], "members": len(bundle.members)},
        "partners": (
            {
                "families": [
                    {"name": f["name"], "members": len(f["members"])}
                    for f in bundle.partners["families"]
                ],
                "blend": bundle.partners["blend"],
            }
            if bundle.partners
            else None
        ),
        "calibration": bundle.calibration,
        "data": bundle.data,
        "checkpoint": str(bundle.path),
    }


def _write_onnx(model: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; fail with a hint, not deep inside)
    except ImportError as err:
        raise UserError('ONNX export needs `pip install -e ".[export]"`') from err
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            example,
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_shapes=({0: batch}, {0: batch}),
            dynamo=True,
            verbose=False,
        )
    program.save(str(path))


def _write_torchscript(model: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
    traced.save(str(path))
