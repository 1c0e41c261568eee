"""Measure DH-Net's parts on this device: pre-processing, stage 1, gate 1, stage 2, gate 2, stage 3, NMS.

Parts are timed in pipeline order inside every repeat, so drift of the machine (clock, other
load) hits all of them alike; CUDA work is synchronised around each part.
"""
from __future__ import annotations

import platform
import re
import time
from datetime import datetime, timezone

import numpy as np
import torch

from .. import __version__
from ..data.letterbox import letterbox
from ..model import DEPLOY_NMS, DHNet, NMSConfig, postprocess
from .table import PARTS, LatencyTable, PartTiming


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, platform otherwise)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device, threads: int) -> dict:
    """What identifies the device a table was measured on."""
    info = {"kind": device.type, "threads": threads, "interop_threads": torch.get_num_interop_threads(),
            "torch": torch.__version__, "cpu_model": cpu_model(), "platform": platform.platform(),
            "hostname": platform.node()}
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
        info["name"] = info["cuda_device"]
    else:
        info["cuda_device"] = None
        info["name"] = f"{info['cpu_model']} ({threads} threads)"
    return info


def slug(name: str) -> str:
    """A folder-safe form of a device name: 'Intel(R) Xeon(R) ... (2 threads)' -> 'intel-xeon-...-2-threads'."""
    s = re.sub(r"\((r|tm)\)", "", name.lower())
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")[:80] or "device"


def preprocess(img_bgr: np.ndarray, imgsz: int, device: torch.device) -> torch.Tensor:
    """Letterbox, BGR->RGB, HWC->CHW, scale to [0, 1], add the batch dimension."""
    boxed, _ = letterbox(img_bgr, imgsz)
    x = torch.from_numpy(np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1))).to(device)
    return x.float().div_(255).unsqueeze_(0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def measure_parts(model: DHNet, imgsz: int, *, device: torch.device, batch: int = 1, repeats: int = 60,
                  warmup: int = 10, max_seconds: float = 30.0, source_size: tuple[int, int] | None = None,
                  nms: NMSConfig = DEPLOY_NMS, seed: int = 0) -> dict[str, list[float]]:
    """Milliseconds of each part for `repeats` runs (fewer if max_seconds runs out, at least 5).

    The model is timed inference-folded (Conv+BN fused), as every deployment path runs it.
    """
    model = model.to(device).eval().fused()
    h, w = source_size or (imgsz, imgsz)
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    times: dict[str, list[float]] = {p: [] for p in PARTS}
    start = time.perf_counter()
    for r in range(warmup + repeats):
        stamps = []

        def tick() -> None:
            _sync(device)
            stamps.append(time.perf_counter_ns())

        tick()
        x = preprocess(img, imgsz, device)
        if batch > 1:
            x = x.expand(batch, -1, -1, -1).contiguous()
        tick()
        s1 = model.stage1(x)
        tick()
        torch.sigmoid(model.gate_logit(0, s1.p3))
        tick()
        p4, p4_map = model.stage2(s1.p3, s1.lateral14)
        tick()
        torch.sigmoid(model.gate_logit(1, p4))
        tick()
        p5_map = model.stage3(p4, s1.lateral10)
        tick()
        postprocess([s1.p3_map, p4_map, p5_map], model.anchors_px, model.strides, nms)
        tick()
        if r >= warmup:
            for part, (a, b) in zip(PARTS, zip(stamps, stamps[1:])):
                times[part].append((b - a) / 1e6 / batch)
            if time.perf_counter() - start > max_seconds and r - warmup + 1 >= 5:
                break
    return times


def latency_table(model: DHNet, imgsz: int, *, device: torch.device | None = None, threads: int | None = None,
                  batch: int = 1, repeats: int = 60, warmup: int = 10, max_seconds: float = 30.0,
                  checkpoint_sha256: str | None = None, scale_name: str | None = None) -> LatencyTable:
    """Measure this device and return its latency table for this model and image size."""
    device = device or torch.device("cpu")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        times = measure_parts(model, imgsz, device=device, batch=batch, repeats=repeats, warmup=warmup,
                              max_seconds=max_seconds)
        seconds = time.perf_counter() - t0
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    parts = {p: PartTiming(median_ms=float(np.median(v)), p90_ms=float(np.percentile(v, 90)), repeats=len(v),
                           mean_ms=float(np.mean(v)), min_ms=float(np.min(v))) for p, v in times.items()}
    return LatencyTable(
        device=device_info(device, used_threads),
        model={"scale": scale_name or [model.scale.depth, model.scale.width], "nc": model.nc, "imgsz": imgsz,
               "batch": batch, "checkpoint_sha256": checkpoint_sha256},
        parts=parts,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        measurement={"warmup": warmup, "interleaved": True, "synchronized": device.type == "cuda", "fused": True,
                     "dh_tune": __version__, "seconds": round(seconds, 3)},
    )
