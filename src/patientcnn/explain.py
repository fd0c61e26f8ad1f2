"""Which measurements at which hours drove this patient's risk: integrated gradients.

Integrated gradients (Sundararajan et al. 2017, computed with Captum) attribute a
logit to each input value (channel x time step): the path integral of the gradient from
a baseline input to the patient's. The baseline is every channel at 0, which after
standardisation is the training mean of each feature, so an attribution says how much
that value, compared with an average patient's, moved the logit. The attributions of a
patient add up to the logit minus the baseline's logit (completeness; tested).

What is attributed is the trained networks' share of the ensemble's logit, before the
calibration (a monotone map):

- the partners (``patientcnn.partner``) are left out and said so: the random kernels
  count threshold crossings, which have no gradient. With a blend weight w, the
  attributions explain w of the networks' part (none where the blend gave them 0);
- padded steps are zeroed before the networks and masked inside them, so their
  attribution is exactly 0;
- static covariates (age, sex...) are held at the patient's own values along the path:
  the attributions explain the series, given the patient's covariates.

Channels that preprocessing derives from a feature (``__observed``,
``__time_since_observed``) are summed into that feature for the per-patient summary.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from patientcnn.report.importance import channel_groups, time_blocks

STEPS = 32  # points on the path from the baseline; Captum's Gauss-Legendre rule
TOP = 3  # features and time windows named per patient


class NetworksLogit(nn.Module):
    """The trained networks' share of an EnsembleNet's logit, before calibration:
    ``w a mean(members)`` (the blend's constant and the partner are left out)."""

    def __init__(self, ensemble: nn.Module) -> None:
        super().__init__()
        self.members = ensemble.members
        self.scale = float(ensemble.mix[0])  # 1 without partners

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, static: torch.Tensor | None = None
    ) -> torch.Tensor:
        inputs = (x, valid) if static is None else (x, valid, static)
        z = torch.stack([m(*inputs).float() for m in self.members]).mean(dim=0)
        return self.scale * z


def integrated_gradients(
    ensemble: nn.Module,
    x: torch.Tensor,
    valid: torch.Tensor,
    batch_size: int = 64,
    static: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, L) attributions of the networks' logit, and each patient's convergence
    delta (attributions' sum minus the logit's change from the baseline; ~0 when the
    path integral is accurate). ``static``: the patients' (N, S) static covariates, held
    at their values along the path (the series is what is attributed)."""
    from captum.attr import IntegratedGradients

    target = NetworksLogit(ensemble).eval()
    method = IntegratedGradients(target)
    attributions, deltas = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size] * valid[start : start + batch_size, None]
        vb = valid[start : start + batch_size]
        sb = static[start : start + batch_size] if static is not None else None
        attr, delta = method.attribute(
            xb,
            baselines=torch.zeros_like(xb),
            additional_forward_args=(vb, sb),
            n_steps=STEPS,
            internal_batch_size=max(len(xb), 1) * 8,
            return_convergence_delta=True,
        )
        attributions.append((attr * vb[:, None]).detach().cpu().numpy())
        deltas.append(delta.detach().cpu().numpy())
    return np.concatenate(attributions), np.concatenate(deltas)


def top_contributions(
    attributions: np.ndarray, channels: list[str], n_blocks: int = 6, top: int = TOP
) -> tuple[list[str], list[str]]:
    """Per patient: the ``top`` features and time windows by absolute attribution, as
    'name (+0.42); ...' (the sign: towards or away from the outcome)."""
    per_feature, names = grouped(attributions, channels)
    by_feature = per_feature.sum(axis=2)
    blocks = time_blocks(attributions.shape[2], n_blocks)
    by_window = np.stack([attributions[:, :, a:b].sum(axis=(1, 2)) for a, b in blocks], axis=1)
    windows = [f"steps {a}-{b - 1}" for a, b in blocks]
    return _ranked(by_feature, names, top), _ranked(by_window, windows, top)


def _ranked(values: np.ndarray, names: list[str], top: int) -> list[str]:
    order = np.argsort(-np.abs(values), axis=1)[:, :top]
    return [
        "; ".join(f"{names[j]} ({row[j]:+.3f})" for j in chosen)
        for row, chosen in zip(values, order, strict=True)
    ]


def grouped(attributions: np.ndarray, channels: list[str]) -> tuple[np.ndarray, list[str]]:
    """(N, C, L) channel attributions summed into (N, F, L) per feature."""
    groups = channel_groups(channels)
    stacked = [attributions[:, index].sum(axis=1) for index in groups.values()]
    return np.stack(stacked, axis=1), list(groups)


def attribution_summary(
    ensemble: nn.Module,
    x: np.ndarray,
    valid: np.ndarray,
    y: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    channels: list[str],
    ids: np.ndarray,
    max_patients: int = 200,
    seed: int = 0,
    static: np.ndarray | None = None,
) -> dict:
    """What the report shows: the mean absolute attribution per feature and step over (at
    most ``max_patients`` of) the patients, and the maps of two example patients, the
    highest risk and the false negative of highest risk (if there is one)."""
    rng = np.random.default_rng(seed)
    chosen = np.arange(len(y))
    if len(chosen) > max_patients:
        chosen = np.sort(rng.choice(chosen, max_patients, replace=False))
    examples = {"highest risk": int(np.argmax(prob))}
    missed = np.flatnonzero((y == 1) & (prob < threshold))
    if len(missed):
        examples["a false negative"] = int(missed[np.argmax(prob[missed])])
    rows = np.unique(np.concatenate([chosen, list(examples.values())]))
    attributions, deltas = integrated_gradients(
        ensemble,
        torch.as_tensor(x[rows]),
        torch.as_tensor(valid[rows]),
        static=torch.as_tensor(static[rows]) if static is not None else None,
    )
    per_feature, features = grouped(attributions, channels)
    position = {int(r): i for i, r in enumerate(rows)}
    in_sample = [position[int(r)] for r in chosen]
    return {
        "features": features,
        "patients": len(chosen),
        "mean_abs": np.abs(per_feature[in_sample]).mean(axis=0),
        "max_delta": float(np.abs(deltas).max()) if len(deltas) else 0.0,
        "examples": [
            {
                "title": f"{name}: patient {ids[i]} (risk {prob[i]:.2f}, outcome {int(y[i])})",
                "map": per_feature[position[i]],
                "length": int(valid[i].sum()),
            }
            for name, i in examples.items()
        ],
    }
