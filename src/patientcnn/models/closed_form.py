"""What the families fitted in closed form share: a linear readout over their features.

A closed-form family (``rocket``, ``summary``) learns no kernels by gradient steps. It
turns each patient into a fixed vector of features (``features(x, valid)``), possibly
after an unsupervised first step (``fit_biases``: statistics of the inputs, no outcome),
and its logit is one linear readout of those features, fitted by ridge regression. That
makes it cheap enough to fit once per cross-validation fold beside the trained networks
(``patientcnn.partner``), where a stacking ensemble blends them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

RIDGE_PENALTIES = np.logspace(-3, 3, 10)


class ClosedFormNetwork(nn.Module):
    """Base class: subclasses define ``features``, ``self.seq_len`` and
    ``self.readout = nn.Linear(n_features, 1)``."""

    closed_form = True  # fitted by ``fit``, never by gradient steps (a partner network)
    readout: nn.Linear

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x, valid)).squeeze(1)

    def features(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fit_biases(self, x: torch.Tensor, valid: torch.Tensor, seed: int = 0) -> None:
        """The unsupervised first step (no outcome); nothing by default."""

    @torch.no_grad()
    def fit(self, x: torch.Tensor, valid: torch.Tensor, y: np.ndarray, seed: int = 0) -> None:
        """Fit on training patients: ``fit_biases``, then the ridge readout."""
        self.fit_biases(x, valid, seed)
        self.set_readout(*ridge_readout(self.features(x, valid).double().numpy(), y))

    @torch.no_grad()
    def set_readout(self, weight: np.ndarray, intercept: float) -> None:
        """The linear logit over ``features``: (n_features,) weights and an intercept."""
        self.readout.weight.copy_(torch.from_numpy(np.asarray(weight))[None].float())
        self.readout.bias.fill_(float(intercept))

    def readout_row(self, layer: str, in_channels: int, kernel: str, receptive: int) -> dict:
        """The shape table's last row: the features pooled over time, then the linear logit."""
        n_features = self.readout.in_features
        return {
            "layer": layer,
            "in_channels": in_channels,
            "out_channels": 1,
            "kernel": kernel,
            "stride": 1,
            "dilation": 1,
            "padding": "-",
            "groups": 1,
            "length_in": self.seq_len,
            "length_out": 1,
            "receptive_field": receptive,
            "params": n_features + 1,
        }


def ridge_readout(features: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights and intercept of a ridge regression of +-1 outcomes on standardised features,
    its penalty chosen by leave-one-out error; returned in the raw features' units."""
    from sklearn.linear_model import RidgeClassifierCV

    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0
    ridge = RidgeClassifierCV(alphas=RIDGE_PENALTIES).fit((features - mean) / scale, y)
    weight = ridge.coef_.ravel() / scale
    return weight, float(ridge.intercept_[0] - weight @ mean)
