"""How many search trials run at once: the cluster's nodes against one trial's Ray Train worker group.

A trial of several workers is its Ray Train workers (CPUs each and, on GPU pipelines, one GPU each) plus the
trial's own token CPU share; a one-worker trial trains in its own process, which then holds the worker's CPUs
(and GPU) and no share beside them. Ray Train gang-schedules a trial's workers in one placement group, so a trial starts with all of them
or not at all; running no more trials than the nodes hold whole means no trial's workers wait on each other
or on another trial's.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..ray_setup import ResourceError

TRIAL_CPU = 0.01
"""CPU share of a trial's own process: it only waits for its TorchTrainer, the workers hold the real CPUs."""
_TOL = 1e-9


@dataclass(frozen=True)
class NodeResources:
    """What one alive Ray node offers."""

    cpus: float
    gpus: float = 0.0


@dataclass(frozen=True)
class TrialShape:
    """What one trial asks for: its worker group and its own share."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float = 0.0
    trial_cpus: float = TRIAL_CPU

    @property
    def in_process(self) -> bool:
        """The trial trains in its own process (one worker, no share of its own), not through a TorchTrainer."""
        return self.trial_cpus == 0

    def describe(self) -> str:
        gpu = f", {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        if self.in_process:
            return f"1 worker in the trial's process ({self.cpus_per_worker:g} CPU{gpu})"
        return f"{self.workers} worker(s) x ({self.cpus_per_worker:g} CPU{gpu}) + {self.trial_cpus:g} CPU"

    def resources(self) -> dict[str, float]:
        """What the Tune trial itself asks for: the worker's CPUs (and GPU) in process, else its token share."""
        if not self.in_process:
            return {"CPU": self.trial_cpus}
        return {"CPU": self.cpus_per_worker, **({"GPU": self.gpus_per_worker} if self.gpus_per_worker else {})}


@dataclass(frozen=True)
class ConcurrencyPlan:
    """How many trials run at once, how many the cluster holds, and what sets the number."""

    concurrent: int
    cluster_fits: int
    limited_by: str  # "cluster", "search.max_concurrent" or "trials"
    shape: TrialShape

    def describe(self) -> str:
        return (f"{self.concurrent} trial(s) at once (set by {self.limited_by}; the cluster holds "
                f"{self.cluster_fits} of {self.shape.describe()})")


def _worker_slots(node: NodeResources, shape: TrialShape, shares: int) -> int:
    """Workers of `shape` that fit on the node beside `shares` trial shares; -1 when the shares alone do not fit."""
    cpus = node.cpus - shares * shape.trial_cpus
    if cpus < -_TOL:
        return -1
    slots = math.floor((cpus + _TOL) / shape.cpus_per_worker)
    if shape.gpus_per_worker > 0:
        slots = min(slots, math.floor((node.gpus + _TOL) / shape.gpus_per_worker))
    return slots


def fits(nodes: Sequence[NodeResources], shape: TrialShape, trials: int) -> bool:
    """True when `trials` trials fit the nodes at once, each worker whole on one node.

    Each trial's share goes where it costs the fewest worker slots (ties: the node with the most CPUs);
    the workers then take the slots left. A greedy placement: it never claims a fit that does not exist.
    """
    if trials <= 0:
        return True
    shares = [0] * len(nodes)
    for _ in range(trials):
        def cost(i: int) -> tuple[int, float]:
            after = _worker_slots(nodes[i], shape, shares[i] + 1)
            return (_worker_slots(nodes[i], shape, shares[i]) - after if after >= 0 else 1 << 30, -nodes[i].cpus)

        if not nodes:
            return False
        best = min(range(len(nodes)), key=cost)
        if _worker_slots(nodes[best], shape, shares[best] + 1) < 0:
            return False
        shares[best] += 1
    return sum(_worker_slots(n, shape, s) for n, s in zip(nodes, shares)) >= trials * shape.workers


def cluster_capacity(nodes: Sequence[NodeResources], shape: TrialShape) -> int:
    """The most trials of `shape` the nodes hold at once (0 when not even one fits)."""
    total_cpu = sum(n.cpus for n in nodes)
    bound = math.floor((total_cpu + _TOL) / (shape.workers * shape.cpus_per_worker + shape.trial_cpus))
    count = 0
    while count < bound and fits(nodes, shape, count + 1):
        count += 1
    return count


def plan_concurrency(nodes: Sequence[NodeResources], shape: TrialShape, trials: int,
                     cap: int | None = None) -> ConcurrencyPlan:
    """Trials at once: what the cluster holds, at most `cap` and the trials to run; ResourceError when the
    cluster cannot hold one trial (refused before anything starts)."""
    capacity = cluster_capacity(nodes, shape)
    if capacity == 0:
        have = ", ".join(f"{n.cpus:g} CPU" + (f" {n.gpus:g} GPU" if n.gpus else "") for n in nodes) or "no node"
        raise ResourceError(f"one search trial needs {shape.describe()}, which no placement on the Ray cluster "
                            f"({have}) holds; use fewer ray.workers or ray.cpus_per_worker, or join a bigger "
                            "cluster with --ray-address")
    limits = [(capacity, "cluster"), (max(trials, 1), "trials")]
    if cap is not None:
        limits.append((cap, "search.max_concurrent"))
    concurrent, limited_by = min(limits, key=lambda x: x[0])
    return ConcurrencyPlan(concurrent, capacity, limited_by, shape)


def cluster_nodes() -> list[NodeResources]:
    """The alive nodes of the Ray cluster this process is connected to."""
    import ray

    return [NodeResources(float(n["Resources"].get("CPU", 0.0)), float(n["Resources"].get("GPU", 0.0)))
            for n in ray.nodes() if n.get("Alive")]


def trial_shape(workers: int, cpus_per_worker: float, gpu: bool, nodes: Sequence[NodeResources]) -> TrialShape:
    """The pipeline's worker group as a trial's shape. One worker trains in the trial's own process (Ray Train's
    controller and worker group would cost ~10 s a trial and a process). Where several workers would fill the
    nodes' CPUs so exactly that trials' token shares cost whole workers, the workers give the share up between
    them (8-GPU, 64-CPU nodes run four 2 x 8-CPU trials each, not three)."""
    if workers == 1:
        return TrialShape(1, cpus_per_worker, 1.0 if gpu else 0.0, trial_cpus=0.0)
    shape = TrialShape(workers, cpus_per_worker, 1.0 if gpu else 0.0)
    shrunk = TrialShape(workers, cpus_per_worker - TRIAL_CPU / workers, shape.gpus_per_worker)
    if shrunk.cpus_per_worker > 0 and cluster_capacity(nodes, shrunk) > cluster_capacity(nodes, shape):
        return shrunk
    return shape
