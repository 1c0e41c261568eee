"""What the inner search needs for one trained model: exit tables per deployment size and the
device's latency table for each size (measured here once, or read from --device-table files).
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..data import ImageRecord
from ..evaluate.cache import cached_exit_table
from ..latency import LatencyTable, LatencyTableError
from ..latency.measure import device_info, latency_table, slug
from ..messages import InputError, first_line
from ..model import DHNet
from ..train.checkpoint import file_sha256, load_model
from .inner import DeploymentSpace


def arch_key(model: DHNet) -> str:
    """Short name of an architecture: depth, width and classes (latency does not depend on weights)."""
    return f"d{model.scale.depth:g}-w{model.scale.width:g}-nc{model.nc}"


def local_latency_tables(model: DHNet, sizes: Sequence[int], cache_dir: Path, *, threads: int | None = None,
                         max_seconds: float = 5.0, remeasure: bool = False, runtime: str = "torch",
                         image: np.ndarray | None = None, progress: bool = True) -> dict[int, LatencyTable]:
    """This device's table per size in `runtime`, measured once per architecture, size, runtime version and
    timing frame and reused from cache_dir (shared by every search on this machine unless `remeasure`).

    `image` is a representative frame (a validation image): its size sets the resize cost of pre-processing.
    """
    info = device_info(torch.device("cpu"), threads or torch.get_num_threads(), runtime)
    name = slug(info["name"])
    version = slug(torch.__version__) if runtime == "torch" else slug(f"{runtime}-{info['runtime']['version']}")
    out: dict[int, LatencyTable] = {}
    for s in sizes:
        prefix = "torch-" if runtime == "torch" else ""
        # What the table holds: fused parts, each exit's own NMS, and for a runtime its deployable graphs, warm.
        kind = "fused-exitnms" if runtime == "torch" else "fused-graphs-warm-exitnms"
        frame = "" if image is None else f"-frame{image.shape[1]}x{image.shape[0]}-{_digest(image)}"
        path = Path(cache_dir) / f"{name}-{prefix}{version}-{arch_key(model)}-{kind}-{s}{frame}.json"
        if path.is_file() and not remeasure:
            try:
                out[s] = LatencyTable.load(path)
            except LatencyTableError as exc:  # a cache: a damaged copy is measured again, not fatal
                print(f"warning: {first_line(exc)}; measuring again", file=sys.stderr, flush=True)
            else:
                if progress:
                    print(f"device table for {s}x{s} reused from {path}", file=sys.stderr, flush=True)
                continue
        if progress:
            print(f"measuring this device at {s}x{s} in {runtime} ...", file=sys.stderr, flush=True)
        table = latency_table(model, s, threads=threads, repeats=40, max_seconds=max_seconds, runtime=runtime,
                              image=image)
        table.save(path)
        out[s] = table
    return out


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:10]


def tables_from_files(paths: Sequence[str | Path], sizes: Sequence[int],
                      runtime: str | None = None) -> dict[int, LatencyTable]:
    """Tables measured elsewhere, keyed by the image size each was measured at (only the wanted sizes).

    All must be timed in one runtime, `runtime` when it is given.
    """
    tables: dict[int, LatencyTable] = {}
    for p in paths:
        t = LatencyTable.load(p)
        timed_in = t.runtime["name"]
        if runtime is not None and timed_in != runtime:
            raise InputError(f"{p}: timed in {timed_in}, not in --runtime {runtime} "
                             f"(measure it with python -m dh_tune.profile_device --runtime {runtime})")
        runtime = timed_in
        tables[int(t.model["imgsz"])] = t
    return {s: t for s, t in tables.items() if s in sizes}


def deployment_space(checkpoint: str | Path, records: Sequence[ImageRecord], sizes: Sequence[int],
                     latency: dict[int, LatencyTable], *, eps: float, cache_dir: Path,
                     progress: bool = True) -> DeploymentSpace:
    """Exit tables of the checkpoint on the val records at every size that has a latency table."""
    model, _ = load_model(checkpoint)
    sha = file_sha256(checkpoint)
    wanted = sorted((s for s in sizes if s in latency), reverse=True)  # largest first: the longest job starts early

    def build(size: int):
        return cached_exit_table(model, sha, records, size, eps=eps, cache_dir=cache_dir, progress=progress)

    # One size per core, one torch thread each: NMS, matching and Python overhead run in parallel too
    # (about 1.5x faster than one size at a time with all threads on 2 cores).
    workers = max(1, min(len(wanted), torch.get_num_threads()))
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, previous // workers))
    try:
        with ThreadPoolExecutor(workers) as pool:
            tables = dict(zip(wanted, pool.map(build, wanted)))
    finally:
        torch.set_num_threads(previous)
    return DeploymentSpace({s: tables[s] for s in sorted(tables)}, {s: latency[s] for s in sorted(tables)})
