"""The training task: config in, checkpoint bundle + metrics.json (+ report) out.

1. load the cohort; the test patients (the user's test table, a split column, or a
   held-out share) never enter anything that is fitted;
2. plan the recipe from the number of development patients (``patientcnn.recipe``);
3. train the members: one per fold of a K-fold cross-validation (or one train /
   validation split) and per seed of ``model.ensemble``; the fold networks keep their
   weights at the one step of lowest validation loss averaged over the folds
   (``patientcnn.checkpoint_choice``), one split those of its lowest validation loss;
   optionally refit on every development patient;
4. fit the partner networks in closed form on each member's fold and blend them with
   the trained networks (``patientcnn.partner``), then the calibration and the
   threshold, all on the out-of-fold (validation) logits; the kept partners are fitted
   on every development patient;
5. score the test patients with the ensemble, write the bundle, metrics.json, report.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import execution_whitelist
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar

from patientcnn.calibration import calibrated, fit_calibration
from patientcnn.calibration import describe as describe_calibration
from patientcnn.checkpoint import Bundle, save_bundle
from patientcnn.checkpoint_choice import (
    EvaluationWeights,
    common_step,
    read_curve,
    remove_evaluations,
    weights_at,
)
from patientcnn.config import TRUSTED_TARGETS, configured
from patientcnn.data.split import fold_splits, holdout_split
from patientcnn.distributed import rank_zero_value, secondary_rank
from patientcnn.errors import UserError
from patientcnn.files import atomic_write, csv_safe, write_json
from patientcnn.inference import batched_logits, probabilities, resolve_device
from patientcnn.metrics import calibration_metrics, point_metrics
from patientcnn.models.layers import describe_head, format_shape_table
from patientcnn.models.registry import create_network
from patientcnn.partner import fit_partners, partner_settings
from patientcnn.recipe import Recipe, plan_recipe, variance_lost_by_averaging
from patientcnn.report.training import (
    VALIDATION_PREDICTIONS,
    report_out_of_fold,
    report_training_run,
    test_subgroups,
)
from patientcnn.threshold import choose_threshold

log = logging.getLogger(__name__)

FINISHED = "finished.json"  # written beside a member's checkpoints once it is trained


def train(cfg: DictConfig) -> float:
    """Fit, evaluate, write the bundle; return ``cfg.objective`` for sweepers."""
    quiet_lightning()
    with execution_whitelist(TRUSTED_TARGETS):
        metrics = fit(cfg)
    if metrics is None:  # a secondary rank of a distributed run: rank 0 has the metrics
        return float("nan")
    objective = metrics.get(cfg.objective)
    if objective is None:
        raise UserError(
            f"objective={cfg.objective!r} is not a metric; choose one of {sorted(metrics)}"
        )
    return objective if math.isfinite(objective) else float("nan")


@dataclass
class Member:
    """One network of the ensemble: which development patients train and validate it."""

    name: str
    train: np.ndarray
    val: np.ndarray | None
    seed: int


def fit(cfg: DictConfig) -> dict[str, float] | None:
    """One training run in ``cfg.paths.output_dir``; returns the metrics of metrics.json.

    Under distributed training every rank runs this task (each member's fit is a
    collective step) but only rank 0 writes: the other ranks stop once the members are
    trained and return None; rank 0 fits the partners, calibrates, scores the test
    patients (all of them, in one process) and writes the bundle and metrics.json.
    """
    output_dir = Path(cfg.paths.output_dir)
    resume = resume_requested(cfg, output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")  # TF32 on GPUs that have it; no effect on CPU

    datamodule = configured(cfg.data, "data", _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    summary = datamodule.summary()
    subgroups = test_subgroups(cfg.get("report"), datamodule)
    model_cfg = dict(OmegaConf.to_container(cfg.model, resolve=True))
    n_seeds = model_cfg.pop("ensemble", 1)
    if not (isinstance(n_seeds, int) and n_seeds >= 1):
        raise UserError(f"model.ensemble must be a positive integer, got {n_seeds!r}")
    recipe = plan_recipe(
        OmegaConf.to_container(cfg.get("recipe") or {}, resolve=True),
        datamodule.y_dev,
        datamodule.seq_len,
        folds=cfg.data.get("cv_folds"),
        fixed_split=datamodule.given_val is not None,
        seeds=n_seeds,
        variance_lost=lambda factor: variance_lost_by_averaging(
            *datamodule.dev["tensors"][:2], factor
        ),
    )
    datamodule.batch_size = recipe.batch_size
    if recipe.downsample > 1:  # a network setting the recipe chose; the bundle stores it
        model_cfg["downsample"] = recipe.downsample
    if datamodule.num_static:  # the head reads the encoded static covariates too
        model_cfg["static_features"] = datamodule.num_static
    log.info(
        "cohort: %d development patients (prevalence %.3f), %d test patients (%s), "
        "%d timesteps, features: %s",
        summary["development_patients"],
        summary["development_prevalence"],
        summary["test_patients"],
        summary["test_source"],
        summary["timesteps"],
        ", ".join(summary["features"]),
    )
    if datamodule.num_static:
        log.info(
            "static covariates from %s (encoded on the development patients): %s",
            datamodule.static,
            ", ".join(datamodule.static_features),
        )
    log.info("%s", recipe.describe())
    members = plan_members(datamodule, recipe, n_seeds, int(cfg.seed))
    first = build_model(model_cfg, datamodule.num_channels, datamodule.seq_len, 1.0)
    table = first.net.shape_table()
    head = describe_head(first.net, datamodule.static_features)
    log.info(
        "network %s, input (N, C, L) = (batch, %d channels, %d steps); blocks:\n%s%s",
        model_cfg.get("net", "cnn"),
        datamodule.num_channels,
        datamodule.seq_len,
        format_shape_table(table),
        f"\n{head}" if head else "",
    )
    receptive = table[-1]["receptive_field"]
    if receptive > datamodule.seq_len:
        log.info(
            "the receptive field (%d steps) is longer than the series (%d steps): every output "
            "sees the whole series, and the kernels' outer taps read the zero padding",
            receptive,
            datamodule.seq_len,
        )
    partner = partner_settings(OmegaConf.to_container(cfg.get("partner") or {}, resolve=True))
    static = {"static_features": datamodule.num_static} if datamodule.num_static else {}
    for name, config in partner.nets.items() if partner else ():
        # settings a partner cannot take fail here, before any training
        table = create_network(
            name, datamodule.num_channels, datamodule.seq_len, **config, **static
        ).shape_table()
        log.info(
            "partner %s, fitted in closed form beside the networks (on at most %d "
            "patients); blocks:\n%s",
            name,
            partner.max_patients,
            format_shape_table(table),
        )
    log.info("%d ensemble member(s): %s", len(members), ", ".join(m.name for m in members))
    if cfg.trainer.get("sync_batchnorm"):
        log.warning(
            "trainer.sync_batchnorm=true is switched off: torch's SyncBatchNorm would replace "
            "the masked BatchNorm, which keeps padded steps out of the statistics, and cannot "
            "take its mask; each process normalises with the statistics of its own share of "
            "the batch"
        )
    # a Trainer that the config cannot make fails here, before anything is written
    build_trainer(cfg, recipe, output_dir / "checkpoints", members[0].name, validate=True)
    # written once the inputs have passed every check: a failed run leaves no outputs
    primary = not secondary_rank()
    config_text = OmegaConf.to_yaml(cfg, resolve=True)
    if primary:
        atomic_write(output_dir / "config.yaml", lambda tmp: tmp.write_text(config_text))

    states, records, val_logits, validated = train_members(
        cfg, model_cfg, datamodule, recipe, members, output_dir, resume
    )
    if not primary:
        log.info("members trained; rank 0 fits the partners and writes the outputs")
        return None
    partners = None
    if partner:
        partners = fit_partners(partner, datamodule, members, val_logits, validated, cfg.seed)
        val_logits = partners.val_logits
    y_val = datamodule.y_dev[validated]
    calibration, threshold, val_prob = calibrate(cfg, val_logits, y_val)
    bundle = Bundle(
        network={
            "name": model_cfg.get("net", "cnn"),
            "config": first.network_spec()["config"],
            "in_channels": datamodule.num_channels,
            "seq_len": datamodule.seq_len,
        },
        members=states,
        data=datamodule.bundle_state(),
        threshold=threshold["value"],
        calibration=calibration,
        threshold_rule=threshold["rule"],
        extra={"recipe": recipe.state(), "members": records},
        partners=partners.bundle_state() if partners else None,
    )
    checkpoint = save_bundle(output_dir / "checkpoints" / "best.ckpt", bundle)
    write_validation_predictions(
        output_dir / VALIDATION_PREDICTIONS, datamodule, members, validated, val_prob, threshold
    )
    remove_evaluations([output_dir / "checkpoints" / m.name for m in members])
    metrics = {f"val/{k}": v for k, v in point_metrics(y_val, val_prob, threshold["value"]).items()}
    before = calibration_metrics(y_val, probabilities(val_logits))
    metrics |= {f"val/{k}_uncalibrated": v for k, v in before.items()}
    log.info(
        "validation calibration before -> after: ECE %.3f -> %.3f, slope %.2f -> %.2f, "
        "intercept %.2f -> %.2f",
        *(v for k in before for v in (before[k], metrics[f"val/{k}"])),
    )
    report = {}
    if len(datamodule.tensors["test"][2]):
        ensemble = bundle.build_model()
        metrics |= score_test_patients(cfg, ensemble, datamodule, threshold["value"])
        datamodule.select(np.arange(len(datamodule.y_dev)), None)
        report = report_training_run(
            cfg.get("report"), ensemble, datamodule, output_dir, threshold["value"], subgroups
        )
    else:  # every patient trained: the report shows the out-of-fold predictions
        report = report_out_of_fold(
            cfg.get("report"), y_val, val_prob, output_dir, threshold["value"]
        )
    record = {
        "metrics": metrics,
        "threshold": threshold,
        "calibration": calibration,
        "checkpoint": str(checkpoint),
        "recipe": recipe.state(),
        "members": records,
        "partners": partners.blend if partners else None,
        "cohort": summary,
    } | report
    write_json(output_dir / "metrics.json", record)
    log.info("checkpoint: %s", checkpoint)
    log.info("metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    return metrics


def train_members(cfg, model_cfg, datamodule, recipe, members, output_dir, resume):
    """Train every member; return their weights and records, the out-of-fold logits (each
    validated patient's mean over the members that did not train on them) and the mask of
    the development patients they belong to."""
    y_dev = datamodule.y_dev
    logit_sum, count = np.zeros(len(y_dev)), np.zeros(len(y_dev))
    states, records, logits = [], [], []
    for member in members:
        state, record, val_logits = train_member(
            cfg, model_cfg, datamodule, recipe, member, output_dir, resume
        )
        states.append(state)
        records.append(record)
        logits.append(val_logits)
    if recipe.checkpoint == "common" and not secondary_rank():
        chosen = weights_at_common_step(
            model_cfg, datamodule, members, records, output_dir / "checkpoints"
        )
        states, logits = chosen or (states, logits)
    if recipe.refit:  # after the step is chosen: rank 0 chose it, every rank trains
        steps = rank_zero_value([r["best_step"] for r in records])
        states = [
            refit_member(cfg, model_cfg, datamodule, recipe, m, r, step, output_dir)
            for m, r, step in zip(members, records, steps, strict=True)
        ]
    for member, val_logits in zip(members, logits, strict=True):
        logit_sum[member.val] += val_logits
        count[member.val] += 1
    validated = count > 0
    return states, records, logit_sum[validated] / count[validated], validated


def weights_at_common_step(model_cfg, datamodule, members, records, folder: Path):
    """Every member's weights and validation logits at the one evaluation step whose
    validation loss, averaged over the members, is lowest (``patientcnn.checkpoint_choice``);
    the records say which step each member kept and its own lowest. None when a member's
    evaluations are not on disk (each keeps its own lowest)."""
    curves = [read_curve(folder / m.name) for m in members]
    if not all(curves):  # a finished run resumed: its evaluations went with its bundle
        log.warning(
            "checkpoint: the saved evaluations of %s are gone, so those networks keep the "
            "weights of their own lowest validation loss (recipe.checkpoint=own)",
            ", ".join(m.name for m, c in zip(members, curves, strict=True) if not c),
        )
        return None
    step, mean_loss = common_step(curves)
    states, logits = [], []
    for member, record, curve in zip(members, records, curves, strict=True):
        state, used, loss = weights_at(folder / member.name, curve, step)
        datamodule.select(member.train, member.val)
        model = build_model(model_cfg, datamodule.num_channels, datamodule.seq_len, 1.0)
        model.net.load_state_dict(state)
        x, valid, _, static = datamodule.tensors["val"]
        val_logits = batched_logits(model, x, valid, "auto", torch.device("cpu"), static).numpy()
        record |= {
            "own_best_step": record["best_step"],
            "own_best_val_loss": record["best_val_loss"],
            "best_step": used,
            "best_val_loss": loss,
        }
        states.append(state)
        logits.append(val_logits.astype(np.float64))
    log.info(
        "checkpoint (recipe.checkpoint=common): every fold network keeps step %d, whose "
        "validation loss averaged over the %d networks is lowest (%.4f; each network's own "
        "lowest would average %.4f)",
        step,
        len(members),
        mean_loss,
        np.mean([r["own_best_val_loss"] for r in records]),
    )
    return states, logits


def write_validation_predictions(
    path: Path, datamodule, members, validated: np.ndarray, val_prob: np.ndarray, threshold
) -> None:
    """One row per validated development patient: the id as in the input, the outcome
    (0/1), the calibrated out-of-fold probability (from the networks and partners that
    did not train on the patient) and its label at the run's threshold, and the members
    that validated it. The rows behind every ``val/*`` figure, for a user's own analysis
    (subgroups, other thresholds, plots), as ``predict.py`` writes the test patients'."""
    import pandas as pd

    folds = [[] for _ in range(len(datamodule.y_dev))]
    for member in members:
        for i in member.val:
            folds[i].append(member.name)
    frame = pd.DataFrame(
        {
            datamodule.spec.id_col: pd.Series(datamodule.dev["ids"][validated], dtype=object),
            "label": datamodule.y_dev[validated].astype(np.int8),
            "probability": val_prob,
            "predicted_label": (val_prob >= threshold["value"]).astype(np.int8),
            "fold": ["+".join(folds[i]) for i in np.flatnonzero(validated)],
        }
    )
    atomic_write(path, lambda tmp: csv_safe(frame).to_csv(tmp, index=False))


def calibrate(cfg, val_logits: np.ndarray, y_val: np.ndarray) -> tuple[dict, dict, np.ndarray]:
    """The calibration and the threshold, both fitted on the validation (out-of-fold)
    logits; also the calibrated validation probabilities."""
    calibration = fit_calibration(val_logits, y_val, cfg.get("calibration", "platt"))
    log.info(
        "calibration (%s, on %d validation patients): %s",
        calibration["method"],
        len(y_val),
        describe_calibration(calibration),
    )
    if calibration["scale"] == 0.0:
        log.warning(
            "the networks rank the validation patients no better than chance, so every "
            "patient gets the validation prevalence; check the labels and features, or try "
            "another network (model=resnet) or more steps (recipe.steps=...)"
        )
    val_prob = probabilities(calibrated(val_logits, calibration))
    return calibration, select_threshold(cfg, y_val, val_prob), val_prob


def score_test_patients(cfg, ensemble, datamodule, threshold: float) -> dict[str, float]:
    """``test/*`` figures of the ensemble on the test patients (nothing was fitted on them)."""
    on_cpu = str(cfg.trainer.get("accelerator", "auto")) == "cpu"
    device = torch.device("cpu") if on_cpu else resolve_device("auto")
    x, valid, y, static = datamodule.tensors["test"]
    logits = batched_logits(ensemble.to(device), x, valid, "auto", device, static).numpy()
    metrics = {
        f"test/{k}": v
        for k, v in point_metrics(y.numpy(), probabilities(logits), threshold).items()
    }
    ensemble.cpu()
    ceiling = datamodule.ceiling_auroc()
    if ceiling is not None:
        metrics["test/true_risk_auroc"] = ceiling
    return metrics


def plan_members(datamodule, recipe: Recipe, n_seeds: int, seed: int) -> list[Member]:
    """Folds x seeds: which development patients train and validate each network."""
    y = datamodule.y_dev
    if recipe.folds >= 2:
        splits = fold_splits(y, recipe.folds, seed)
    elif datamodule.given_val is not None:
        val = datamodule.given_val
        splits = [(np.setdiff1d(np.arange(len(y)), val), val)]
    else:
        splits = [holdout_split(y, recipe.val_fraction, seed)]
    members = []
    for s in range(n_seeds):
        for k, (train_idx, val_idx) in enumerate(splits):
            name = f"fold{k}" if len(splits) > 1 else "split"
            name += f"_seed{s}" if n_seeds > 1 else ""
            members.append(Member(name, train_idx, val_idx, seed + 1000 * s + k))
    return members


def train_member(cfg, model_cfg, datamodule, recipe, member, output_dir, resume):
    """Train one network; return its best weights, a record, and its validation logits."""
    folder = output_dir / "checkpoints" / member.name
    finished = folder / FINISHED
    datamodule.select(member.train, member.val)
    if resume and finished.is_file():  # trained before the interruption: reuse it
        record = json.loads(finished.read_text())
        raw = torch.load(folder / "best.ckpt", map_location="cpu", weights_only=True)
        state = _net_state(raw["state_dict"])
        val_logits = np.asarray(record.pop("val_logits"), dtype=np.float64)
        log.info("member %s: trained before the interruption, reused", member.name)
        return state, record, val_logits
    last = folder / "last.ckpt"
    resume_from = str(last) if resume and last.is_file() else None
    pl.seed_everything(member.seed, workers=True, verbose=False)
    datamodule.shuffle_seed = member.seed
    model = build_model(
        model_cfg,
        datamodule.num_channels,
        datamodule.seq_len,
        _pos_weight(datamodule.y_dev[member.train]),
    )
    trainer = build_trainer(
        cfg, recipe, folder, member.name, validate=True, evaluations=recipe.checkpoint == "common"
    )
    if resume_from:
        log.info("member %s: resuming from %s", member.name, resume_from)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    best = trainer.checkpoint_callback.best_model_path
    raw = None
    if trainer.is_global_zero:  # rank 0 reads the best weights and writes the record
        if not best:
            raise UserError(f"member {member.name}: training saved no checkpoint")
        raw = torch.load(best, map_location="cpu", weights_only=True)
    # every rank needs the best step (a refit trains for it), and only rank 0 may be able
    # to read the checkpoint (one node's disk)
    best_step = trainer.strategy.broadcast(int(raw.get("global_step", 0)) if raw else 0, src=0)
    if not trainer.is_global_zero:
        return None, {"best_step": best_step}, np.zeros(len(member.val))
    model.load_state_dict(raw["state_dict"])
    x, valid, _, static = datamodule.tensors["val"]
    val_logits = (
        batched_logits(model, x, valid, "auto", torch.device("cpu"), static)
        .numpy()
        .astype(np.float64)
    )
    record = {
        "member": member.name,
        "train_patients": int(len(member.train)),
        "val_patients": int(len(member.val)),
        "best_step": best_step,
        "steps_run": int(trainer.global_step),
        "best_val_loss": float(trainer.checkpoint_callback.best_model_score),
    }
    log.info(
        "member %s: best validation loss %.4f at step %d of %d",
        member.name,
        record["best_val_loss"],
        record["best_step"],
        record["steps_run"],
    )
    atomic_write(
        finished,
        lambda tmp: tmp.write_text(json.dumps(record | {"val_logits": val_logits.tolist()})),
    )
    return _net_state(raw["state_dict"]), record, val_logits


def refit_member(cfg, model_cfg, datamodule, recipe, member, record, best_step, output_dir):
    """Retrain on every development patient for the member's chosen step count, scaled to
    the larger cohort (the same number of epochs); return the weights at the last step."""
    n_all = len(datamodule.y_dev)
    steps = max(1, round(max(best_step, 1) * n_all / len(member.train)))
    datamodule.select(np.arange(n_all), None)
    pl.seed_everything(member.seed, workers=True, verbose=False)
    datamodule.shuffle_seed = member.seed
    model = build_model(
        model_cfg, datamodule.num_channels, datamodule.seq_len, _pos_weight(datamodule.y_dev)
    )
    trainer = build_trainer(
        cfg,
        recipe,
        output_dir / "checkpoints" / f"{member.name}_refit",
        member.name + "_refit",
        validate=False,
        max_steps=steps,
    )
    log.info(
        "member %s: refit on all %d development patients for %d steps", member.name, n_all, steps
    )
    trainer.fit(model, datamodule=datamodule)
    record["refit_steps"] = steps
    return {k: v.detach().cpu() for k, v in model.net.state_dict().items()}


def build_trainer(
    cfg, recipe, folder: Path, name: str, validate: bool, max_steps=None, evaluations=False
):
    """A Lightning Trainer with the recipe's step budget, validation and early stopping;
    ``evaluations``: also save the weights at every validation (``EvaluationWeights``)."""
    callbacks: list = []
    if validate and evaluations:  # the score that model_checkpoint watches
        watched = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
        monitor, mode = watched.get("monitor", "val/loss"), watched.get("mode", "min")
        callbacks.append(EvaluationWeights(folder, monitor, mode))
    for key, node in (cfg.get("callbacks") or {}).items():
        if not node:
            continue
        overrides: dict = {}
        if key == "model_checkpoint":
            if not validate:
                continue
            overrides = {"dirpath": str(folder)}
        elif key == "early_stopping":
            if not validate:
                continue
            if node.get("patience") is None:
                overrides = {"patience": recipe.patience}
        callbacks.append(configured(node, f"callbacks.{key}", **overrides))
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it may not show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = [
        configured(c, f"logger.{k}", **_logger_version(c, name))
        for k, c in (cfg.get("logger") or {}).items()
        if c
    ]
    steps = max_steps or recipe.max_steps
    settings = {
        "max_steps": steps,
        "max_epochs": -1,
        "min_steps": min(recipe.min_steps, steps) if validate else None,
        "val_check_interval": min(recipe.val_every, steps) if validate else None,
        "check_val_every_n_epoch": None,
        "limit_val_batches": None if validate else 0,
        "num_sanity_val_steps": 0,
        "enable_checkpointing": validate,
    }
    settings = {
        k: v for k, v in settings.items() if v is not None or k == "check_val_every_n_epoch"
    }
    if cfg.trainer.get("sync_batchnorm"):  # see fit(): it would drop the padding mask
        settings["sync_batchnorm"] = False
    return configured(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, **settings
    )


def build_model(model_cfg, in_channels: int, seq_len: int, pos_weight: float = 1.0):
    """The LightningModule of the model config (a dict or config node, ``ensemble`` is the
    task's); pos_weight 'auto' becomes the given ratio."""
    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    cfg = {k: v for k, v in model_cfg.items() if k != "ensemble"}
    if cfg.get("pos_weight", 1.0) == "auto":
        cfg["pos_weight"] = pos_weight
    return configured(
        OmegaConf.create(cfg), "model", in_channels=in_channels, seq_len=seq_len, _convert_="all"
    )


def select_threshold(cfg: DictConfig, y_val: np.ndarray, probabilities: np.ndarray) -> dict:
    """The decision threshold by ``cfg.threshold.rule``, on calibrated validation probabilities."""
    settings = {"rule": "fixed", "value": 0.5, "sensitivity": 0.9, **(cfg.get("threshold") or {})}
    value = choose_threshold(y_val, probabilities, **settings)
    predicted = probabilities >= value
    chosen = {
        "rule": settings["rule"],
        "value": value,
        "val_sensitivity": float(predicted[y_val == 1].mean()),
        "val_specificity": float((~predicted[y_val == 0]).mean()),
    }
    log.info(
        "threshold %.4f (rule %s): validation sensitivity %.3f, specificity %.3f",
        value,
        settings["rule"],
        chosen["val_sensitivity"],
        chosen["val_specificity"],
    )
    return chosen


def resume_requested(cfg: DictConfig, output_dir: Path) -> bool:
    """``resume=true`` (or ``ckpt_path=last``): continue this run folder's members, reusing
    the finished ones and resuming the interrupted one from its last.ckpt."""
    path = cfg.get("ckpt_path")
    if path not in (None, "last"):
        raise UserError(
            f"ckpt_path={path}: to continue an interrupted run pass resume=true with the "
            "run's folder as hydra.run.dir=<run folder>"
        )
    if not (cfg.get("resume", False) or path == "last"):
        return False
    if not any((output_dir / "checkpoints").glob("*/last.ckpt")):
        raise UserError(
            f"resume=true: no checkpoint under {output_dir / 'checkpoints'}; pass the "
            "interrupted run's folder as hydra.run.dir=<run folder>"
        )
    return True


def quiet_lightning() -> None:
    """Keep the console to what a user acts on: Lightning's device banner (printed once per
    ensemble member), its advertising tip, two warnings that do not apply to tensors
    served in whole batches and, under DDP, the advice to sync the validation metrics
    (torchmetrics has gathered every process's patients before they are logged) are left
    out."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    for message in (
        ".*LeafSpec.*",
        ".*does not have many workers.*",
        ".*is smaller than the logging interval.*",
        ".*litlogger.*",
        ".*when logging on epoch level in distributed setting.*",
    ):
        warnings.filterwarnings("ignore", message=message)


def _pos_weight(y: np.ndarray) -> float:
    """Negatives per positive of a member's training patients (for ``pos_weight=auto``)."""
    return float((y == 0).sum() / max((y == 1).sum(), 1))


def _logger_version(node: DictConfig, name: str) -> dict:
    return {"version": name} if "version" in node else {}


def _net_state(state_dict: dict) -> dict:
    """The network's weights out of a LightningModule state dict ('net.' prefix dropped)."""
    return {k[len("net.") :]: v for k, v in state_dict.items() if k.startswith("net.")}
