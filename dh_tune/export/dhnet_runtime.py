"""Run an exported DH-Net profile with ONNX Runtime or OpenVINO; needs only numpy, OpenCV and the runtime.

This file is copied into every deployment folder written by `python -m dh_tune.export`:

    python dhnet_runtime.py FOLDER image.jpg ...            # prints detections, exit level and time
    from dhnet_runtime import Detector
    detector = Detector("FOLDER"); result = detector(cv2.imread("image.jpg"))

Early exit as in the paper (Eq. 1-2): stage 1 runs, gate 1's score is compared with its threshold,
stage 2 runs only when the score reaches it, and so on; the heads that ran are decoded and NMS'd.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

MANIFEST = "deploy.json"
KIND = "dh-tune-deployment"
SCHEMA_VERSION = 1
PAD_VALUE = 114
RUNTIMES_FOR_FORMAT: dict[str, tuple[str, ...]] = {"onnx": ("onnxruntime", "openvino"), "openvino": ("openvino",)}
"""Which runtimes can run each exported format (OpenVINO reads ONNX files as well as its own IR)."""

Feeds = dict[str, np.ndarray]


class DeploymentError(ValueError):
    """A deployment folder that cannot be run (one line: the folder or file and the reason)."""


# --- pre- and post-processing: the one implementation; dh-tune's torch paths call these too -------
def fit_size(width: int, height: int, imgsz: int) -> tuple[float, tuple[int, int]]:
    """Scale that makes the longer side imgsz, and the (width, height) the image is resized to."""
    scale = imgsz / max(width, height)
    return scale, (max(1, round(width * scale)), max(1, round(height * scale)))


def resize_to_fit(img: np.ndarray, imgsz: int) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio so the longer side is imgsz; returns (image, scale).

    Shrinking averages areas (small signs survive a 2048 -> 1024 reduction), enlarging is linear.
    """
    h, w = img.shape[:2]
    scale, size = fit_size(w, h, imgsz)
    if size != (w, h):
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return img, scale


def pad_to_square(img: np.ndarray, imgsz: int) -> tuple[np.ndarray, int, int]:
    """Centre a fitted (h, w, c) image on an imgsz x imgsz canvas of grey 114; returns it, pad_x and pad_y."""
    h, w = img.shape[:2]
    pad_x, pad_y = (imgsz - w) // 2, (imgsz - h) // 2
    canvas = np.full((imgsz, imgsz, img.shape[2]), PAD_VALUE, dtype=img.dtype)
    canvas[pad_y:pad_y + h, pad_x:pad_x + w] = img
    return canvas, pad_x, pad_y


def letterbox(img: np.ndarray, imgsz: int) -> tuple[np.ndarray, tuple[float, int, int]]:
    """Fit the longer side to imgsz and pad to a square; returns it and (scale, pad_x, pad_y)."""
    fitted, scale = resize_to_fit(img, imgsz)
    canvas, pad_x, pad_y = pad_to_square(fitted, imgsz)
    return canvas, (scale, pad_x, pad_y)


def to_input(canvas_bgr: np.ndarray) -> np.ndarray:
    """A letterboxed BGR uint8 image as the network input: RGB, CHW, [0, 1] float32, batch of 1."""
    x = np.ascontiguousarray(canvas_bgr[:, :, ::-1].transpose(2, 0, 1)).astype(np.float32) / np.float32(255)
    return x[None]


def preprocess(img_bgr: np.ndarray, imgsz: int) -> tuple[np.ndarray, tuple[float, int, int]]:
    """Letterbox to imgsz (longer side fitted, grey 114 padding), RGB, CHW, [0, 1] float32, batch of 1.

    Returns the input and (scale, pad_x, pad_y) with network = image * scale + pad.
    """
    canvas, placement = letterbox(img_bgr, imgsz)
    return to_input(canvas), placement


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function in x's float dtype, clipped so exp never overflows (exact to float32 precision)."""
    y = np.clip(x, -80.0, 80.0)
    np.negative(y, out=y)
    np.exp(y, out=y)
    y += 1
    return np.divide(1, y, out=y)


def decode_level(raw: np.ndarray, anchors_px: np.ndarray, stride: float) -> np.ndarray:
    """One raw map (B, na*(nc+5), h, w) -> (B, na*h*w, nc+5): xywh in pixels, obj and class probabilities."""
    b, c, h, w = raw.shape
    na = anchors_px.shape[0]
    cells = raw.reshape(b, na, c // na, h, w).transpose(0, 1, 3, 4, 2)
    p = sigmoid(np.ascontiguousarray(cells, dtype=np.float32))
    gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    p[..., :2] = (p[..., :2] * 2 - 0.5 + np.stack((gx, gy), -1)) * np.float32(stride)
    p[..., 2:4] = (p[..., 2:4] * 2) ** 2 * anchors_px.reshape(na, 1, 1, 2).astype(np.float32)
    return p.reshape(b, -1, c // na)


def decode_batch(maps: list[np.ndarray], anchors_px: np.ndarray, strides: list[float]) -> np.ndarray:
    """Raw maps (B, na*(nc+5), h, w) of the heads that ran (a prefix of P3-P5) -> (B, n, nc+5) per image."""
    levels = [decode_level(raw, anchors_px[i], strides[i]) for i, raw in enumerate(maps)]
    return levels[0] if len(levels) == 1 else np.concatenate(levels, 1)


def decode(maps: list[np.ndarray], anchors_px: np.ndarray, strides: list[float]) -> np.ndarray:
    """Raw YOLOv5 maps of one image (1, na*(nc+5), h, w) per head that ran -> (n, nc+5) [xywh px, obj, cls]."""
    if maps[0].shape[0] != 1:
        raise ValueError(f"decode takes the maps of one image, not a batch of {maps[0].shape[0]} (use decode_batch)")
    return decode_batch(maps, anchors_px, strides)[0]


def candidates(pred: np.ndarray, conf: float, multi_label: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xywh boxes, scores (obj x cls) and classes of `pred`'s rows above conf, in row order.

    multi_label: every class above conf; otherwise each row's best class.
    """
    pred = pred[pred[:, 4] > conf]
    scores_all = pred[:, 5:] * pred[:, 4:5]
    if multi_label:
        i, j = (scores_all > conf).nonzero()
        return pred[i, :4], scores_all[i, j], j
    classes = scores_all.argmax(1) if len(pred) else np.zeros(0, np.int64)
    scores = scores_all[np.arange(len(scores_all)), classes]
    keep = scores > conf
    return pred[keep, :4], scores[keep], classes[keep]


def nms(pred: np.ndarray, conf: float, iou: float, max_det: int, multi_label: bool,
        max_candidates: int = 30000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score = obj x cls, confidence filter, class-aware NMS (OpenCV), at most max_det boxes, best first.

    `pred` is (n, nc+5) [x, y, w, h, obj, cls...]; returns boxes xyxy float32, scores float32, classes int64.
    """
    boxes, scores, classes = candidates(pred, conf, multi_label)
    if len(scores) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    if len(scores) > max_candidates:  # the best ones; equal scores keep their order
        top = np.argsort(-scores, kind="stable")[:max_candidates]
        boxes, scores, classes = boxes[top], scores[top], classes[top]
    xywh = boxes.astype(np.float64)
    tl = xywh[:, :2] - xywh[:, 2:] / 2
    s = scores.astype(np.float32)
    c = classes.astype(np.int64)
    # OpenCV's stubs name Sequence[...] where the function takes numpy arrays.
    found = cv2.dnn.NMSBoxesBatched(np.concatenate([tl, xywh[:, 2:]], 1), s, c.astype(np.int32),  # type: ignore[arg-type]
                                    conf, iou)
    keep = np.asarray(found, dtype=np.int64).reshape(-1)
    keep = keep[np.argsort(-s[keep], kind="stable")][:max_det]
    xyxy = np.concatenate([tl[keep], tl[keep] + xywh[keep, 2:]], 1).astype(np.float32)
    return xyxy, s[keep], c[keep]


# --- runtimes ---------------------------------------------------------------------------------
def runtime_version(name: str) -> str | None:
    """Installed version of a runtime package, None when it cannot be imported."""
    try:
        if name == "onnxruntime":
            import onnxruntime
            return str(onnxruntime.__version__)
        if name == "openvino":
            import openvino
            return str(openvino.__version__).split("-")[0]
    except ImportError:
        return None
    raise DeploymentError(f"unknown runtime {name!r} (use one of: onnxruntime, openvino)")


_ORT_SHARED_POOL: list[bool] = []  # [True] once the process-wide ONNX Runtime thread pool exists, [False] if it cannot


def _ort_session(path: Path, threads: int | None, device: str = "cpu"):
    """An ONNX Runtime session (CPU or CUDA) on the process-wide thread pool.

    The graphs of a chain run one after another; with a pool per session, each pool's threads keep
    spinning after its graph finished and starve the next graph (measured 5x slower on 2 cores).
    """
    import onnxruntime as ort
    from onnxruntime.capi import _pybind_state

    provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[device]
    if provider not in ort.get_available_providers():
        raise DeploymentError(f"onnxruntime {ort.__version__} has no {provider} (the CUDA build is the "
                              "onnxruntime-gpu package)")
    if device == "cuda" and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA and cuDNN from their pip packages, where they are installed that way

    if not _ORT_SHARED_POOL:
        try:
            _pybind_state.set_global_thread_pool_sizes(threads or 0, 1)
            _ORT_SHARED_POOL.append(True)
        except Exception:  # noqa: BLE001 - the environment already exists: fall back to non-spinning pools
            _ORT_SHARED_POOL.append(False)
    options = ort.SessionOptions()
    if _ORT_SHARED_POOL[0]:
        options.use_per_session_threads = False
    else:
        options.intra_op_num_threads = threads or 0
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=[provider])


DEVICES = ("cpu", "cuda")


def load_graph(runtime: str, path: Path, threads: int | None = None, device: str = "cpu") -> Callable[[Feeds], Feeds]:
    """A function that runs one graph file on named numpy inputs and returns its named outputs (fp32).

    ONNX Runtime's thread count is fixed by the first graph a process loads. `device` "cuda" runs the
    graph with ONNX Runtime's CUDA provider (inputs and outputs stay numpy arrays in host memory).
    """
    if device not in DEVICES:
        raise DeploymentError(f"unknown device {device!r} (use one of: {', '.join(DEVICES)})")
    if device != "cpu" and runtime != "onnxruntime":
        raise DeploymentError(f"{runtime} runs on the CPU here; device {device!r} needs onnxruntime")
    if runtime == "onnxruntime":
        session = _ort_session(path, threads, device)
        names = [o.name for o in session.get_outputs()]
        return lambda feeds: dict(zip(names, session.run(names, feeds)))
    if runtime == "openvino":
        import openvino as ov
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
        ports = [(o, o.get_any_name()) for o in compiled.outputs]

        def run(feeds: Feeds) -> Feeds:
            results = request.infer(feeds)
            return {name: np.array(results[port]) for port, name in ports}
        return run
    raise DeploymentError(f"unknown runtime {runtime!r} (use one of: onnxruntime, openvino)")


# --- the deployment folder --------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    """SHA-256 of a regular file's bytes; DeploymentError for a folder, device or pipe (reading one never ends)."""
    try:
        mode = Path(path).stat().st_mode
    except OSError as exc:
        raise DeploymentError(f"{path}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise DeploymentError(f"{path}: not a regular file (a folder, device or pipe)")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _NotFinite(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotFinite(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"{text} is not a finite number")
    return value


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Read deploy.json, check its structure, that every file stays inside the folder and matches its checksum."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        doc = json.loads(path.read_text(), parse_constant=_refuse_constant, parse_float=_finite_float)
    except FileNotFoundError:
        raise DeploymentError(f"{folder}: no {MANIFEST} (not a folder written by dh_tune.export)") from None
    except _NotFinite as exc:
        raise DeploymentError(f"{path}: {exc} (a manifest holds finite numbers only)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeploymentError(f"{path}: not JSON ({exc})") from None
    required = {"kind": str, "schema_version": int, "format": str, "runtime": dict, "imgsz": int, "thresholds": list,
                "names": list, "anchors_px": list, "strides": list, "nms": dict, "segments": list, "checksums": dict}
    if not isinstance(doc, dict):
        raise DeploymentError(f"{path}: expected a JSON object")
    for key, kind in required.items():
        if not isinstance(doc.get(key), kind):
            raise DeploymentError(f"{path}: '{key}' missing or not {kind.__name__}")
    if doc["kind"] != KIND or doc["schema_version"] != SCHEMA_VERSION:
        raise DeploymentError(f"{path}: not a {KIND} manifest of schema version {SCHEMA_VERSION}")
    if doc["format"] not in RUNTIMES_FOR_FORMAT:
        raise DeploymentError(f"{path}: unknown format {doc['format']!r}")
    root = folder.resolve()
    for name, sha in doc["checksums"].items():
        file = (folder / name).resolve()
        if not file.is_relative_to(root):
            raise DeploymentError(f"{path}: file {name!r} lies outside the deployment folder")
        if not file.is_file():
            raise DeploymentError(f"{folder}: {name} is missing")
        if file_sha256(file) != sha:
            raise DeploymentError(f"{folder}: {name} does not match its checksum (modified or truncated)")
    for seg in doc["segments"]:
        if seg.get("file") not in doc["checksums"]:
            raise DeploymentError(f"{path}: segment file {seg.get('file')!r} has no checksum")
    return doc


@dataclass
class Result:
    """Detections of one image in its own pixels, the exit level and gate scores (NaN: gate not run)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    exit_level: int
    gate_scores: tuple[float, float]
    time_ms: float
    maps: list[np.ndarray] = field(default_factory=list, repr=False)


class Detector:
    """A deployment folder loaded into one runtime; call it on BGR uint8 images."""

    def __init__(self, folder: str | Path, runtime: str | None = None, *, threads: int | None = None,
                 allow_other_runtime: bool = False, nms_override: dict[str, Any] | None = None,
                 device: str = "cpu") -> None:
        self.folder = Path(folder)
        self.manifest = m = read_manifest(self.folder)
        target = m["runtime"]["name"]
        runnable = RUNTIMES_FOR_FORMAT[m["format"]]
        runtime = runtime or (target if target in runnable else runnable[0])
        if runtime not in runnable:
            raise DeploymentError(f"{self.folder}: {m['format']} graphs cannot run under {runtime} "
                                  f"(runtimes: {', '.join(runnable)})")
        if runtime != target and not allow_other_runtime:
            raise DeploymentError(f"{self.folder}: this profile was chosen with {target} timings; running it under "
                                  f"{runtime} may not meet its budget (allow it with --any-runtime)")
        if runtime_version(runtime) is None:
            raise DeploymentError(f"{self.folder}: runtime {runtime} is not installed (pip install {runtime})")
        self.runtime, self.version = runtime, runtime_version(runtime)
        self.imgsz = int(m["imgsz"])
        self.thresholds = (float(m["thresholds"][0]), float(m["thresholds"][1]))
        self.names = [str(n) for n in m["names"]]
        self.anchors_px = np.asarray(m["anchors_px"], dtype=np.float32)
        self.strides = [float(s) for s in m["strides"]]
        self.nms = {**m["nms"], **(nms_override or {})}
        self.device = device
        self.segments = [(seg, load_graph(runtime, self.folder / seg["file"], threads, device))
                         for seg in m["segments"]]

    def run_network(self, x: np.ndarray) -> tuple[list[np.ndarray], int, tuple[float, float]]:
        """Raw maps of the heads that ran, the exit level (1-3) and the gate scores, for a (1, 3, S, S) input."""
        env: Feeds = {"images": x}
        scores = [float("nan"), float("nan")]
        maps: list[np.ndarray] = []
        for seg, run in self.segments:
            env.update(run({name: env[name] for name in seg["inputs"]}))
            maps += [env[f"p{s + 2}_map"] for s in seg["stages"]]
            gate = seg.get("gate")
            if gate:
                scores[gate - 1] = float(env[f"gate{gate}_score"].reshape(-1)[0])
                if not scores[gate - 1] >= self.thresholds[gate - 1]:
                    break
        return maps, len(maps), (scores[0], scores[1])

    def __call__(self, img_bgr: np.ndarray) -> Result:
        t0 = time.perf_counter()
        x, (scale, pad_x, pad_y) = preprocess(img_bgr, self.imgsz)
        maps, level, scores = self.run_network(x)
        n = self.nms
        boxes, conf, classes = nms(decode(maps, self.anchors_px, self.strides), float(n["conf"]), float(n["iou"]),
                                   int(n["max_det"]), bool(n["multi_label"]), int(n.get("max_candidates", 30000)))
        elapsed = (time.perf_counter() - t0) * 1000
        boxes = (boxes.astype(np.float64) - [pad_x, pad_y, pad_x, pad_y]) / scale
        return Result(boxes.astype(np.float32), conf, classes, level, scores, elapsed, maps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run a dh-tune deployment folder on images (numpy, OpenCV and a runtime).")
    p.add_argument("folder", type=Path, help="folder written by python -m dh_tune.export")
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.add_argument("--runtime", choices=["onnxruntime", "openvino"], default=None,
                   help="runtime (default: the one the profile was chosen for)")
    p.add_argument("--any-runtime", action="store_true", help="allow a runtime other than the profile's")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the runtime (default: its own)")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="cuda: ONNX Runtime's CUDA provider (onnxruntime-gpu); default cpu")
    args = p.parse_args(argv)
    try:
        detector = Detector(args.folder, args.runtime, threads=args.threads, allow_other_runtime=args.any_runtime,
                            device=args.device)
    except DeploymentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.folder}: {detector.runtime} {detector.version}, {detector.imgsz} px, "
          f"thresholds {detector.thresholds}")
    for path in args.images:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            print(f"{path}: cannot be decoded, skipped", file=sys.stderr)
            continue
        r = detector(img)
        found = ", ".join(f"{detector.names[int(c)]} {s:.2f}" for s, c in zip(r.scores, r.classes))
        print(f"{path.name}: exit after head {r.exit_level}, {len(r.scores)} objects, {r.time_ms:.1f} ms  {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
