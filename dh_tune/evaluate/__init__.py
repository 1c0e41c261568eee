"""Detection metrics: COCO-exact AP from match flags and the exit-level evaluation cache.

Only numpy is imported here, so ``from dh_tune.evaluate import average_precision`` stays cheap.
"""
from __future__ import annotations

from dh_tune.evaluate.ap import ap_from_matches, average_precision
from dh_tune.evaluate.matching import IOU_THRESHOLDS, match_image

__all__ = ["IOU_THRESHOLDS", "ap_from_matches", "average_precision", "match_image"]
