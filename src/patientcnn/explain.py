"""Which measurements at which hours drove this patient's risk: integrated gradients.

Integrated gradients (Sundararajan et al. 2017, computed with Captum) attribute a
logit to each input value (channel x time step): the path integral of the gradient from
a baseline input to the patient's. The baseline is every channel at 0, which after
standardisation is the training mean of each feature, so an attribution says how much
that value, compared with an average patient's, moved the logit. The attributions of a
patient add up to the logit minus the baseline's logit (completeness; tested).

What is attributed is the part of the ensemble's logit, before the calibration (a
monotone map), that has a gradient in the series:

- the trained networks' share, and the share of every partner family whose features are
  differentiable (``summary``: means, extremes, last values, slopes), each with its
  blend weight; a partner whose features count threshold crossings (``rocket``) has no
  gradient, so its share is left out and said so (``attributed_sides``). Where the
  blend gives every differentiable side weight 0 there is nothing to attribute:
  predict and the report say so instead of writing zeros;
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


def _sides(ensemble: nn.Module) -> list[tuple[str, float, nn.ModuleList, bool]]:
    """(name, blend weight, modules, differentiable) of each side of an EnsembleNet:
    the trained networks first, then each partner family."""
    from patientcnn.models.registry import name_of

    sides = [("trained networks", float(ensemble.mix[0]), ensemble.members, True)]
    for i, family in enumerate(ensemble.partners):
        differentiable = bool(getattr(family[0], "differentiable", False))
        sides.append((name_of(family[0]), float(ensemble.mix[i + 1]), family, differentiable))
    return sides


def attributed_sides(ensemble: nn.Module) -> tuple[list[str], list[str]]:
    """The names of the sides with weight that integrated gradients attribute, and of
    those left out (weight, but no gradient)."""
    sides = [(name, diff) for name, weight, _, diff in _sides(ensemble) if weight != 0.0]
    return [n for n, diff in sides if diff], [n for n, diff in sides if not diff]


def what_is_attributed(ensemble: nn.Module) -> str:
    """One sentence for logs and the report: which sides the attributions explain, which
    are left out, or why there is nothing to attribute."""
    attributed, left_out = attributed_sides(ensemble)
    if not attributed:
        return (
            f"nothing to attribute: the blend gives all its weight to {', '.join(left_out)}, "
            "whose features count threshold crossings and have no gradient"
        )
    text = f"the share of the logit from {', '.join(attributed)}"
    if left_out:
        text += f"; {', '.join(left_out)} (no gradient: threshold counts) is left out"
    return text


class AttributedLogit(nn.Module):
    """The differentiable part of an EnsembleNet's logit, before calibration:
    ``sum_i w_i a_i mean(side_i)`` over the trained networks and the differentiable
    partner families (the blend's constant and the other partners are left out)."""

    def __init__(self, ensemble: nn.Module) -> None:
        super().__init__()
        kept = [(w, m) for _, w, m, diff in _sides(ensemble) if diff and w != 0.0]
        self.weights = [w for w, _ in kept]
        self.sides = nn.ModuleList(m for _, m in kept)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, static: torch.Tensor | None = None
    ) -> torch.Tensor:
        inputs = (x, valid) if static is None else (x, valid, static)
        z = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
        for weight, side in zip(self.weights, self.sides, strict=True):
            z = z + weight * torch.stack([m(*inputs).float() for m in side]).mean(dim=0)
        return z


def integrated_gradients(
    ensemble: nn.Module,
    x: torch.Tensor,
    valid: torch.Tensor,
    batch_size: int = 64,
    static: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, L) attributions of the ensemble's differentiable logit
    (``AttributedLogit``), and each patient's convergence delta (attributions' sum minus the logit's change from the baseline; ~0 when the
    path integral is accurate). ``static``: the patients' (N, S) static covariates, held
    at their values along the path (the series is what is attributed)."""
    from captum.attr import IntegratedGradients

    target = AttributedLogit(ensemble).eval()
    if not target.weights:
        raise ValueError(what_is_attributed(ensemble))
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
    highest risk and the false negative of highest risk (if there is one). With nothing
    to attribute (``attributed_sides``): ``{"unavailable": why}``."""
    if not attributed_sides(ensemble)[0]:
        return {"unavailable": what_is_attributed(ensemble)}
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
        "attributed": what_is_attributed(ensemble),
        "examples": [
            {
                "title": f"{name}: patient {ids[i]} (risk {prob[i]:.2f}, outcome {int(y[i])})",
                "map": per_feature[position[i]],
                "length": int(valid[i].sum()),
            }
            for name, i in examples.items()
        ],
    }
