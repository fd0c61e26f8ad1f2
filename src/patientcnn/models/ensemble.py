"""Several trained networks answering as one, with the calibration on top.

The mean of the members' logits, blended with the mean of the partners' logits when the
run fitted partners (``w (a z + b) + (1 - w) (c z' + d)``, see ``patientcnn.partner``),
goes through the calibration (``scale * z + shift``, or the isotonic knots; see
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
        partners: list[nn.Module] | None = None,
        blend: dict | None = None,
    ) -> None:
        super().__init__()
        calibration = calibration or {"scale": 1.0, "shift": 0.0}
        self.members = nn.ModuleList(members)
        self.partners = nn.ModuleList(partners or [])
        blend = blend or {"weight": 1.0, "networks": [1.0, 0.0], "partners": [0.0, 0.0]}
        w, (a, b), (c, d) = float(blend["weight"]), blend["networks"], blend["partners"]
        # the blend as one linear map: w a z + (1 - w) c z' + w b + (1 - w) d
        self.register_buffer("mix", torch.tensor([w * a, (1 - w) * c, w * b + (1 - w) * d]))
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
        if len(self.partners) == 0:
            return z
        z_partners = torch.stack([m(*inputs).float() for m in self.partners]).mean(dim=0)
        return self.mix[0] * z + self.mix[1] * z_partners + self.mix[2]

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
