"""Exporting a checkpoint's model for deployment outside Python training code.

The exported graph takes what the model takes, the preprocessed input: ``x`` (N, C, L)
float32 and ``valid`` (N, L) bool (True on a patient's real steps, False on padding),
and for a model trained with static covariates ``static`` (N, S) float32 (the encoded
covariates), with a dynamic batch dimension N, and returns the probability (N,).
Preprocessing is not in the graph; a JSON file beside the model holds everything needed
to reproduce it (channel order, grid, imputation and normalisation statistics, the
static encoder's medians, means, standard deviations and levels, with the order of the
encoded columns) and the threshold.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from patientcnn.checkpoint import Bundle, load_bundle
from patientcnn.data.static import StaticEncoder
from patientcnn.errors import UserError
from patientcnn.files import atomic_write, write_json

log = logging.getLogger(__name__)

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT_NAMES = ["x", "valid", "static"]  # static: only for a model with static covariates
OUTPUT_NAMES = ["probability"]


class ProbabilityModel(nn.Module):
    """The trained ensemble (calibration included) with the sigmoid applied: deployers want
    probabilities."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x, valid))


class StaticProbabilityModel(ProbabilityModel):
    """The same for a model trained with static covariates: a third input ``static``
    (N, S), the encoded covariates (the sidecar's ``data.static`` says how to encode)."""

    def forward(self, x: torch.Tensor, valid: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x, valid, static))


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
    wrapper = StaticProbabilityModel if static_width(bundle) else ProbabilityModel
    model = wrapper(bundle.build_model()).eval()
    example = example_inputs(bundle, batch=3)
    writer = _write_onnx if fmt == "onnx" else _write_torchscript
    atomic_write(path, lambda tmp: writer(model, example, tmp), overwrite=overwrite)
    write_json(sidecar, describe(bundle, fmt), overwrite=overwrite)
    log.info("wrote %s and %s", path, sidecar)
    return path


def static_width(bundle: Bundle) -> int:
    """The number of encoded static covariates the model reads (0: none)."""
    return int(bundle.network["config"].get("static_features", 0))


def example_inputs(bundle: Bundle, batch: int) -> tuple[torch.Tensor, ...]:
    """Inputs of the model's shape: random values, every step real but the last of one
    patient; and random static covariates when the model reads them."""
    channels, length = bundle.in_channels, bundle.seq_len
    generator = torch.Generator().manual_seed(0)
    valid = torch.ones(batch, length, dtype=torch.bool)
    valid[0, length // 2 :] = False
    example = (torch.randn(batch, channels, length, generator=generator), valid)
    if static_width(bundle):
        example += (torch.randn(batch, static_width(bundle), generator=generator),)
    return example


def describe(bundle: Bundle, fmt: str) -> dict:
    """What a deployer needs beside the graph to prepare inputs and read outputs."""
    inputs = {"x": ["N", bundle.in_channels, bundle.seq_len], "valid": ["N", bundle.seq_len]}
    static = bundle.data.get("static")
    if static_width(bundle):
        inputs["static"] = ["N", static_width(bundle)]
    return {
        "format": fmt,
        "inputs": inputs,
        "outputs": {"probability": ["N"]},
        "input_channels": list(bundle.data["input_channels"]),
        "static_columns": static_columns(static) if static else [],
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
            input_names=INPUT_NAMES[: len(example)],
            output_names=OUTPUT_NAMES,
            dynamic_shapes=tuple({0: batch} for _ in example),
            dynamo=True,
            verbose=False,
        )
    program.save(str(path))


def _write_torchscript(model: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
    traced.save(str(path))


def static_columns(state: dict) -> list[str]:
    """The encoded static columns in input order (``age``, ``sex=F``, ...)."""
    return StaticEncoder.from_state(state).output_features
