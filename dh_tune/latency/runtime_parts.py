"""Time DH-Net in a deployment runtime (ONNX Runtime, OpenVINO) exactly as a deployment runs it.

The network is exported once (fused, fp32, fixed input size) and cut into one graph per part (each
stage, each gate) and one per graph a profile can deploy (`dh_tune.gating.GRAPH_KEYS`); the runtime
runs them; pre-processing, decoding and NMS are the deployment module's own numpy/OpenCV code.
"""
from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..export.dhnet_runtime import decode, load_graph, nms, preprocess
from ..export.graphs import cut, deployment_specs, export_whole, part_specs
from ..gating import GRAPH_KEYS
from ..model import DEPLOY_NMS, DHNet, NMSConfig
from .table import PARTS
from .timing import EXIT_NMS_STEPS, read_steps, time_steps, timing_image

_LOADED: dict[tuple, dict[str, Callable]] = {}


def part_graphs(model: DHNet, imgsz: int, runtime: str, threads: int | None) -> dict[str, Callable]:
    """The runtime's loaded graph per part and per deployable graph, exported once per process for these
    weights, size and threads."""
    digest = hashlib.sha256()
    for t in model.state_dict().values():
        digest.update(t.detach().cpu().numpy().tobytes())
    key = (digest.hexdigest(), imgsz, runtime, threads)
    if key not in _LOADED:
        with tempfile.TemporaryDirectory(prefix="dh-tune-parts-") as tmp:
            whole = export_whole(model, imgsz, Path(tmp) / "whole.onnx")
            specs = {**part_specs(), **deployment_specs()}
            _LOADED[key] = {name: load_graph(runtime, cut(whole, spec, Path(tmp) / f"{name}.onnx"), threads)
                            for name, spec in specs.items()}
    return _LOADED[key]


def measure_parts_runtime(model: DHNet, imgsz: int, runtime: str, *, threads: int | None = None, repeats: int = 60,
                          warmup: int = 10, max_seconds: float = 30.0, nms_config: NMSConfig = DEPLOY_NMS,
                          seed: int = 0, image: np.ndarray | None = None,
                          image_file: Path | None = None) -> dict[str, list[float]]:
    """Milliseconds of each part and each deployable graph (named 'graph:<key>') at batch 1 for `repeats` runs in
    `runtime`, fewer if max_seconds runs out.

    `image` (BGR) is the frame pre-processing and NMS are timed on (default: noise at the input size);
    `image_file`, its file, is read in every run (part "read").
    """
    specs = {**part_specs(), **deployment_specs()}
    graphs = part_graphs(model, imgsz, runtime, threads)
    img = timing_image(imgsz, image, seed)
    anchors, strides = model.anchors_px.cpu().numpy(), [float(s) for s in model.strides]
    env: dict[str, np.ndarray] = {}

    def part(name: str):
        def run() -> None:
            env.update(graphs[name]({k: env[k] for k in specs[name].inputs}))
        return run

    def pre() -> None:
        env["images"] = preprocess(img, imgsz)[0]

    def post(heads: int):  # decode and NMS of the maps of the first `heads` heads (an exit after that head)
        def run() -> None:
            pred = decode([env["p3_map"], env["p4_map"], env["p5_map"]][:heads], anchors[:heads], strides[:heads])
            nms(pred, nms_config.conf, nms_config.iou, nms_config.max_det, nms_config.multi_label,
                nms_config.max_candidates)
        return run

    def graph(name: str, keep: bool = False):  # the parts keep the inputs every graph reads
        def run() -> None:
            out = graphs[name]({k: env[k] for k in specs[name].inputs})
            if keep:
                env.update(out)
        return run

    # Each graph holds its own copy of the weights: a graph is timed right after an untimed run of itself,
    # warm as a deployment that runs it frame after frame, not cold from the other nine. Each exit's decode
    # and NMS run right after the static graph of that exit, on maps it has just written, as in a deployment
    # (on maps already read once they take about half the time).
    steps: list[tuple[str, Callable[[], None]]] = [
        *read_steps(image_file), ("preprocess", pre),
        *((p, part(p)) for p in ("stage1", "gate1", "stage2", "gate2", "stage3"))]
    for g in GRAPH_KEYS:
        steps += [(f"warm:{g}", graph(g)), (f"graph:{g}", graph(g, keep=g in FRESH_MAPS))]
        if g in FRESH_MAPS:
            step_name, heads = FRESH_MAPS[g]
            steps.append((step_name, post(heads)))
    names = tuple(name for name, _ in steps)
    times = time_steps([step for _, step in steps], repeats=repeats, warmup=warmup, max_seconds=max_seconds,
                       names=names)
    return {k: v for k, v in times.items() if not k.startswith("warm:")}


FRESH_MAPS: dict[str, tuple[str, int]] = {"stage1-to1": (EXIT_NMS_STEPS[0], 1), "stage1-2-to2": (EXIT_NMS_STEPS[1], 2),
                                           "stage1-2-3": (PARTS[-1], 3)}
"""The static graph of each exit -> the post-processing step (and its heads) timed on the maps it has just written."""
