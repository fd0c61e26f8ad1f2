"""The training task: config in, trained checkpoint + metrics.json out, objective returned."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import execution_whitelist, instantiate
from omegaconf import DictConfig, OmegaConf

from patientcnn.checkpoint import BundleCallback, store_threshold
from patientcnn.errors import UserError
from patientcnn.files import atomic_write, write_json
from patientcnn.inference import batched_logits
from patientcnn.models.conv import format_shape_table
from patientcnn.threshold import choose_threshold

log = logging.getLogger(__name__)

# Config `_target_`s may only name classes from these packages (Hydra refuses others).
TRUSTED_TARGETS = ["patientcnn.*", "pytorch_lightning.*", "lightning.*", "torch.*"]


def train(cfg: DictConfig) -> float:
    """Fit, then evaluate the best checkpoint on val and test; return ``cfg.objective``."""
    with execution_whitelist(TRUSTED_TARGETS):
        return _train(cfg)


def _train(cfg: DictConfig) -> float:
    output_dir = Path(cfg.paths.output_dir)
    config_text = OmegaConf.to_yaml(cfg, resolve=True)
    atomic_write(output_dir / "config.yaml", lambda tmp: tmp.write_text(config_text))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")  # TF32 on GPUs that have it; no effect on CPU

    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    summary = datamodule.summary()
    log.info(
        "cohort: %d train / %d val / %d test patients, %d timesteps, features: %s",
        summary["train_patients"],
        summary["val_patients"],
        summary["test_patients"],
        summary["timesteps"],
        ", ".join(summary["features"]),
    )

    model = build_model(
        cfg.model, datamodule.num_channels, datamodule.seq_len, datamodule.pos_weight
    )
    log.info(
        "input (N, C, L) = (batch, %d channels, %d steps); conv layers:\n%s",
        datamodule.num_channels,
        datamodule.seq_len,
        format_shape_table(model.net.shape_table()),
    )

    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    callbacks.append(BundleCallback(datamodule.bundle_state()))
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values() if c is not None]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    ckpt = best or None
    metrics: dict[str, float] = {}
    for results in (
        trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False),
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False),
    ):
        metrics |= {k: float(v) for k, v in results[0].items()}
    ceiling = datamodule.ceiling_auroc("test")
    if ceiling is not None:
        metrics["test/ceiling_auroc"] = ceiling
    threshold = select_threshold(cfg, model, datamodule, best)
    record = {
        "metrics": metrics,
        "threshold": threshold,
        "checkpoint": best,
        "epochs": trainer.current_epoch,
        "cohort": summary,
    }
    write_json(output_dir / "metrics.json", record)
    log.info("best checkpoint: %s", best or "(none saved)")
    log.info("metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))

    objective = metrics.get(cfg.objective)
    if objective is None:
        raise UserError(
            f"objective={cfg.objective!r} is not a metric; choose one of {sorted(metrics)}"
        )
    return objective if math.isfinite(objective) else float("nan")


def select_threshold(cfg: DictConfig, model, datamodule, best: str) -> dict:
    """Choose the decision threshold on the validation split with the best weights (which
    ``trainer.test`` has just loaded into ``model``) and store it in the best checkpoint."""
    settings = {"rule": "fixed", "value": 0.5, "sensitivity": 0.9, **cfg.get("threshold", {})}
    x, valid, y = datamodule.tensors["val"]
    device = next(model.parameters()).device
    logits = batched_logits(model, x, valid, datamodule.batch_size, device)
    y_val = y.numpy().astype(int)
    value = choose_threshold(y_val, torch.sigmoid(logits).numpy(), **settings)
    predicted = torch.sigmoid(logits).numpy() >= value
    chosen = {
        "rule": settings["rule"],
        "value": value,
        "val_sensitivity": float(predicted[y_val == 1].mean()),
        "val_specificity": float((~predicted[y_val == 0]).mean()),
    }
    if best:
        store_threshold(best, value, settings["rule"])
    log.info(
        "threshold %.4f (rule %s): validation sensitivity %.3f, specificity %.3f",
        value,
        settings["rule"],
        chosen["val_sensitivity"],
        chosen["val_specificity"],
    )
    return chosen


def build_model(model_cfg: DictConfig, in_channels: int, seq_len: int, pos_weight: float):
    """Instantiate the model config; pos_weight 'auto' becomes the training negatives/positives."""
    weight = model_cfg.get("pos_weight", "auto")
    overrides = {
        "in_channels": in_channels,
        "seq_len": seq_len,
        "pos_weight": pos_weight if weight == "auto" else weight,
    }
    return instantiate(model_cfg, **overrides, _convert_="all")
