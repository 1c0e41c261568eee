"""Measure DH-Net's parts on this device: pre-processing, stage 1, gate 1, stage 2, gate 2, stage 3, NMS.

Parts are timed in pipeline order inside every repeat, so drift of the machine (clock, other
load) hits all of them alike; CUDA work is synchronised around each part. A disturbed measurement
is repeated, and the parts that stay spread out are named in the table.
"""
from __future__ import annotations

import logging
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..data.preprocess import preprocess
from ..gating import GRAPH_KEYS
from ..model import DEPLOY_NMS, DHNet, NMSConfig, postprocess
from .table import PARTS, READ, LatencyTable, PartTiming
from .timing import EXIT_NMS_STEPS, RETRIES, Timings, read_steps, time_steps, time_until_stable, timing_image

logger = logging.getLogger(__name__)


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


def device_info(device: torch.device, threads: int, runtime: str = "torch") -> dict:
    """What identifies the device a table was measured on, and the runtime it was timed in."""
    from ..runtimes import version

    info: dict[str, Any] = {"kind": device.type,
 "threads": threads, "interop_threads": torch.get_num_interop_threads(),
            "torch": torch.__version__, "cpu_model": cpu_model(), "platform": platform.platform(),
            "hostname": platform.node(), "runtime": {"name": runtime, "version": version(runtime) or "unknown"}}
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
        info["name"] = info["cuda_device"]
    else:
        info["cuda_device"] = None
        info["name"] = f"{info['cpu_model']} ({threads} threads)"
    if runtime != "torch":  # profiles are filed by device name: one folder per runtime
        info["name"] = f"{info['name'][:-1]}, {runtime})" if info["name"].endswith(")") else f"{info['name']} ({runtime})"
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def measure_parts(model: DHNet, imgsz: int, *, device: torch.device, batch: int = 1, repeats: int = 60,
                  warmup: int = 10, max_seconds: float = 30.0, image: np.ndarray | None = None,
                  nms: NMSConfig = DEPLOY_NMS, seed: int = 0, image_file: Path | None = None) -> dict[str, list[float]]:
    """Milliseconds per image of each part in eager PyTorch for `repeats` runs (fewer if max_seconds runs out).

    The model is timed inference-folded (Conv+BN fused), as every deployment path runs it. `image` (BGR) is
    the frame pre-processing and NMS are timed on (default: noise at the input size, nothing to resize);
    `image_file`, its file, is read in every run (part "read").
    """
    model = model.to(device).eval().fused()
    img = timing_image(imgsz, image, seed)
    env: dict = {}

    def pre() -> None:
        x = preprocess(img, imgsz, device)
        env["x"] = x.expand(batch, -1, -1, -1).contiguous() if batch > 1 else x

    def stage1() -> None:
        env["s1"] = model.stage1(env["x"])

    def stage2() -> None:
        env["p4"], env["p4_map"] = model.stage2(env["s1"].p3, env["s1"].lateral14)

    def stage3() -> None:
        env["p5_map"] = model.stage3(env["p4"], env["s1"].lateral10)

    def post(heads: int):  # decode and NMS of the maps of the first `heads` heads (an exit after that head)
        return lambda: postprocess([env["s1"].p3_map, env["p4_map"], env["p5_map"]][:heads], model.anchors_px[:heads],
                                   model.strides[:heads], nms)

    reads = read_steps(image_file)
    steps = [*(step for _, step in reads), pre, stage1, lambda: torch.sigmoid(model.gate_logit(0, env["s1"].p3)),
             stage2, lambda: torch.sigmoid(model.gate_logit(1, env["p4"])), stage3, post(3), post(1), post(2)]
    times = time_steps(steps, repeats=repeats, warmup=warmup, max_seconds=max_seconds, sync=lambda: _sync(device),
                       names=(*(name for name, _ in reads), *PARTS, *EXIT_NMS_STEPS))
    return {part: [t / batch for t in v] for part, v in times.items()}


def latency_table(model: DHNet, imgsz: int, *, device: torch.device | None = None, threads: int | None = None,
                  batch: int = 1, repeats: int = 60, warmup: int = 10, max_seconds: float = 30.0,
                  checkpoint_sha256: str | None = None, scale_name: str | None = None,
                  runtime: str = "torch", image: np.ndarray | None = None, image_file: Path | None = None,
                  retries: int = RETRIES) -> LatencyTable:
    """Measure this device in `runtime` (torch, onnxruntime, openvino) and return its latency table.

    `image` is the frame to time on (default noise at the input size); `image_file`, the file it was read from,
    is read in every run too and priced as the part "read" (a deployment reads each frame it is given).

    Deployment runtimes run on the CPU at batch 1 with `threads` threads (default: torch's thread count);
    their tables also time every graph a profile can deploy, as deployed (`LatencyTable.graphs`). A
    disturbed measurement is repeated up to `retries` times (each up to max_seconds); steps that stay
    spread out are listed in ``measurement.unstable_parts`` and named in one warning.
    """
    device = device or torch.device("cpu")
    if runtime != "torch" and (device.type != "cpu" or batch != 1):
        raise ValueError(f"runtime {runtime} is timed on the CPU at batch 1")
    frame = timing_image(imgsz, image)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        used_threads = torch.get_num_threads()

        def run() -> Timings:
            if runtime == "torch":
                return measure_parts(model, imgsz, device=device, batch=batch, repeats=repeats, warmup=warmup,
                                     max_seconds=max_seconds, image=frame, image_file=image_file)
            from .runtime_parts import measure_parts_runtime

            return measure_parts_runtime(model, imgsz, runtime, threads=used_threads, repeats=repeats,
                                         warmup=warmup, max_seconds=max_seconds, image=frame, image_file=image_file)

        times, unstable, attempts = time_until_stable(run, retries=retries)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous)
    timings = {p: PartTiming(median_ms=float(np.median(v)), p90_ms=float(np.percentile(v, 90)), repeats=len(v),
                             mean_ms=float(np.mean(v)), min_ms=float(np.min(v)), p99_ms=float(np.percentile(v, 99)))
               for p, v in times.items()}
    info = device_info(device, used_threads, runtime)
    if unstable:
        logger.warning("timings of %s on %s stayed spread out after %d attempts (a busy machine?); the "
                       "table marks them unstable", ", ".join(unstable), info["name"], attempts)
    parts = {p: timings[p] for p in (*PARTS, READ) if p in timings}
    graphs = {g: timings[f"graph:{g}"] for g in GRAPH_KEYS if f"graph:{g}" in timings}
    exit_nms = {name.split(":")[1]: timings[name] for name in EXIT_NMS_STEPS}
    return LatencyTable(
        device=info,
        model={"scale": scale_name or [model.scale.depth, model.scale.width], "nc": model.nc, "imgsz": imgsz,
               "batch": batch, "checkpoint_sha256": checkpoint_sha256},
        parts=parts,
        graphs=graphs,
        exit_nms=exit_nms,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        measurement={"warmup": warmup, "interleaved": True, "synchronized": device.type == "cuda", "fused": True,
                     "dh_tune": __version__, "seconds": round(seconds, 3), "runtime": runtime,
                     "frame": {"width": int(frame.shape[1]), "height": int(frame.shape[0]), "noise": image is None,
                               "file": None if image_file is None else Path(image_file).name},
                     "attempts": attempts, "unstable_parts": unstable},
    )
