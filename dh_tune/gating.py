"""When a gate has to run: the threshold rule of early exit (paper Eq. 1-2) in one place.

An image continues past gate i when its score is at least the threshold. A threshold at or below 0
lets every image through and one at or above 1 stops every image (sigmoid scores lie in (0, 1)), so
such a gate decides nothing: it is not computed and costs nothing. Both thresholds degenerate make
a static YOLOv5 with one, two or three heads.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

Rule = Literal["continue", "stop", "score"]

STATIC_THRESHOLDS: dict[int, tuple[float, float]] = {1: (1.0, 1.0), 2: (0.0, 1.0), 3: (0.0, 0.0)}
"""Thresholds that make a static network ending after head 1, 2 or 3 (no gate computed)."""

STATIC_NAMES: dict[int, str] = {1: "P3 head", 2: "P3+P4 heads", 3: "all heads"}


def gate_rule(threshold: float) -> Rule:
    """'continue' (t <= 0), 'stop' (t >= 1) or 'score' (the gate must run and be compared)."""
    if threshold <= 0.0:
        return "continue"
    if threshold >= 1.0:
        return "stop"
    return "score"


def gates_computed(t1: float, t2: float) -> tuple[bool, bool]:
    """Whether gate 1 and gate 2 run (for the images that reach them) under thresholds (t1, t2)."""
    return gate_rule(t1) == "score", gate_rule(t1) != "stop" and gate_rule(t2) == "score"


def passes(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of the images that continue past a gate with these scores and this threshold."""
    rule = gate_rule(threshold)
    if rule == "score":
        return np.asarray(scores, dtype=np.float64) >= threshold
    return np.full(np.shape(scores), rule == "continue", dtype=bool)


def static_exit(t1: float, t2: float) -> int | None:
    """The exit level every image takes when no gate decides anything (a static network), else None."""
    r1, r2 = gate_rule(t1), gate_rule(t2)
    if r1 == "stop":
        return 1
    if r1 == "continue" and r2 != "score":
        return 2 if r2 == "stop" else 3
    return None
