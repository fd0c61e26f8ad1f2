"""What the families fitted in closed form share: a linear readout over their features.

A closed-form family (``rocket``, ``summary``) learns no kernels by gradient steps. It
turns each patient into a fixed vector of features (``features(x, valid)``), possibly
after an unsupervised first step (``fit_biases``: statistics of the inputs, no outcome),
and its logit is one linear readout of those features and of the patient's static
covariates when the cohort has them (``with_static``), fitted by ridge regression. That
makes it cheap enough to fit once per cross-validation fold beside the trained networks
(``patientcnn.partner``), where a stacking ensemble blends them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

RIDGE_PENALTIES = np.logspace(-3, 3, 10)
# The static covariates' columns are scaled by this after standardisation, so that the one
# ridge penalty, sized for thousands of kernel summaries, does not shrink the few covariates
# to nothing (a penalty 100x smaller for them)
STATIC_BOOST = 10.0


class ClosedFormNetwork(nn.Module):
    """Base class: subclasses define ``features``, ``self.seq_len``, ``self.static_features``
    (``models.layers.static_width``) and ``self.readout = nn.Linear(n_features + S, 1)``."""

    closed_form = True  # fitted by ``fit``, never by gradient steps (a partner network)
    # whether the logit has a gradient in the series, so integrated gradients can
    # attribute it (``patientcnn.explain``); a family whose features count threshold
    # crossings (rocket) has none
    differentiable = False
    readout: nn.Linear
    static_features: int

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, static: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.readout(self.with_static(self.features(x, valid), static)).squeeze(1)

    def with_static(self, features: torch.Tensor, static: torch.Tensor | None) -> torch.Tensor:
        """The readout's input: the features, then the static covariates (if any)."""
        if not self.static_features:
            return features
        if static is None:
            raise ValueError(
                f"this network was fitted with {self.static_features} static covariates; "
                "pass them as forward(x, valid, static)"
            )
        return torch.cat([features, static.to(features.dtype)], dim=1)

    def features(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fit_biases(self, x: torch.Tensor, valid: torch.Tensor, seed: int = 0) -> None:
        """The unsupervised first step (no outcome); nothing by default."""

    @torch.no_grad()
    def fit(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        y: np.ndarray,
        seed: int = 0,
        static: torch.Tensor | None = None,
    ) -> None:
        """Fit on training patients: ``fit_biases``, then the ridge readout."""
        self.fit_biases(x, valid, seed)
        features = self.with_static(self.features(x, valid), static)
        self.set_readout(*ridge_readout(features.double().numpy(), y, self.static_features))

    @torch.no_grad()
    def set_readout(self, weight: np.ndarray, intercept: float) -> None:
        """The linear logit over ``features`` (and the static covariates): (n_features + S,)
        weights and an intercept."""
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


def ridge_readout(
    features: np.ndarray, y: np.ndarray, static_columns: int = 0
) -> tuple[np.ndarray, float]:
    """Weights and intercept of a ridge regression of +-1 outcomes on standardised features,
    its penalty chosen by leave-one-out error; returned in the raw features' units. The
    last ``static_columns`` columns (static covariates) are penalised less (STATIC_BOOST)."""
    from sklearn.linear_model import RidgeClassifierCV

    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0
    boost = np.ones(features.shape[1])
    if static_columns:
        boost[-static_columns:] = STATIC_BOOST
    ridge = RidgeClassifierCV(alphas=RIDGE_PENALTIES).fit((features - mean) / scale * boost, y)
    weight = ridge.coef_.ravel() * boost / scale
    return weight, float(ridge.intercept_[0] - weight @ mean)
