"""Apply a DH-Net with a threshold profile: image in, detections, exit level and time out.

`Predictor.from_profile("budget-20ms.json")` is the small Python API behind `dh_tune.detect`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.letterbox import boxes_from_network
from .latency.measure import preprocess
from .model import DEPLOY_NMS, DHNet, Detections, NMSConfig, postprocess
from .data.letterbox import letterbox_info
from .profiles import Profile, check_checkpoint, load_profile
from .train.checkpoint import file_sha256, load_model


@dataclass
class Prediction:
    """Detections of one image in its own pixels, with the exit level and gate scores behind them."""

    detections: Detections
    exit_level: int
    gate_scores: tuple[float, float]
    time_ms: float


class Predictor:
    """A model, an input size and gate thresholds; call it on BGR uint8 images."""

    def __init__(self, model: DHNet, imgsz: int, thresholds: tuple[float, float], *, nms: NMSConfig = DEPLOY_NMS,
                 device: torch.device | None = None, names: list[str] | None = None) -> None:
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device).eval().fused()  # Conv+BN folded, as YOLOv5 deploys
        self.imgsz, self.thresholds, self.nms = imgsz, thresholds, nms
        self.names = names or [str(i) for i in range(model.nc)]

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, imgsz: int | None = None,
                        thresholds: tuple[float, float] = (0.5, 0.5), **kwargs) -> "Predictor":
        model, ckpt = load_model(checkpoint)
        size = imgsz or int(ckpt["config"]["data"]["imgsz"])
        return cls(model, size, thresholds, names=ckpt.get("names"), **kwargs)

    @classmethod
    def from_profile(cls, profile: str | Path | Profile, checkpoint: str | Path | None = None, **kwargs) -> "Predictor":
        """Load the profile's checkpoint (or check that `checkpoint` is the one it was made for)."""
        prof = profile if isinstance(profile, Profile) else load_profile(profile)
        path = Path(checkpoint) if checkpoint is not None else prof.checkpoint_path()
        check_checkpoint(prof, path, file_sha256(path))
        model, ckpt = load_model(path)
        return cls(model, prof.imgsz, prof.thresholds, names=ckpt.get("names"), **kwargs)

    @torch.inference_mode()
    def __call__(self, image_bgr: np.ndarray) -> Prediction:
        t0 = time.perf_counter()
        x = preprocess(image_bgr, self.imgsz, self.device)
        out = self.model.forward_dynamic(x, self.thresholds)
        det = postprocess(out.maps, self.model.anchors_px, self.model.strides, self.nms)[0]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = (time.perf_counter() - t0) * 1000
        h, w = image_bgr.shape[:2]
        det.boxes = np.asarray(boxes_from_network(det.boxes, letterbox_info(w, h, self.imgsz)), dtype=np.float32)
        scores = out.gate_scores[0].tolist()
        return Prediction(det, int(out.exit_level[0]), (scores[0], scores[1]), elapsed)
