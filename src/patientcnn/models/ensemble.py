"""Several trained networks answering as one, with the calibration on top.

The mean of the members' logits goes through the calibration ``scale * z + shift``
(see ``patientcnn.calibration``), so ``EnsembleNet(x, valid)`` returns the calibrated
logit that predict, evaluate, the report and export all use. A single network is an
ensemble of one.
"""

from __future__ import annotations

import torch
from torch import nn


class EnsembleNet(nn.Module):
    def __init__(self, members: list[nn.Module], scale: float = 1.0, shift: float = 0.0) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("shift", torch.tensor(float(shift)))

    def member_logits(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(N,) mean of the members' raw logits, before calibration."""
        return torch.stack([m(x, valid).float() for m in self.members]).mean(dim=0)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.scale * self.member_logits(x, valid) + self.shift
