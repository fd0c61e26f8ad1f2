"""The training task: config in, trained checkpoint + metrics.json out, objective returned."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import execution_whitelist
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar

from patientcnn.checkpoint import BundleCallback, store_threshold
from patientcnn.config import TRUSTED_TARGETS, configured
from patientcnn.cross_validation import cross_validate
from patientcnn.errors import UserError
from patientcnn.files import atomic_write, write_json
from patientcnn.inference import batched_logits
from patientcnn.models.conv import format_shape_table
from patientcnn.report.training import report_training_run
from patientcnn.threshold import choose_threshold

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float:
    """Fit, then evaluate the best checkpoint on val and test; return ``cfg.objective``."""
    with execution_whitelist(TRUSTED_TARGETS):
        return _train(cfg)


def _train(cfg: DictConfig) -> float:
    metrics = cross_validate(cfg, fit) if cfg.data.get("cv_folds") else fit(cfg)
    objective = metrics.get(cfg.objective)
    if objective is None:
        raise UserError(
            f"objective={cfg.objective!r} is not a metric; choose one of {sorted(metrics)}"
        )
    return objective if math.isfinite(objective) else float("nan")


def fit(cfg: DictConfig) -> dict[str, float]:
    """One fit in ``cfg.paths.output_dir``: checkpoint, metrics.json; returns the metrics."""
    output_dir = Path(cfg.paths.output_dir)
    resume_from = resume_checkpoint(cfg, output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")  # TF32 on GPUs that have it; no effect on CPU

    datamodule = configured(cfg.data, "data", _convert_="all")
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

    callbacks = [
        configured(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items() if c
    ]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it may not show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    callbacks.append(BundleCallback(datamodule.bundle_state()))
    loggers = [configured(c, f"logger.{k}") for k, c in (cfg.get("logger") or {}).items() if c]
    trainer: pl.Trainer = configured(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False
    )
    # written once the inputs have passed every check: a failed run leaves no outputs
    config_text = OmegaConf.to_yaml(cfg, resolve=True)
    atomic_write(output_dir / "config.yaml", lambda tmp: tmp.write_text(config_text))
    if resume_from:
        log.info("resuming from %s", resume_from)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)

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
    record |= report_training_run(cfg.get("report"), model, datamodule, output_dir, best)
    write_json(output_dir / "metrics.json", record)
    log.info("best checkpoint: %s", best or "(none saved)")
    log.info("metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    return metrics


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
    return configured(model_cfg, "model", **overrides, _convert_="all")


def resume_checkpoint(cfg: DictConfig, output_dir: Path) -> str | None:
    """The checkpoint to continue from: ``resume=true`` (or ``ckpt_path=last``) means this
    run folder's checkpoints/last.ckpt, so rerunning with the interrupted run's
    ``hydra.run.dir`` picks up where it stopped."""
    path = cfg.get("ckpt_path")
    if cfg.get("resume", False) or path == "last":
        if path not in (None, "last"):
            raise UserError("give either resume=true or ckpt_path=PATH, not both")
        path = output_dir / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise UserError(
                f"resume=true: {path} not found; pass the interrupted run's folder as "
                "hydra.run.dir=<run folder>"
            )
    elif path is not None and not Path(path).is_file():
        raise UserError(f"ckpt_path={path}: checkpoint not found")
    return None if path is None else str(path)
