"""Imputation and standardisation fitted on training patients only.

The fitted state is plain lists and strings, so it travels inside the checkpoint and
loads with ``torch.load(weights_only=True)``; ``from_state`` rebuilds the object.
"""

from __future__ import annotations

import numpy as np

from patientcnn.errors import UserError

IMPUTE_STRATEGIES = ("ffill", "mean", "zero")


class Preprocessor:
    """Impute missing values, standardise each feature, optionally add missingness channels.

    ``impute='ffill'`` carries the last observation forward within a patient (never
    backwards in time) and falls back to the training mean before the first observation;
    ``'mean'`` uses the training mean, ``'zero'`` a literal 0 before standardising.
    Padding steps are set to 0 after standardising, so they look like an average value
    and the model's masking removes them.
    """

    def __init__(
        self,
        impute: str = "ffill",
        standardize: bool = True,
        missing_indicators: bool = False,
    ) -> None:
        if impute not in IMPUTE_STRATEGIES:
            raise UserError(
                f"data.preprocess.impute must be one of {IMPUTE_STRATEGIES}, got {impute!r}"
            )
        self.impute = impute
        self.standardize = bool(standardize)
        self.missing_indicators = bool(missing_indicators)
        self.features: list[str] | None = None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, x: np.ndarray, features: list[str]) -> Preprocessor:
        """Learn per-feature mean and std from observed values of (training) patients."""
        observed = ~np.isnan(x)
        counts = observed.sum(axis=(0, 1))
        empty = [name for name, n in zip(features, counts, strict=True) if n == 0]
        if empty:
            raise UserError(
                f"feature(s) {', '.join(empty)} have no observed value in the training patients; "
                "drop them with data.features=[...]"
            )
        self.features = list(features)
        self.mean = np.nanmean(x, axis=(0, 1)).astype(np.float64)
        std = np.nanstd(x, axis=(0, 1)).astype(np.float64)
        self.std = np.where(std > 1e-8, std, 1.0)
        return self

    @property
    def output_features(self) -> list[str]:
        self._check_fitted()
        names = list(self.features)
        if self.missing_indicators:
            names += [f"{name}__observed" for name in self.features]
        return names

    def transform(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(N, L, C) with NaN -> (N, L, C') float32 with no NaN; ``valid`` is (N, L)."""
        self._check_fitted()
        if x.shape[2] != len(self.features):
            raise UserError(
                f"expected {len(self.features)} features ({', '.join(self.features)}), got {x.shape[2]}"
            )
        observed = ~np.isnan(x)
        out = forward_fill(x) if self.impute == "ffill" else x.copy()
        fallback = 0.0 if self.impute == "zero" else self.mean
        out = np.where(np.isnan(out), fallback, out)
        if self.standardize:
            out = (out - self.mean) / self.std
        out = np.where(valid[:, :, None], out, 0.0).astype(np.float32)
        if self.missing_indicators:
            out = np.concatenate([out, observed.astype(np.float32)], axis=2)
        return out

    def state(self) -> dict:
        self._check_fitted()
        return {
            "impute": self.impute,
            "standardize": self.standardize,
            "missing_indicators": self.missing_indicators,
            "features": list(self.features),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict) -> Preprocessor:
        obj = cls(state["impute"], state["standardize"], state["missing_indicators"])
        obj.features = list(state["features"])
        obj.mean = np.asarray(state["mean"], dtype=np.float64)
        obj.std = np.asarray(state["std"], dtype=np.float64)
        return obj

    def _check_fitted(self) -> None:
        if self.features is None:
            raise RuntimeError("Preprocessor is not fitted; call fit() on training patients first")


def forward_fill(x: np.ndarray) -> np.ndarray:
    """Carry each feature's last observed value forward along time (axis 1), vectorised."""
    steps = np.arange(x.shape[1])[None, :, None]
    last_seen = np.where(~np.isnan(x), steps, 0)
    np.maximum.accumulate(last_seen, axis=1, out=last_seen)
    return np.take_along_axis(x, last_seen, axis=1)
