"""Does a profile still keep its latency here? Re-time this device now and compare with the profile's promise.

A profile promises a mean and a p90 latency per frame from a latency table timed when it was made; the
machine since may have changed (another runtime version, a new neighbour on the host, thermal limits).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..latency import latency_stats
from ..latency.measure import latency_table
from ..messages import first_line

logger = logging.getLogger(__name__)


@dataclass
class LatencyCheck:
    """A profile's promised latency beside what this device's table, timed now, predicts for the same exits.

    Drift is now / promised - 1 in percent: positive when this device is slower than the profile says.
    """

    profile: str
    device: str
    profile_device: str
    same_device: bool
    runtime: str
    imgsz: int
    thresholds: tuple[float, float]
    exit_shares: tuple[float, float, float]
    promised_mean_ms: float
    promised_p90_ms: float
    now_mean_ms: float
    now_p90_ms: float
    now_p99_ms: float
    drift_mean_pct: float
    drift_p90_pct: float
    profile_created_at: str
    profile_table_created_at: str | None
    timed_at: str
    frame: str
    repeats: int
    unstable_parts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (tuples as lists; a p99 the table cannot give is None)."""
        out = asdict(self)
        out["thresholds"], out["exit_shares"] = list(self.thresholds), list(self.exit_shares)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def _drift_pct(now: float, promised: float) -> float:
    """100 * (now / promised - 1); NaN when the promise is not a positive number."""
    return 100.0 * (now / promised - 1.0) if promised > 0 else math.nan


def _timing_frame(ckpt: dict[str, Any], image: str | Path | None) -> tuple[np.ndarray | None, Path | None, str]:
    """The frame to time reading and pre-processing on, its file and how it was found: `image`, else the first
    readable image of the checkpoint's validation split (what the search timed), else None (noise at the input
    size, no file to read)."""
    from ..data import load_dataset
    from ..data.images import first_readable
    from ..latency.frame import timing_frame
    from ..messages import InputError
    from ..model.checkpoint import checkpoint_val_split

    if image is not None:
        found = first_readable([Path(image)])
        if found is None:
            raise InputError(f"{image}: not a readable image")
        return found[0], found[1], str(image)
    try:
        ds = load_dataset(ckpt["dataset"])
        split = checkpoint_val_split(ckpt)
        records = ds.splits[split if split in ds.splits else next(iter(ds.splits))]
    except (KeyError, TypeError, ValueError, OSError, StopIteration) as exc:
        logger.info("no validation image to time on (%s); timing on noise", first_line(exc))
        return None, None, "noise at the input size (the checkpoint's dataset is not here)"
    found = timing_frame(r.path for r in records)
    if found is None:
        return None, None, "noise at the input size (no readable validation image)"
    return found[0], found[1], str(found[1])


def check_latency(profile_path: str | Path, *, threads: int | None = None, repeats: int = 40,
                  max_seconds: float = 5.0, image: str | Path | None = None) -> LatencyCheck:
    """Time this device now for the profile (its checkpoint, size and runtime) and compare with its promise.

    The table is timed afresh, never taken from the cache; a profile made for another device is checked all
    the same (`same_device` says so). `image` is the frame pre-processing is timed on (default: the first
    image of the checkpoint's validation split, as the search timed it, else noise).
    """
    from ..model.checkpoint import file_sha256, load_model
    from ..runtimes import resolve
    from ..threshold_profiles import ProfileError, check_checkpoint, load_profile

    prof = load_profile(profile_path)
    checkpoint = prof.checkpoint_path()
    if not checkpoint.exists():
        raise ProfileError(f"{prof.path}: its checkpoint {checkpoint} is missing; copy it along with the profile "
                           "(same relative path)")
    check_checkpoint(prof, checkpoint, file_sha256(checkpoint))
    model, ckpt = load_model(checkpoint)
    frame, frame_file, frame_name = _timing_frame(ckpt, image)
    runtime = resolve(prof.runtime)
    table = latency_table(model, prof.imgsz, threads=threads, repeats=repeats, max_seconds=max_seconds,
                          runtime=runtime, image=frame, image_file=frame_file, checkpoint_sha256=prof.checkpoint_sha256)
    expected = prof.doc["expected"]
    s1, s2, s3 = (float(s) for s in expected["exit_shares"])
    stats = latency_stats((s1, s2, s3), table, prof.thresholds)
    promised_mean, promised_p90 = float(expected["latency_mean_ms"]), float(expected["latency_p90_ms"])
    profile_device = str(prof.doc["device"]["name"])
    return LatencyCheck(
        profile=str(prof.path), device=table.device_name, profile_device=profile_device,
        same_device=profile_device == table.device_name, runtime=runtime, imgsz=prof.imgsz,
        thresholds=prof.thresholds, exit_shares=(s1, s2, s3), promised_mean_ms=promised_mean,
        promised_p90_ms=promised_p90, now_mean_ms=stats["mean"], now_p90_ms=stats["p90"], now_p99_ms=stats["p99"],
        drift_mean_pct=_drift_pct(stats["mean"], promised_mean), drift_p90_pct=_drift_pct(stats["p90"], promised_p90),
        profile_created_at=str(prof.doc["created_at"]),
        profile_table_created_at=prof.doc["device"].get("table_created_at"), timed_at=table.created_at,
        frame=frame_name, repeats=min(p.repeats for p in table.parts.values()), unstable_parts=table.unstable_parts)


def format_latency_check(check: LatencyCheck) -> str:
    """A short human report: promise, prediction now, drift, when each was timed, and device caveats."""
    where = ("the device it was made for" if check.same_device
             else f"NOT the device it was made for ({check.profile_device}): the drift compares two machines")
    lines = [f"latency check of {check.profile}: {check.imgsz} px, thresholds {check.thresholds[0]:g}/"
             f"{check.thresholds[1]:g}, {check.runtime}",
             f"  this device: {check.device}, {where}",
             "  exit shares h1/h2/h3: " + "/".join(f"{s:.2f}" for s in check.exit_shares),
             f"  {'':4} {'promised':>9} {'now':>9} {'drift':>8}",
             f"  mean {check.promised_mean_ms:9.2f} {check.now_mean_ms:9.2f} {check.drift_mean_pct:+7.1f}%",
             f"  p90  {check.promised_p90_ms:9.2f} {check.now_p90_ms:9.2f} {check.drift_p90_pct:+7.1f}%",
             f"  profile made {check.profile_created_at}, its table timed "
             f"{check.profile_table_created_at or 'at an unrecorded time'}",
             f"  re-timed {check.timed_at}: {check.repeats} runs per part, frame: {check.frame}"]
    if check.unstable_parts:
        lines.append(f"  warning: {', '.join(check.unstable_parts)} stayed spread out while timing (a busy "
                     "machine?): run the check again when the machine is quiet")
    return "\n".join(lines)


__all__ = ["LatencyCheck", "check_latency", "format_latency_check"]
