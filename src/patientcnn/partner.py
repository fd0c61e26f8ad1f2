"""The partners: networks fitted in closed form beside the trained ones, and the blend.

A trained CNN has to learn its kernels from the training patients; with tens or a few
hundred patients it learns some and misses others. Closed-form families learn only a
linear readout of fixed features (``patientcnn.models.closed_form``), so they stay good
where the trained networks are short of patients, and their errors differ:

- ``rocket`` (random convolution kernels, ``models/rocket.py``) reads shapes;
- ``summary`` (six statistics per feature, ``models/summary.py``) reads levels and
  trends, what a clinical outcome often follows;
- ``linear`` (the flattened series, ``models/linear.py``) reads values at fixed times; an
  option, not in the default (docs/DEFAULTS.md, ninth round).

The partners' unsupervised first step (``fit_biases``: quantiles of kernel outputs, no
outcome) is fitted once on the development patients, as the standardisation is. For
every fold (or the one split) of the run each partner's readout is then fitted on the
fold's training patients, so its logits on the fold's validation patients are
out-of-fold, exactly like the trained networks'. Then, on those validation logits only
(a stacking ensemble with a coarse weight grid):

1. each side (the trained networks, each partner) gets its own Platt scaling, which puts
   them all on one log-odds scale;
2. the blend ``sum_i w_i x side_i`` takes the weights, multiples of ``GRID_STEP``
   summing to 1 (the trained networks first), with the lowest validation log loss, or
   the user's weights. Nested out-of-fold evidence (docs/DEFAULTS.md) chose this grid,
   the extremes included: a side that is useless on a cohort gets weight 0;
3. the run's calibration and threshold are then fitted on the blended logits as usual.

Each partner the bundle keeps has its readout fitted on every development patient (as a
stacking ensemble refits its base models): more patients than any fold's, and prediction
runs one partner of each family instead of one per fold.

``models.ensemble.EnsembleNet`` applies the same blend; the bundle stores it.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np

from patientcnn.calibration import fit_calibration
from patientcnn.errors import UserError
from patientcnn.metrics import logit_log_loss
from patientcnn.models.closed_form import ridge_readout
from patientcnn.models.registry import closed_form_names, create_network

log = logging.getLogger(__name__)

GRID_STEP = 0.25  # the blend's weights are multiples of this, summing to 1
# A ridge readout over ~10,000 features costs O(min(N, F)^3) and N x F memory: beyond a few
# thousand patients a random subset fits it as well, and the trained networks, which see
# every patient, carry the large cohorts anyway (the blend weights are chosen on validation)
MAX_PATIENTS = 4096
NETWORKS = "trained networks"  # the name of the trained side in the blend's messages


@dataclass
class PartnerSettings:
    nets: dict[str, dict]  # registry name of each closed-form family -> its own settings
    weights: str | list[float]  # "auto", or one weight per side (the trained networks first)
    max_patients: int  # a partner is fitted on at most this many training patients


def partner_settings(settings: dict | None) -> PartnerSettings | None:
    """The ``partner`` config checked; None: no partner (the trained networks alone)."""
    settings = dict(settings or {})
    nets = settings.pop("nets", None) or []
    weights = settings.pop("weight", "auto")
    max_patients = settings.pop("max_patients", MAX_PATIENTS)
    families = closed_form_names()
    if isinstance(nets, str):
        nets = [nets]
    if not isinstance(nets, (list, tuple)) or any(n not in families for n in nets):
        raise UserError(
            f"partner.nets={nets!r}: the partners are fitted in closed form; give a list of "
            f"{', '.join(families)}, or [] for the trained networks alone"
        )
    if len(set(nets)) != len(nets):
        raise UserError(f"partner.nets={list(nets)} names a family twice")
    unknown = sorted(set(settings) - set(families))
    if unknown:
        raise UserError(
            f"unknown partner setting(s) {unknown}; known: nets, weight, max_patients and "
            f"the settings of each family ({', '.join(f'partner.{f}' for f in families)})"
        )
    if isinstance(max_patients, bool) or not isinstance(max_patients, int) or max_patients < 2:
        raise UserError(
            f"partner.max_patients must be an integer of at least 2, got {max_patients!r}"
        )
    if not nets:
        return None
    if weights != "auto" and not (
        isinstance(weights, (list, tuple))
        and len(weights) == len(nets) + 1
        and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights)
        and all(w >= 0 for w in weights)
        and abs(sum(weights) - 1) < 1e-6
    ):
        raise UserError(
            f"partner.weight must be 'auto' or {len(nets) + 1} numbers >= 0 that sum to 1 (the "
            f"trained networks' share first, then {', '.join(nets)}), got {weights!r}"
        )
    configs = {}
    for name in nets:
        config = settings.get(name) or {}
        if not isinstance(config, dict):
            raise UserError(f"partner.{name} must hold the settings of {name}, got {config!r}")
        configs[name] = dict(config)
    return PartnerSettings(configs, weights if weights == "auto" else list(weights), max_patients)


@dataclass
class Partners:
    """The fitted partners of a run (one network of each family) and the blend."""

    families: list[dict]  # {"name", "config", "members": [state dict]} per family
    blend: dict  # {"sides", "weights", "platt": [[scale, shift], ...], "val_log_loss", ...}
    val_logits: np.ndarray  # blended out-of-fold logits of the validated patients

    def bundle_state(self) -> dict:
        return {"families": self.families, "blend": self.blend}


def fit_partners(
    settings: PartnerSettings,
    datamodule,
    members,
    network_logits: np.ndarray,
    validated: np.ndarray,
    seed: int = 0,
) -> Partners:
    """Out-of-fold partner logits, the blend, and the partners the bundle keeps.

    As in stacking: for each split of the members (each fold) a readout fitted on its
    training patients scores its validation patients, and those out-of-fold logits, with
    the trained networks' ``network_logits`` of the same ``validated`` patients, choose
    the blend. The partners that are kept have their readouts fitted on every development
    patient: more patients than any fold's, and one partner per family at prediction.

    The unsupervised first step (no outcome) is fitted once, on the development patients
    like the standardisation; then every patient's features are computed once and each
    fold's readout is a ridge fit on its rows (seconds). The cohort's static covariates,
    if any, are appended to every family's features (penalised less:
    ``models.closed_form.ridge_readout``).
    """
    x, valid, _, static = datamodule.dev["tensors"]
    static_columns = int(static.shape[1])
    y_dev = datamodule.y_dev
    every = capped(np.arange(len(y_dev)), settings.max_patients, seed)
    splits, done = [], set()
    for member in members:  # the seeds of model.ensemble share their folds: one fit each
        key = tuple(member.val.tolist()) if member.val is not None else ()
        if key and key not in done:
            done.add(key)
            splits.append((capped(member.train, settings.max_patients, member.seed), member.val))
    needed = np.unique(np.concatenate([every, *(np.r_[t, v] for t, v in splits)]))
    row = np.full(len(y_dev), -1)
    row[needed] = np.arange(len(needed))
    families, sides = [], [network_logits]
    for name, config in settings.nets.items():
        config = dict(config)
        if static_columns:  # the static covariates join the features in the readout
            config["static_features"] = static_columns
        net = create_network(name, datamodule.num_channels, datamodule.seq_len, **config)
        net.fit_biases(x[every], valid[every], seed)
        features = net.with_static(net.features(x[needed], valid[needed]), static[needed])
        features = features.double().numpy()
        logit_sum, count = np.zeros(len(y_dev)), np.zeros(len(y_dev))
        for train, val in splits:
            weight, intercept = ridge_readout(features[row[train]], y_dev[train], static_columns)
            logit_sum[val] += features[row[val]] @ weight + intercept
            count[val] += 1
        net.set_readout(*ridge_readout(features[row[every]], y_dev[every], static_columns))
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        families.append({"name": name, "config": dict(config), "members": [state]})
        sides.append(logit_sum[validated] / np.maximum(count[validated], 1))
    y = y_dev[validated]
    blend = choose_blend(sides, y, settings.weights, [NETWORKS, *settings.nets])
    log.info(
        "partners %s (%d out-of-fold readouts each, then one on all %d development "
        "patients): blend = %s, validation log loss %.4f (alone: %s)",
        ", ".join(settings.nets),
        len(done),
        len(y_dev),
        " + ".join(f"{w:.2f} x {s}" for w, s in zip(blend["weights"], blend["sides"], strict=True)),
        blend["val_log_loss"],
        ", ".join(
            f"{s} {v:.4f}" for s, v in zip(blend["sides"], blend["val_log_loss_alone"], strict=True)
        ),
    )
    return Partners(families, blend, blended(sides, blend))


def capped(patients: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """``patients``, or a random ``limit`` of them (sorted) when there are more."""
    if len(patients) <= limit:
        return patients
    return np.sort(np.random.default_rng(seed).choice(patients, limit, replace=False))


def weight_grid(sides: int, step: float = GRID_STEP) -> list[tuple[float, ...]]:
    """Every tuple of ``sides`` weights, multiples of ``step``, summing to 1 (ordered so
    that among equal losses the trained networks' largest share comes first)."""
    units = round(1 / step)
    grid = [c for c in itertools.product(range(units, -1, -1), repeat=sides) if sum(c) == units]
    return [tuple(u * step for u in c) for c in grid]


def choose_blend(sides: list[np.ndarray], y: np.ndarray, weights, names: list[str]) -> dict:
    """Platt scalings of every side and the weights, all on validation logits."""
    platt = []
    for z in sides:
        fitted = fit_calibration(z, y, "platt")
        platt.append([fitted["scale"], fitted["shift"]])
    candidates = weight_grid(len(sides)) if weights == "auto" else [tuple(weights)]
    losses = {
        w: logit_log_loss(blended(sides, {"weights": w, "platt": platt}), y) for w in candidates
    }
    best = min(candidates, key=losses.get)  # the first of equal losses
    alone = [
        logit_log_loss(blended(sides, {"weights": np.eye(len(sides))[i], "platt": platt}), y)
        for i in range(len(sides))
    ]
    return {
        "sides": list(names),
        "weights": [float(w) for w in best],
        "platt": platt,
        "val_log_loss": losses[best],
        "val_log_loss_alone": alone,
    }


def blended(sides: list[np.ndarray], blend: dict) -> np.ndarray:
    """``sum_i w_i (a_i z_i + b_i)``; EnsembleNet does the same."""
    return sum(
        w * (a * z + b)
        for w, (a, b), z in zip(blend["weights"], blend["platt"], sides, strict=True)
    )
