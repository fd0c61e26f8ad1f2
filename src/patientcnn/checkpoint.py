"""The checkpoint bundle: the only link from training to inference.

Lightning's checkpoint already holds the weights and the model's hyperparameters; the
BundleCallback adds what inference needs to prepare new data (column names, time grid,
preprocessing statistics, input channel order) and the decision threshold. Everything
in it is tensors, numbers, strings, lists and dicts, so ``torch.load(weights_only=True)``
reads it and no code stored in a file is ever run.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch

from patientcnn.errors import UserError
from patientcnn.files import atomic_write
from patientcnn.models.classifier import CNNClassifier

BUNDLE_KEY = "patientcnn"
BUNDLE_VERSION = 1


class BundleCallback(pl.Callback):
    """Write the data-preparation state into every checkpoint Lightning saves."""

    def __init__(self, data_state: dict, threshold: float = 0.5) -> None:
        self.data_state = data_state
        self.threshold = float(threshold)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[BUNDLE_KEY] = {
            "version": BUNDLE_VERSION,
            "data": self.data_state,
            "threshold": self.threshold,
        }


@dataclass
class Bundle:
    hparams: dict
    state_dict: dict
    data: dict
    threshold: float
    path: Path

    def build_model(self) -> CNNClassifier:
        """The trained model in eval mode, rebuilt from plain hyperparameters (no _target_)."""
        try:
            model = CNNClassifier(**self.hparams)
            model.load_state_dict(self.state_dict)
        except (UserError, TypeError, ValueError, RuntimeError) as err:
            raise UserError(
                f"{self.path}: the stored weights and hyperparameters do not make a model "
                f"({str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__})"
            ) from err
        return model.eval()


def save_bundle(path: str | Path, model: CNNClassifier, data: dict, threshold: float = 0.5) -> Path:
    """A checkpoint that ``load_bundle`` reads, for a model built in code rather than by
    ``train.py`` (benchmarks, tests, models trained elsewhere)."""
    raw = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        BUNDLE_KEY: {"version": BUNDLE_VERSION, "data": data, "threshold": float(threshold)},
    }
    return atomic_write(path, lambda tmp: torch.save(raw, tmp))


def store_threshold(path: str | Path, threshold: float, rule: str) -> None:
    """Rewrite a saved checkpoint's bundle with the threshold chosen after training.

    The threshold is chosen only once the best weights are known, after Lightning has
    written the file; the rewrite goes through a temporary file, so the checkpoint is
    never half-written.
    """
    path = Path(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    raw[BUNDLE_KEY]["threshold"] = float(threshold)
    raw[BUNDLE_KEY]["threshold_rule"] = rule
    atomic_write(path, lambda tmp: torch.save(raw, tmp))


def load_bundle(path: str | Path) -> Bundle:
    """Read a checkpoint safely; any problem with the file is one UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{path}: not a readable patientcnn checkpoint (truncated, corrupt, or holding "
            f"objects that are not plain data: {reason})"
        ) from err
    if not isinstance(raw, dict) or BUNDLE_KEY not in raw or "state_dict" not in raw:
        raise UserError(f"{path}: not a patientcnn checkpoint (no '{BUNDLE_KEY}' section)")
    bundle = raw[BUNDLE_KEY]
    if not isinstance(bundle, dict) or not {"data", "threshold"} <= set(bundle):
        raise UserError(f"{path}: the '{BUNDLE_KEY}' section is incomplete")
    if bundle.get("version") != BUNDLE_VERSION:
        raise UserError(
            f"{path}: checkpoint bundle version {bundle.get('version')} is not supported"
        )
    hparams = raw.get("hyper_parameters")
    allowed = set(inspect.signature(CNNClassifier).parameters)
    unknown = sorted(map(str, set(hparams) - allowed)) if isinstance(hparams, dict) else None
    if unknown is None or unknown:  # e.g. a `_target_`: hyperparameters are never instantiated
        raise UserError(
            f"{path}: the stored hyperparameters are not those of a patientcnn model "
            f"(unexpected: {', '.join(unknown or ['not a mapping'])})"
        )
    return Bundle(
        hparams=dict(hparams),
        state_dict=raw["state_dict"],
        data=bundle["data"],
        threshold=float(bundle["threshold"]),
        path=path,
    )
