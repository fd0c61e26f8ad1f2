"""Several trained networks answering as one, with the calibration on top.

The mean of the members' logits, blended with each partner family's logit when the run
fitted partners (``sum_i w_i (a_i z_i + b_i)`` over the sides, the trained networks
first; see ``patientcnn.partner``), goes through the calibration (``scale * z + shift``, or the isotonic knots; see
``patientcnn.calibration``), so ``EnsembleNet(x, valid[, static])`` returns the
calibrated logit that predict, evaluate, the report and export all use. A single network
is an ensemble of one.
"""

from __future__ import annotations

import torch
from torch import nn


class EnsembleNet(nn.Module):
    def __init__(
        self,
        members: list[nn.Module],
        calibration: dict | None = None,
        partners: list[list[nn.Module]] | None = None,
        blend: dict | None = None,
    ) -> None:
        super().__init__()
        calibration = calibration or {"scale": 1.0, "shift": 0.0}
        self.members = nn.ModuleList(members)
        self.partners = nn.ModuleList(nn.ModuleList(family) for family in partners or [])
        blend = blend or {"weights": [1.0], "platt": [[1.0, 0.0]]}
        weights, platt = blend["weights"], blend["platt"]
        if not len(weights) == len(platt) == len(self.partners) + 1:
            raise ValueError("the blend needs a weight and a scaling for every side")
        # the blend as one linear map: sum_i (w_i a_i) z_i + sum_i w_i b_i
        mix = [float(w) * float(a) for w, (a, _) in zip(weights, platt, strict=True)]
        mix.append(sum(float(w) * float(b) for w, (_, b) in zip(weights, platt, strict=True)))
        self.register_buffer("mix", torch.tensor(mix))
        self.register_buffer("scale", torch.tensor(float(calibration["scale"])))
        self.register_buffer("shift", torch.tensor(float(calibration["shift"])))
        knots_x, knots_p = calibration.get("knots") or ([], [])
        self.isotonic = len(knots_x) > 0
        self.register_buffer("knots_x", torch.tensor(knots_x, dtype=torch.float32))
        self.register_buffer("knots_p", torch.tensor(knots_p, dtype=torch.float32))

    def member_logits(
        self, x: torch.Tensor, valid: torch.Tensor, static: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N,) mean of the members' raw logits (blended with the partners'), before
        calibration. ``static``: the (N, S) static covariates, for networks that read them."""
        inputs = (x, valid) if static is None else (x, valid, static)
        z = torch.stack([m(*inputs).float() for m in self.members]).mean(dim=0)
        out = self.mix[0] * z + self.mix[-1]
        for i, family in enumerate(self.partners):
            z_family = torch.stack([m(*inputs).float() for m in family]).mean(dim=0)
            out = out + self.mix[i + 1] * z_family
        return out

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, static: torch.Tensor | None = None
    ) -> torch.Tensor:
        z = self.member_logits(x, valid, static)
        if not self.isotonic:
            return self.scale * z + self.shift
        # the straight lines between the knots, flat beyond the ends (numpy's interp):
        # p(z) = p_0 + sum_i (p_{i+1} - p_i) * clamp((z - x_i) / (x_{i+1} - x_i), 0, 1)
        if len(self.knots_x) == 1:
            p = self.knots_p.expand_as(z)
        else:
            width = self.knots_x[1:] - self.knots_x[:-1]
            ramp = ((z[:, None] - self.knots_x[:-1]) / width).clamp(0.0, 1.0)
            p = self.knots_p[0] + (ramp * (self.knots_p[1:] - self.knots_p[:-1])).sum(dim=1)
        return torch.log(p) - torch.log1p(-p)
