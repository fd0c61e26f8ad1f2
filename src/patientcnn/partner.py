"""The partner: a network fitted in closed form beside the trained ones, and the blend.

A trained CNN has to learn its kernels from the training patients; with tens or a few
hundred patients it learns some and misses others. Random-kernel networks (``rocket``,
``patientcnn.models.rocket``) learn only a linear readout, so they stay good where the
trained networks are short of patients, and their errors differ from the trained
networks' errors. Averaging the two is better than either on most cohorts: on the
out-of-fold patients of the 14 quality sets with folds, mean log loss 0.267 (trained
networks alone) and 0.304 (random kernels alone) against 0.255 for the even blend
(docs/DEFAULTS.md).

The partner's biases (quantiles of its kernels' outputs; no outcome) are fitted once on
the development patients, as the standardisation is. For every fold (or the one split)
of the run a readout is then fitted on the fold's training patients, so the partner's
logits on the fold's validation patients are out-of-fold. Then, on those validation
logits only:

1. each side gets its own Platt scaling, which puts both on one log-odds scale;
2. the blend ``w x networks + (1 - w) x partners`` takes the weight ``w`` (the trained
   networks' share) with the lowest validation log loss among ``WEIGHTS`` (or the user's
   number). The extremes are left out: a few dozen validation patients cannot show that
   one side is useless, and the blend is rarely worse than its better side;
3. the run's calibration and threshold are then fitted on the blended logits as usual.

The partner the bundle keeps has its readout fitted on every development patient (as a
stacking ensemble refits its base models): more patients than any fold's, and prediction
runs one partner instead of one per fold.

``models.ensemble.EnsembleNet`` applies the same blend; the bundle stores it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from patientcnn.calibration import fit_calibration
from patientcnn.errors import UserError
from patientcnn.metrics import logit_log_loss
from patientcnn.models.registry import closed_form_names, create_network
from patientcnn.models.rocket import ridge_readout

log = logging.getLogger(__name__)

WEIGHTS = (0.25, 0.5, 0.75)  # candidate shares of the trained networks in the blend
# A ridge readout over ~10,000 features costs O(min(N, F)^3) and N x F memory: beyond a few
# thousand patients a random subset fits it as well, and the trained networks, which see
# every patient, carry the large cohorts anyway (the blend weight is chosen on validation)
MAX_PATIENTS = 4096


@dataclass
class Partners:
    """The fitted partner networks of a run (one per member) and the blend."""

    name: str
    config: dict
    states: list[dict]
    blend: dict  # {"weight", "networks": [scale, shift], "partners": [scale, shift]}
    val_logits: np.ndarray  # blended out-of-fold logits of the validated patients

    def bundle_state(self) -> dict:
        return {
            "name": self.name,
            "config": self.config,
            "members": self.states,
            "blend": self.blend,
        }


@dataclass
class PartnerSettings:
    name: str  # registry name of a closed-form family
    config: dict  # the network's own settings
    weight: float | str  # the trained networks' share of the blend, or "auto"
    max_patients: int  # a partner is fitted on at most this many training patients


def partner_settings(settings: dict | None) -> PartnerSettings | None:
    """The ``partner`` config checked; None: no partner."""
    settings = dict(settings or {})
    name = settings.pop("net", None)
    if name in (None, "none", False):
        return None
    weight = settings.pop("weight", "auto")
    max_patients = settings.pop("max_patients", MAX_PATIENTS)
    if isinstance(max_patients, bool) or not isinstance(max_patients, int) or max_patients < 2:
        raise UserError(
            f"partner.max_patients must be an integer of at least 2, got {max_patients!r}"
        )
    if name not in closed_form_names():
        raise UserError(
            f"partner.net={name!r}: the partner is fitted in closed form; choose one of "
            f"{', '.join(closed_form_names())} or null (no partner)"
        )
    if weight != "auto" and not (
        isinstance(weight, (int, float)) and not isinstance(weight, bool) and 0 <= weight <= 1
    ):
        raise UserError(
            f"partner.weight must be 'auto' or a number from 0 to 1 (the trained networks' "
            f"share of the blend), got {weight!r}"
        )
    return PartnerSettings(name, settings, weight, max_patients)


def fit_partners(
    settings: PartnerSettings,
    datamodule,
    members,
    network_logits: np.ndarray,
    validated: np.ndarray,
    seed: int = 0,
) -> Partners:
    """Out-of-fold partner logits, the blend, and the partner the bundle keeps.

    As in stacking: for each split of the members (each fold) a readout fitted on its
    training patients scores its validation patients, and those out-of-fold logits, with
    the trained networks' ``network_logits`` of the same ``validated`` patients, choose
    the blend. The partner that is kept has its readout fitted on every development
    patient: more patients than any fold's, and one partner to run at prediction.

    The biases (unsupervised: quantiles of kernel outputs, no outcome) are fitted once,
    on the development patients like the standardisation; then every patient's features
    are computed once and each fold's readout is a ridge fit on its rows (seconds). The
    cohort's static covariates, if any, are appended to those features (penalised less:
    ``models.rocket.ridge_readout``).
    """
    x, valid, _, static = datamodule.dev["tensors"]
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
    static_columns = int(static.shape[1])
    config = dict(settings.config)
    if static_columns:  # the static covariates join the kernel summaries in the readout
        config["static_features"] = static_columns
    net = create_network(settings.name, datamodule.num_channels, datamodule.seq_len, **config)
    net.fit_biases(x[every], valid[every], seed)
    features = net.with_static(net.features(x[needed], valid[needed]), static[needed])
    features = features.double().numpy()
    logit_sum, count = np.zeros(len(y_dev)), np.zeros(len(y_dev))
    for train, val in splits:
        weight, intercept = ridge_readout(features[row[train]], y_dev[train], static_columns)
        logit_sum[val] += features[row[val]] @ weight + intercept
        count[val] += 1
    net.set_readout(*ridge_readout(features[row[every]], y_dev[every], static_columns))
    states = [{k: v.detach().cpu() for k, v in net.state_dict().items()}]
    name = settings.name
    partner_logits = logit_sum[validated] / np.maximum(count[validated], 1)
    y = y_dev[validated]
    blend = choose_blend(network_logits, partner_logits, y, settings.weight)
    log.info(
        "partner %s (%d out-of-fold readouts, then one on all %d development patients): blend = "
        "%.2f x trained networks + %.2f x partner, validation log loss %.4f (trained "
        "networks alone %.4f, partner alone %.4f)",
        name,
        len(done),
        len(y_dev),
        blend["weight"],
        1 - blend["weight"],
        blend["val_log_loss"],
        blend["val_log_loss_networks"],
        blend["val_log_loss_partners"],
    )
    return Partners(name, config, states, blend, blended(network_logits, partner_logits, blend))


def capped(patients: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """``patients``, or a random ``limit`` of them (sorted) when there are more."""
    if len(patients) <= limit:
        return patients
    return np.sort(np.random.default_rng(seed).choice(patients, limit, replace=False))


def choose_blend(
    network_logits: np.ndarray, partner_logits: np.ndarray, y: np.ndarray, weight
) -> dict:
    """Platt scalings of both sides and the weight, all on validation logits."""
    sides = {}
    for side, z in (("networks", network_logits), ("partners", partner_logits)):
        fitted = fit_calibration(z, y, "platt")
        sides[side] = [fitted["scale"], fitted["shift"]]
    losses = {}
    for w in WEIGHTS if weight == "auto" else (float(weight),):
        losses[w] = logit_log_loss(
            blended(network_logits, partner_logits, sides | {"weight": w}), y
        )
    best = min(losses, key=losses.get)
    alone = {
        side: logit_log_loss(blended(network_logits, partner_logits, sides | {"weight": w}), y)
        for side, w in (("networks", 1.0), ("partners", 0.0))
    }
    return {
        "weight": best,
        **sides,
        "val_log_loss": losses[best],
        "val_log_loss_networks": alone["networks"],
        "val_log_loss_partners": alone["partners"],
    }


def blended(network_logits: np.ndarray, partner_logits: np.ndarray, blend: dict) -> np.ndarray:
    """``w (a z_networks + b) + (1 - w) (c z_partners + d)``; EnsembleNet does the same."""
    (a, b), (c, d), w = blend["networks"], blend["partners"], blend["weight"]
    return w * (a * network_logits + b) + (1 - w) * (c * partner_logits + d)
