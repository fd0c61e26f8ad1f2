"""Which weights each fold network keeps: one step for every fold (``recipe.checkpoint``).

Each network of a K-fold ensemble is validated on its own fold. Keeping each network's
weights at the lowest validation loss of its own fold chooses among ~40 evaluations on
that fold's patients alone: with 4 to 10 validation patients per fold (cohorts of 20 to
50) the lowest of 40 noisy losses is mostly luck. It picked an almost untrained network
(step 6 of 300) for one fold of a 28-patient set, and the chosen losses understate the
networks' true loss, so the blend with the partners (``patientcnn.partner``), which
compares out-of-fold logits, favours the trained networks more than they deserve.

``common`` (the default) chooses one step for all of them: the evaluation whose
validation loss, averaged over the folds, is lowest, so every development patient
votes, as ``xgboost.cv`` chooses its number of rounds. A fold that stopped early counts
with its last evaluation at the later steps (and keeps its last weights there). ``own``
keeps each fold's own lowest. docs/DEFAULTS.md has the out-of-fold evidence.

During training ``EvaluationWeights`` saves the network's weights and validation loss at
every evaluation under ``<member folder>/evaluations/`` (the loss also in a small JSON file,
so that ``read_curve`` need not unpickle every evaluation's weights); once every member is
trained, ``common_step`` picks the step and ``weights_at`` reads each member's weights
there. The files are removed once the run's bundle is written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from patientcnn.files import atomic_write, write_json

FOLDER = "evaluations"


class EvaluationWeights(pl.Callback):
    """Saves the network's weights and its validation score at every validation (rank 0):
    the score that the checkpoint callback monitors (``val/loss`` unless configured), as
    lower-is-better (negated for ``mode: max``)."""

    def __init__(self, folder: Path, monitor: str = "val/loss", mode: str = "min") -> None:
        self.folder = Path(folder) / FOLDER
        self.monitor = monitor
        self.sign = -1.0 if mode == "max" else 1.0

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        loss = trainer.callback_metrics.get(self.monitor)
        if loss is None:
            return
        step = int(trainer.global_step)
        record = {
            "step": step,
            "score": self.sign * float(loss),  # lower is better
            "value": float(loss),  # as logged
            "state": {k: v.detach().cpu().clone() for k, v in module.net.state_dict().items()},
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"step_{step:07d}"
        atomic_write(self.folder / f"{name}.pt", lambda tmp: torch.save(record, tmp))
        # the score alone as well, after the weights: read_curve need not unpickle the weights
        write_json(self.folder / f"{name}.json", {k: record[k] for k in ("step", "score", "value")})


def read_curve(folder: Path) -> list[tuple[int, float]]:
    """[(step, validation loss)] of a member's saved evaluations, by step (the monitored
    score, lower is better). Evaluations saved without their score file (before it
    existed) are read from the weights file."""
    curve = []
    for path in sorted((Path(folder) / FOLDER).glob("step_*.pt")):
        scores = path.with_suffix(".json")
        if scores.exists():
            saved = json.loads(scores.read_text())
        else:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        curve.append((int(saved["step"]), float(saved["score"])))
    return curve


def common_step(curves: list[list[tuple[int, float]]]) -> tuple[int, float]:
    """The evaluation step whose validation loss, averaged over the members, is lowest (the
    earliest of equal ones), and that mean. A member whose curve ended before a step counts
    with its last loss there; a step before a member's first evaluation is not a candidate."""
    if not curves or any(not c for c in curves):
        raise ValueError("every member needs at least one evaluation")
    first = max(c[0][0] for c in curves)
    steps = sorted({s for c in curves for s, _ in c if s >= first})
    means = np.array([np.mean([loss_at(c, s)[1] for c in curves]) for s in steps])
    best = int(np.argmin(means))
    return steps[best], float(means[best])


def loss_at(curve: list[tuple[int, float]], step: int) -> tuple[int, float]:
    """(step, loss) of the member's last evaluation at or before ``step``."""
    earlier = [(s, loss) for s, loss in curve if s <= step]
    return earlier[-1]


def weights_at(folder: Path, curve: list[tuple[int, float]], step: int) -> tuple[dict, int, float]:
    """The member's network weights at its last evaluation at or before ``step`` (of its
    ``read_curve``), that evaluation's step and its monitored value (the validation loss
    by default)."""
    used, _ = loss_at(curve, step)
    saved = torch.load(
        Path(folder) / FOLDER / f"step_{used:07d}.pt", map_location="cpu", weights_only=True
    )
    return saved["state"], used, float(saved["value"])


def remove_evaluations(folders: list[Path]) -> None:
    """Drop the saved evaluations once the bundle holds the chosen weights."""
    for folder in folders:
        shutil.rmtree(Path(folder) / FOLDER, ignore_errors=True)
