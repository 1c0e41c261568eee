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


Graph = tuple[tuple[int, ...], "int | None"]
"""One deployed graph: the stages it runs, in order, and the gate that ends it (None: no gate)."""


def deepest_head(t1: float, t2: float) -> int:
    """The last head any image can reach under thresholds (t1, t2)."""
    r1, r2 = gate_rule(t1), gate_rule(t2)
    return 1 if r1 == "stop" else 2 if r2 == "stop" else 3


def plan_graphs(t1: float, t2: float) -> list[Graph]:
    """The graphs a deployment runs for (t1, t2): stages cut after every gate that decides something.

    A gate whose threshold decides alone is not computed and the stages around it share one graph, so a
    static profile is one graph. An image that leaves after head k runs the graphs starting at stage <= k.
    """
    rules = (gate_rule(t1), gate_rule(t2))
    last = deepest_head(t1, t2)
    graphs: list[Graph] = []
    current: list[int] = []
    for stage in range(1, last + 1):
        current.append(stage)
        if stage < last and rules[stage - 1] == "score":
            graphs.append((tuple(current), stage))
            current = []
    graphs.append((tuple(current), None))
    return graphs


def graph_key(graph: Graph, last: int) -> str:
    """A name unique to what one graph computes and hands on: 'stage1-gate1', 'stage2-3', and for profiles that
    end before head 3 the head they end at ('stage1-2-to2'): such graphs hand fewer tensors on."""
    stages, gate = graph
    name = "-".join([f"stage{'-'.join(map(str, stages))}"] + ([f"gate{gate}"] if gate else []))
    return name if last == 3 else f"{name}-to{last}"


_CORNERS = (0.0, 0.5, 1.0)  # a threshold that lets every image through, one that scores, one that stops every image

GRAPH_KEYS: tuple[str, ...] = tuple(dict.fromkeys(
    graph_key(g, deepest_head(a, b)) for a in _CORNERS for b in _CORNERS for g in plan_graphs(a, b)))
"""Every graph some profile runs (ten): latency tables of a deployment runtime time each of them."""
