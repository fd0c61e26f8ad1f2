"""Patient-level, stratified splits: a held-out test set, then train/validation folds.

Every split is by patient (a patient's rows never straddle two sets) and stratified by
outcome, so a rare outcome appears in each part.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from patientcnn.errors import UserError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MIN_PER_CLASS = 2  # a test set needs both outcomes, twice, for AUROC to mean anything


AUTO_TEST_SHARE = 0.15
AUTO_TEST_FROM = 1000  # patients; below, every patient trains (cross-validated figures)


def carve_test(y: np.ndarray, test: float | str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(development, test) indices into ``y``.

    ``test='auto'`` holds out ``AUTO_TEST_SHARE`` of a cohort of at least
    ``AUTO_TEST_FROM`` patients and none of a smaller one: there every patient is worth
    more in training, and the cross-validated (out-of-fold) figures are the estimate. No
    test set is made when it would hold fewer than ``MIN_PER_CLASS`` patients of an outcome.
    """
    index = np.arange(len(y))
    if test == "auto":
        if len(y) < AUTO_TEST_FROM:
            log.info(
                "no test split: all %d patients train (data.split.test=auto holds out %.0f%% "
                "from %d patients on); the validation figures are out-of-fold. Pass "
                "data.test_measurements to test on a separate table",
                len(y),
                100 * AUTO_TEST_SHARE,
                AUTO_TEST_FROM,
            )
            return index, index[:0]
        test = AUTO_TEST_SHARE
    if not (isinstance(test, (int, float)) and 0 <= test < 1):
        raise UserError(f"data.split.test={test!r} must be 'auto' or a fraction in [0, 1)")
    counts = np.bincount(y, minlength=2)
    if test == 0:
        return index, index[:0]
    if np.floor(counts.min() * test) < MIN_PER_CLASS:
        log.warning(
            "no test split: with %d positive and %d negative patients, data.split.test=%s "
            "would hold fewer than %d of an outcome; the run reports cross-validated "
            "figures instead. Score a separate test table with data.test_measurements",
            counts[1],
            counts[0],
            test,
            MIN_PER_CLASS,
        )
        return index, index[:0]
    dev, test_idx = train_test_split(index, test_size=test, stratify=y, random_state=seed)
    return np.sort(dev), np.sort(test_idx)


def holdout_split(y: np.ndarray, val: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices into ``y``, stratified; at least one patient of each
    outcome validates."""
    if not 0 < val < 1:
        raise UserError(f"recipe.val_fraction={val} must be a fraction between 0 and 1")
    counts = np.bincount(y, minlength=2)
    size = max(int(round(val * len(y))), 2)
    if counts.min() < 2 or size >= len(y) - 1:
        raise UserError(
            f"too few patients to validate: {counts[1]} positive and {counts[0]} negative"
        )
    train, val_idx = train_test_split(
        np.arange(len(y)), test_size=size, stratify=y, random_state=seed
    )
    return np.sort(train), np.sort(val_idx)


def fold_splits(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K stratified (train, validation) index pairs into ``y``; each patient validates once."""
    if not (isinstance(folds, int) and folds >= 2):
        raise UserError(f"data.cv_folds must be an integer of at least 2, got {folds!r}")
    if np.bincount(y, minlength=2).min() < folds:
        raise UserError(
            f"too few patients for {folds} folds: each outcome needs at least {folds} patients"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(np.sort(t), np.sort(v)) for t, v in splitter.split(np.zeros(len(y)), y)]


def given_split(assignment: np.ndarray, y: np.ndarray, column: str) -> dict[str, np.ndarray]:
    """Indices from a user's split column holding 'train', 'val' and 'test' per patient."""
    values = set(map(str, np.unique(assignment)))
    unknown = values - set(SPLITS)
    if unknown:
        raise UserError(
            f"split column '{column}' may only hold train/val/test, found: {', '.join(sorted(unknown))}"
        )
    parts = {name: np.flatnonzero(assignment.astype(str) == name) for name in SPLITS}
    for name, idx in parts.items():
        if len(np.unique(y[idx])) < 2:
            raise UserError(
                f"split column '{column}': the {name} split needs patients of both outcomes"
            )
    return parts
