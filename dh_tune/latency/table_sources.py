"""Where the latency tables a search or evaluation prices profiles with come from, one per input size: this
device's, measured once per machine and reused, or --device-table files measured elsewhere.

Measured tables are kept by device, runtime version, architecture and timing frame, so every search and
evaluation on one machine shares them.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..fsio import slug
from ..messages import InputError, first_line
from ..model import DHNet
from .measure import device_info, latency_table
from .table import LatencyTable, LatencyTableError

logger = logging.getLogger(__name__)


def arch_key(model: DHNet) -> str:
    """Short name of an architecture: depth, width and classes (latency does not depend on weights)."""
    return f"d{model.scale.depth:g}-w{model.scale.width:g}-nc{model.nc}"


def local_latency_tables(model: DHNet, sizes: Sequence[int], cache_dir: Path, *, threads: int | None = None,
                         max_seconds: float = 5.0, remeasure: bool = False, runtime: str = "torch",
                         image: np.ndarray | None = None, image_file: Path | None = None,
                         progress: bool = True) -> dict[int, LatencyTable]:
    """This device's table per size in `runtime`, measured once per architecture, size, runtime version and
    timing frame and reused from cache_dir (shared by every search on this machine unless `remeasure`).

    `image` is a representative frame (a validation image): its size sets the resize cost of pre-processing;
    `image_file`, the file it was read from, prices reading each frame (part "read").
    """
    info = device_info(torch.device("cpu"), threads or torch.get_num_threads(), runtime)
    name = slug(info["name"])
    version = slug(torch.__version__) if runtime == "torch" else slug(f"{runtime}-{info['runtime']['version']}")
    out: dict[int, LatencyTable] = {}
    for s in sizes:
        prefix = "torch-" if runtime == "torch" else ""
        # What the table holds: fused parts, each exit's own NMS, and for a runtime its deployable graphs, warm,
        # and each exit's NMS on maps fresh from its graph.
        kind = "fused-exitnms-p99" if runtime == "torch" else "fused-graphs-warm-freshnms-p99"
        frame = "" if image is None else f"-frame{image.shape[1]}x{image.shape[0]}-{_digest(image)}"
        if image is not None and image_file is not None:  # and the read of its file, as stored (format, size)
            frame += f"-read{Path(image_file).suffix.lower().lstrip('.')}{Path(image_file).stat().st_size}"
        path = Path(cache_dir) / f"{name}-{prefix}{version}-{arch_key(model)}-{kind}-{s}{frame}.json"
        if path.is_file() and not remeasure:
            try:
                out[s] = LatencyTable.load(path)
            except LatencyTableError as exc:  # a cache: a damaged copy is measured again, not fatal
                logger.warning("%s; measuring again", first_line(exc))
            else:
                if progress:
                    logger.info("latency table for %sx%s reused from %s", s, s, path)
                continue
        if progress:
            logger.info("measuring this device at %sx%s in %s ...", s, s, runtime)
        table = latency_table(model, s, threads=threads, repeats=40, max_seconds=max_seconds, runtime=runtime,
                              image=image, image_file=image_file)
        table.save(path)
        out[s] = table
    return out


def _digest(image: np.ndarray) -> str:
    """Short content hash of the timing frame: a table timed on another frame is not reused."""
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
                             f"(measure it with python -m dh_tune.latency --runtime {runtime})")
        runtime = timed_in
        tables[int(t.model["imgsz"])] = t
    return {s: t for s, t in tables.items() if s in sizes}
