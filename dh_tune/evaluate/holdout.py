"""Calibration and test images: profiles are chosen on one set and reported on another they never saw.

Choosing the best of hundreds of threshold profiles on the images that then score it biases the score
upward; a held-out test set removes that bias. The split is stratified by the images' gate labels
(paper Eq. 3-7) so both halves need the deep heads equally often, and it is deterministic in its seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import DataError, Dataset, ImageRecord
from ..data.stats import image_head_labels
from .exit_cache import dataset_hash


def stratified_split(strata: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (calibration, test) of N items: `test_fraction` of every stratum goes to test (to within one).

    Items are shuffled within their stratum by a seeded generator, laid end to end stratum by stratum, and
    every item where floor((i + 1) * f) steps up goes to test (systematic sampling): each stratum and the
    total get their share rounded, and the same seed always gives the same split.
    """
    strata = np.asarray(strata).reshape(-1)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.permutation(len(strata)), strata))  # by stratum, random within it
    steps = np.floor(np.arange(1, len(strata) + 1) * test_fraction) > np.floor(np.arange(len(strata)) * test_fraction)
    return np.sort(order[~steps]), np.sort(order[steps])


@dataclass(frozen=True)
class Holdout:
    """Which of the evaluation images choose a profile (calibration) and which report on it (test)."""

    calibration: np.ndarray  # indices into the evaluation records
    test: np.ndarray
    source: str  # how the test images were found
    seed: int
    test_fraction: float | None  # share of the validation split held out (None: the dataset's own test split)
    calibration_sha256: str
    test_sha256: str

    def to_dict(self) -> dict[str, Any]:
        """What a profile records of the split: sizes, seed, source and a hash of each image list."""
        return {"source": self.source, "seed": self.seed, "test_fraction": self.test_fraction,
                "stratified_by": "gate labels (Eq. 3-7)", "calibration_images": len(self.calibration),
                "test_images": len(self.test), "calibration_sha256": self.calibration_sha256,
                "test_sha256": self.test_sha256}


def holdout_records(ds: Dataset, *, val_split: str, test_split: str | None, val_limit: int | None, imgsz: int,
                    eps: float, test_fraction: float, seed: int) -> tuple[list[ImageRecord], Holdout]:
    """The evaluation images and their split: the validation split calibrates and the dataset's test split
    tests when it has one; otherwise the validation split is divided, stratified by gate labels."""
    val = list(ds.splits[val_split])[:val_limit] if val_limit else list(ds.splits[val_split])
    test = list(ds.splits.get(test_split) or []) if test_split and test_split != val_split else []
    if test:
        records = val + test
        calibration, held = np.arange(len(val)), np.arange(len(val), len(records))
        source, fraction = f"the dataset's '{test_split}' split", None
    else:
        records = val
        labels = image_head_labels(val, imgsz, eps).numpy().astype(np.int64)
        strata = labels @ (1 << np.arange(labels.shape[1]))
        calibration, held = stratified_split(strata, test_fraction, seed)
        source, fraction = f"the '{val_split}' split divided", test_fraction
    if not len(calibration) or not len(held):
        raise DataError(f"{ds.root}: split '{val_split}' has {len(val)} image(s), too few to choose profiles on some "
                        f"and test them on others (add images, or a '{test_split}' split)")
    return records, Holdout(calibration, held, source, seed, fraction,
                            dataset_hash([records[i] for i in calibration]), dataset_hash([records[i] for i in held]))
