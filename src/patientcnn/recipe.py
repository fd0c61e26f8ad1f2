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
- validation every ``1 / evaluations`` of the budget (at least once an epoch's worth
  of steps); early stopping after ``patience`` of the budget passes without a lower
  validation loss, never before ``warmup_share`` of it; the kept weights are those of
  the lowest validation loss (a signal that does not saturate, unlike AUROC on a few
  validation patients).

``recipe.describe()`` prints the resulting numbers and the rule behind each at the
start of a run. Every ``auto`` in the config can be replaced by a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from patientcnn.errors import UserError

DEFAULTS = {
    "folds": "auto",
    "cv_folds": 5,
    "cv_below": 1000,
    "val_fraction": 0.2,
    "refit": False,
    "batch_size": "auto",
    "min_batch": 8,
    "max_batch": 64,
    "steps": "auto",
    "epochs": 100,
    "min_steps": 300,
    "max_steps": 3000,
    "max_work": 1.0e7,
    "work_epochs": 20,
    "evaluations": 40,
    "patience": 0.3,
    "warmup_share": 0.2,
}


@dataclass
class Recipe:
    folds: int  # 1: one train/validation split; K >= 2: K-fold ensemble
    batch_size: int
    max_steps: int
    val_every: int  # optimizer steps between validations
    patience: int  # validations without a lower validation loss before stopping
    min_steps: int  # no early stop before this step
    refit: bool
    val_fraction: float
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return "training recipe:\n" + "\n".join(f"  {line}" for line in self.notes)

    def state(self) -> dict:
        return {
            "folds": self.folds,
            "batch_size": self.batch_size,
            "max_steps": self.max_steps,
            "val_every": self.val_every,
            "patience": self.patience,
            "min_steps": self.min_steps,
            "refit": self.refit,
        }


def plan_recipe(
    settings: dict | None,
    y_dev: np.ndarray,
    seq_len: int,
    folds: int | None = None,
    fixed_split: bool = False,
    seeds: int = 1,
) -> Recipe:
    """The recipe for ``y_dev`` development patients (train + validation) of ``seq_len`` steps.

    ``folds`` (the user's ``data.cv_folds``) overrides the fold rule; ``fixed_split``
    means the user's split column already says which patients validate.
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
    by_work = max(1, int(work // (members * batch * seq_len)))
    steps = _chosen(s, "steps", lambda: _auto_steps(s, per_epoch, by_work))
    if s["steps"] == "auto":
        notes.append(
            f"{steps} optimizer steps per network (~{steps / per_epoch:.0f} epochs of "
            f"{per_epoch} steps): {s['epochs']} epochs = {s['epochs'] * per_epoch} steps, "
            f"within [{s['min_steps']}, {s['max_steps']}], and the {members} network(s) "
            f"together at most {work:.2g} patient-timesteps (max of max_work and "
            f"work_epochs x N x L) = {by_work} steps each"
        )
    else:
        notes.append(f"{steps} optimizer steps (recipe.steps)")
    val_every = max(1, min(per_epoch, steps), steps // int(s["evaluations"]))
    patience_steps = max(val_every, int(s["patience"] * steps))
    patience = max(1, patience_steps // val_every)
    min_steps = int(s["warmup_share"] * steps)
    notes.append(
        f"validation every {val_every} steps; stop after {patience} validations "
        f"({patience * val_every} steps) without a lower validation loss, not before step "
        f"{min_steps}; keep the weights of the lowest validation loss"
    )
    if s["refit"] and k == 1:
        notes.append("then refit on train + validation patients for the chosen number of steps")
    return Recipe(
        folds=k,
        batch_size=batch,
        max_steps=steps,
        val_every=val_every,
        patience=patience,
        min_steps=min_steps,
        refit=bool(s["refit"]) and k == 1,
        val_fraction=float(s["val_fraction"]),
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
