"""Patient-level, stratified train/val/test splits, and k-fold train/val splits."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from patientcnn.errors import UserError

SPLITS = ("train", "val", "test")
MIN_PER_CLASS = 2  # each split needs both outcomes for AUROC to exist


def stratified_split(y: np.ndarray, val: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Index arrays into ``y`` (one entry per patient) for train, val and test."""
    if not (0 < val < 1 and 0 < test < 1 and val + test < 1):
        raise UserError(
            f"data.split.val={val} and data.split.test={test} must be fractions with val + test < 1"
        )
    counts = np.bincount(y, minlength=2)
    needed = int(np.ceil(MIN_PER_CLASS / min(val, test)))
    if counts.min() < needed:
        raise UserError(
            f"too few patients to split: {counts[1]} positive and {counts[0]} negative; with "
            f"val={val} and test={test} each outcome needs at least {needed} patients "
            f"so that every split holds {MIN_PER_CLASS} of each"
        )
    index = np.arange(len(y))
    rest, test_idx = train_test_split(index, test_size=test, stratify=y, random_state=seed)
    train_idx, val_idx = train_test_split(
        rest, test_size=val / (1 - test), stratify=y[rest], random_state=seed
    )
    return {"train": np.sort(train_idx), "val": np.sort(val_idx), "test": np.sort(test_idx)}


def fold_split(
    y: np.ndarray, test: float, folds: int, fold: int, seed: int
) -> dict[str, np.ndarray]:
    """Fold ``fold`` of ``folds``: the same test patients as ``stratified_split`` with this
    ``test`` and ``seed``; the other patients in stratified folds, fold ``fold`` as val."""
    if not (isinstance(folds, int) and folds >= 2):
        raise UserError(f"data.cv_folds must be an integer of at least 2, got {folds!r}")
    if not 0 < test < 1:
        raise UserError(f"data.split.test={test} must be a fraction between 0 and 1")
    index = np.arange(len(y))
    rest, test_idx = train_test_split(index, test_size=test, stratify=y, random_state=seed)
    counts = np.bincount(y[rest], minlength=2)
    if counts.min() < folds * MIN_PER_CLASS:
        raise UserError(
            f"too few patients for data.cv_folds={folds}: outside the test split there are "
            f"{counts[1]} positive and {counts[0]} negative; each outcome needs at least "
            f"{folds * MIN_PER_CLASS} so that every fold holds {MIN_PER_CLASS} of each"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_pos, val_pos = list(splitter.split(rest, y[rest]))[fold]
    return {
        "train": np.sort(rest[train_pos]),
        "val": np.sort(rest[val_pos]),
        "test": np.sort(test_idx),
    }


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
