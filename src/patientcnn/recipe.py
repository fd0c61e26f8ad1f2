"""How much to train, sized to the cohort by written rules (``configs/recipe/``).

One command has to serve 20 patients and 100,000. Budgets in epochs do not: with 16
training patients an epoch is one optimizer step, and with 100,000 it is thousands.
So the recipe counts optimizer steps, and each quantity follows a rule of the number
of training patients N, the sequence length L and the class counts:

- validation: ``folds`` patient-level stratified folds whose models form one ensemble
  (every patient trains K-1 of the K models and validates one) while the development
  cohort is smaller than ``cv_below``; above it, one train/validation split;
- batch size: N/8 rounded to a power of two, within [``min_batch``, ``max_batch``]:
  small cohorts get several steps per epoch, large ones full batches;
- steps: ``epochs`` passes over the training patients, at least ``min_steps`` (a
  small cohort still trains long enough to learn) and at most ``max_steps``; and the
  networks of the run together process at most max(``max_work``, ``work_epochs`` x
  N_dev x L) patient-timesteps, which bounds the time a run takes on a CPU (long
  series and many folds get fewer steps each);
- resolution: when that work budget leaves each network fewer than ``min_epochs``
  epochs, each patient's series is averaged over windows of 2 (4, 8, ...) steps, the
  smallest power of two that gives them, as long as the averaging removes at most
  ``max_variance_lost`` of the series' variance (measured on the development patients:
  a smooth signal loses nothing, a spiky one would lose its spikes) and keeps at least
  ``min_length`` steps. A smooth long series seen coarser for more epochs learns more
  than one seen in full for a few (``patientcnn.models.layers.Downsampled``);
- validation every ``1 / evaluations`` of the budget (at least once an epoch's worth
  of steps); early stopping after ``patience`` of the budget passes without a lower
  validation loss, never before ``warmup_share`` of it, and not at all when the budget
  gives each network fewer than ``min_epochs`` epochs (networks that short of training
  are still learning: their validation loss bumps, it has not turned); the kept weights
  are those of the lowest validation loss (a signal that does not saturate, unlike
  AUROC on a few validation patients): with ``checkpoint: common`` the one step whose
  loss averaged over the folds is lowest, for every fold network
  (``patientcnn.checkpoint_choice``).

``recipe.describe()`` prints the resulting numbers and the rule behind each at the
start of a run. Every ``auto`` in the config can be replaced by a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from patientcnn.errors import UserError

DEFAULTS = {  # the same numbers as configs/recipe/default.yaml (a test keeps them equal)
    "folds": "auto",
    "cv_folds": 5,
    "cv_below": 10000,
    "val_fraction": 0.2,
    "refit": False,
    "batch_size": "auto",
    "min_batch": 8,
    "max_batch": 64,
    "steps": "auto",
    "epochs": 50,
    "min_steps": 300,
    "max_steps": 3000,
    "max_work": 5.0e6,
    "work_epochs": 20,
    "downsample": "auto",
    "min_epochs": 20,
    "min_length": 64,
    "max_variance_lost": 0.05,
    "evaluations": 40,
    "patience": 0.3,
    "warmup_share": 0.2,
    "checkpoint": "common",
}
CHECKPOINT_RULES = ("common", "own")  # patientcnn.checkpoint_choice


@dataclass
class Recipe:
    folds: int  # 1: one train/validation split; K >= 2: K-fold ensemble
    batch_size: int
    downsample: int  # the networks see windows of this many steps averaged
    max_steps: int
    val_every: int  # optimizer steps between validations
    patience: int  # validations without a lower validation loss before stopping
    min_steps: int  # no early stop before this step
    refit: bool
    val_fraction: float
    checkpoint: str  # common: every fold network keeps one step (checkpoint_choice); own
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return "training recipe:\n" + "\n".join(f"  {line}" for line in self.notes)

    def state(self) -> dict:
        return {
            "folds": self.folds,
            "batch_size": self.batch_size,
            "downsample": self.downsample,
            "max_steps": self.max_steps,
            "val_every": self.val_every,
            "patience": self.patience,
            "min_steps": self.min_steps,
            "refit": self.refit,
            "checkpoint": self.checkpoint,
        }


def plan_recipe(
    settings: dict | None,
    y_dev: np.ndarray,
    seq_len: int,
    folds: int | None = None,
    fixed_split: bool = False,
    seeds: int = 1,
    variance_lost=None,
) -> Recipe:
    """The recipe for ``y_dev`` development patients (train + validation) of ``seq_len`` steps.

    ``folds`` (the user's ``data.cv_folds``) overrides the fold rule; ``fixed_split``
    means the user's split column already says which patients validate.
    ``variance_lost(factor)``: the share of the development series' variance that means
    of ``factor`` steps remove (``variance_lost_by_averaging``); None: nothing is known,
    so the series stay at full length unless ``downsample`` is a number.
    """
    s = {**DEFAULTS, **(settings or {})}
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise UserError(f"unknown recipe setting(s) {unknown}; known: {sorted(DEFAULTS)}")
    n_dev = len(y_dev)
    smaller = int(np.bincount(y_dev, minlength=2).min())
    notes: list[str] = []

    k = _fold_count(s, folds, n_dev, smaller, fixed_split, notes)
    if k >= 2:
        n_train = n_dev - math.ceil(n_dev / k)
    elif fixed_split:
        n_train = n_dev  # an upper bound; the split column decides
    else:
        n_train = n_dev - max(2, round(n_dev * s["val_fraction"]))

    batch = _chosen(s, "batch_size", lambda: _auto_batch(n_train, s))
    notes.append(
        f"batch size {batch}"
        + (
            f": N_train/8 = {n_train / 8:.0f} as a power of two in [{s['min_batch']}, {s['max_batch']}]"
            if s["batch_size"] == "auto"
            else " (recipe.batch_size)"
        )
    )
    per_epoch = math.ceil(n_train / batch)
    members = max(k, 1) * seeds
    work = max(float(s["max_work"]), float(s["work_epochs"]) * n_dev * seq_len)

    def steps_for(factor: int) -> tuple[int, int]:
        by_work = max(1, int(work // (members * batch * math.ceil(seq_len / factor))))
        return _chosen(s, "steps", lambda: _auto_steps(s, per_epoch, by_work)), by_work

    lost: dict[int, float] = {}  # factor -> variance lost, as far as the rule looked
    factor = _chosen(
        s,
        "downsample",
        lambda: (
            _auto_downsample(s, seq_len, lambda f: steps_for(f)[0] / per_epoch, variance_lost, lost)
            if s["steps"] == "auto"
            else 1
        ),
    )
    steps, by_work = steps_for(factor)
    length = math.ceil(seq_len / factor)
    if s["steps"] == "auto":
        notes.append(
            f"{steps} optimizer steps per network (~{steps / per_epoch:.0f} epochs of "
            f"{per_epoch} steps): {s['epochs']} epochs = {s['epochs'] * per_epoch} steps, "
            f"within [{s['min_steps']}, {s['max_steps']}], and the {members} network(s) "
            f"together at most {work:.2g} patient-timesteps (max of max_work and "
            f"work_epochs x N x L) = {by_work} steps each at {length} steps per patient"
        )
    else:
        notes.append(f"{steps} optimizer steps (recipe.steps)")
    if factor > 1 or lost:
        full = steps_for(1)[0] / per_epoch
        if s["downsample"] != "auto":
            why = "recipe.downsample"
        else:
            why = (
                f"at full length the budget gives {full:.0f} epochs, fewer than "
                f"min_epochs={s['min_epochs']}; variance lost by the means: "
                + ", ".join(f"{f} steps {v:.1%}" for f, v in sorted(lost.items()))
                + f" (at most max_variance_lost={s['max_variance_lost']:.0%})"
            )
        notes.append(
            f"resolution: the networks see means of {factor} steps, {seq_len} -> {length} "
            f"steps ({why})"
            if factor > 1
            else f"resolution: full length, {seq_len} steps ({why})"
        )
    val_every = max(1, min(per_epoch, steps), steps // int(s["evaluations"]))
    patience_steps = max(val_every, int(s["patience"] * steps))
    patience = max(1, patience_steps // val_every)
    # a budget of fewer than min_epochs epochs is all short of training: the validation
    # loss of a network that is still learning bumps, and a patience of a few validations
    # took such bumps for the end (docs/DEFAULTS.md, "No early stop on a short budget")
    short = s["steps"] == "auto" and steps / per_epoch < float(s["min_epochs"])
    min_steps = steps if short else int(s["warmup_share"] * steps)
    if s["checkpoint"] not in CHECKPOINT_RULES:
        raise UserError(
            f"recipe.checkpoint must be one of {', '.join(CHECKPOINT_RULES)}, "
            f"got {s['checkpoint']!r}"
        )
    checkpoint = s["checkpoint"] if k >= 2 else "own"
    stopping = (
        f"no early stop: {steps / per_epoch:.1f} epochs per network are fewer than "
        f"min_epochs={s['min_epochs']}, so every network trains all {steps} steps"
        if short
        else f"stop after {patience} validations ({patience * val_every} steps) without a "
        f"lower validation loss, not before step {min_steps}"
    )
    notes.append(
        f"validation every {val_every} steps; {stopping}; "
        + (
            f"every fold network keeps its weights at the one evaluation whose validation "
            f"loss, averaged over the {k} folds, is lowest (recipe.checkpoint=common)"
            if checkpoint == "common"
            else "keep the weights of the lowest validation loss"
        )
    )
    if s["refit"]:
        notes.append(
            "then retrain every network on all development patients for its chosen number "
            "of steps x development / training patients (recipe.refit); "
            + (
                "the fold networks' out-of-fold logits still fit the blend and calibration"
                if k >= 2
                else "the validation patients' logits before the refit fit the calibration"
            )
        )
    return Recipe(
        folds=k,
        batch_size=batch,
        downsample=factor,
        max_steps=steps,
        val_every=val_every,
        patience=patience,
        min_steps=min_steps,
        refit=bool(s["refit"]),
        val_fraction=float(s["val_fraction"]),
        checkpoint=checkpoint,
        notes=notes,
    )


def _fold_count(
    s: dict, folds: int | None, n_dev: int, smaller: int, fixed_split: bool, notes: list[str]
) -> int:
    if smaller < 2:
        raise UserError(
            f"each outcome needs at least 2 patients outside the test set to train and "
            f"validate, but one outcome has {smaller}"
        )
    if fixed_split:
        if folds not in (None, 1):
            raise UserError(
                "data.cv_folds and data.split_col both set: cross-validation makes its own "
                "folds; set data.split_col=null"
            )
        notes.append("validation: the train/val patients of the split column")
        return 1
    if folds is not None:
        if not (isinstance(folds, int) and folds >= 1):
            raise UserError(f"data.cv_folds must be a positive integer or null, got {folds!r}")
        k, why = folds, "data.cv_folds"
    elif s["folds"] == "auto":
        k = int(s["cv_folds"]) if n_dev < int(s["cv_below"]) else 1
        why = f"{n_dev} development patients {'<' if k > 1 else '>='} cv_below={s['cv_below']}"
    else:
        k, why = int(s["folds"]), "recipe.folds"
    if k > smaller:
        notes.append(f"{k} folds asked, but the smaller outcome has {smaller} patients")
        k, why = smaller, f"at most one patient of the smaller outcome per fold ({why})"
    if k >= 2:
        notes.append(
            f"validation: {k}-fold cross-validation, the {k} fold models form one ensemble ({why})"
        )
    else:
        notes.append(f"validation: one split, {s['val_fraction']:.0%} of patients validate ({why})")
    return k


def _auto_batch(n_train: int, s: dict) -> int:
    size = 2 ** round(math.log2(max(n_train / 8, 1)))
    return int(min(max(size, int(s["min_batch"])), int(s["max_batch"])))


def _auto_downsample(s: dict, seq_len: int, epochs_at, variance_lost, lost: dict) -> int:
    """The smallest power of two giving every network ``min_epochs`` epochs within the
    work budget, while the means lose at most ``max_variance_lost`` of the variance and
    keep ``min_length`` steps (1 when none is needed or allowed). Fills ``lost``."""
    factor = 1
    while (
        variance_lost is not None
        and epochs_at(factor) < float(s["min_epochs"])
        and seq_len / (2 * factor) >= int(s["min_length"])
    ):
        lost[2 * factor] = float(variance_lost(2 * factor))
        if lost[2 * factor] > float(s["max_variance_lost"]):
            break
        factor *= 2
    return factor


def variance_lost_by_averaging(
    x: torch.Tensor, valid: torch.Tensor, factor: int, max_values: int = 10_000_000
) -> float:
    """The share of the variance of ``x`` (N, C, L) about each patient's and channel's mean
    that replacing every real step by the mean of its window of ``factor`` steps removes
    (the windows of ``Downsampled``). Measured on evenly spaced patients holding at most
    ``max_values`` values together, so that a large cohort costs a bounded amount of memory."""
    from patientcnn.models.layers import align_start, window_means

    per_patient = max(1, x.shape[1] * x.shape[2])
    n = min(len(x), max(1, max_values // per_patient))
    pick = torch.from_numpy(np.unique(np.linspace(0, len(x) - 1, n).round().astype(np.int64)))
    with torch.no_grad():
        aligned, keep = align_start(x[pick].double(), valid[pick])
        means, _ = window_means(aligned, keep, factor)
        coarse = means.repeat_interleave(factor, dim=2)[..., : aligned.shape[2]]
        weights = keep[:, None, :]
        per_series = (aligned * weights).sum(2, keepdim=True) / weights.sum(2, keepdim=True).clamp(
            min=1.0
        )
        total = (((aligned - per_series) * weights) ** 2).sum()
        removed = (((aligned - coarse) * weights) ** 2).sum()
    return float(removed / total) if total > 0 else 0.0


def _auto_steps(s: dict, per_epoch: int, by_work: int) -> int:
    steps = min(max(int(s["epochs"]) * per_epoch, int(s["min_steps"])), int(s["max_steps"]))
    return max(1, min(steps, by_work))


def _chosen(s: dict, key: str, rule) -> int:
    value = s[key]
    if value == "auto":
        return int(rule())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"recipe.{key} must be 'auto' or a positive integer, got {value!r}")
    return value
