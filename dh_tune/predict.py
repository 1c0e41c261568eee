"""Apply a DH-Net with a threshold profile: image in, detections, exit level and time out.

`Predictor.from_profile("budget-20ms.json", runtime="openvino")` is the small Python API behind
`dh_tune.detect`; every runtime runs the same early exit and returns the same `Prediction`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.letterbox import boxes_from_network, letterbox_info
from .data.preprocess import preprocess
from .export.dhnet_runtime import Detector
from .model import DEPLOY_NMS, Detections, DHNet, NMSConfig, postprocess
from .model.checkpoint import CheckpointPipeline, file_sha256, load_model
from .runtimes import check_match, resolve
from .threshold_profiles import Profile, ProfileError, check_checkpoint, check_feasible, load_profile


@dataclass
class Prediction:
    """Detections of one image in its own pixels, with the exit level and gate scores behind them."""

    detections: Detections
    exit_level: int
    gate_scores: tuple[float, float]
    time_ms: float


class Predictor:
    """A model, an input size and gate thresholds; call it on BGR uint8 images.

    runtime "torch" runs the fused PyTorch model; "onnxruntime" and "openvino" run exported stage graphs.
    """

    def __init__(self, model: DHNet | None, imgsz: int, thresholds: tuple[float, float], *,
                 nms: NMSConfig = DEPLOY_NMS, device: torch.device | None = None, names: list[str] | None = None,
                 detector: Detector | None = None) -> None:
        if (model is None) == (detector is None):
            raise ValueError("give a torch model or a runtime detector, not both")
        self.device = device or torch.device("cpu")
        # Conv+BN folded, as YOLOv5 deploys
        self.model = model.to(self.device).eval().fused() if model is not None else None
        self.detector = detector
        self.imgsz, self.thresholds, self.nms = imgsz, thresholds, nms
        self.names = names or (detector.names if detector is not None else [str(i) for i in range(self._model().nc)])
        self.runtime = detector.runtime if detector is not None else "torch"

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, imgsz: int | None = None,
                        thresholds: tuple[float, float] = (0.5, 0.5), **kwargs) -> Predictor:
        model, ckpt = load_model(checkpoint)
        size = imgsz or CheckpointPipeline.of(ckpt).imgsz
        return cls(model, size, thresholds, names=ckpt.get("names"), **kwargs)

    @classmethod
    def from_profile(cls, profile: str | Path | Profile, checkpoint: str | Path | None = None, *,
                     runtime: str | None = None, allow_other_runtime: bool = False, allow_infeasible: bool = False,
                     threads: int | None = None, export_dir: str | Path | None = None, nms: NMSConfig = DEPLOY_NMS,
                     **kwargs) -> Predictor:
        """A profile (JSON from the search, or a folder from dh_tune.export) in `runtime` (default: its own).

        A profile chosen with one runtime's timings is refused by another unless `allow_other_runtime`, and
        one that meets no configuration's latency (`"feasible": false`) is refused unless `allow_infeasible`.
        Its checkpoint is the one beside it (never outside its folder) unless `checkpoint` names one.
        The graphs for onnxruntime/openvino are exported once into `export_dir` (default: a cache folder).
        """
        if not isinstance(profile, Profile) and Path(profile).is_dir():  # an exported folder runs as it is
            recorded = Path(profile) / "profile.json"
            if runtime != "torch":
                if recorded.is_file():
                    check_feasible(load_profile(recorded), allow_infeasible)
                return cls._from_folder(Path(profile), runtime, nms, threads, allow_other_runtime)
            if checkpoint is None:
                raise ProfileError(f"{profile}: an exported folder holds no checkpoint; give one to run it in torch")
            profile = recorded
        prof = profile if isinstance(profile, Profile) else load_profile(profile)
        wanted = resolve(runtime or prof.runtime)
        check_match(prof.runtime, wanted, str(prof.path), allow_other_runtime)
        check_feasible(prof, allow_infeasible)
        path = Path(checkpoint) if checkpoint is not None else prof.checkpoint_path()
        if checkpoint is None and not path.exists():
            raise ProfileError(f"{prof.path}: its checkpoint {path} is missing; copy it along with the profile "
                               "(same relative path) or give the checkpoint explicitly (--checkpoint)")
        check_checkpoint(prof, path, file_sha256(path))
        model, ckpt = load_model(path)
        names = ckpt.get("names")
        if wanted == "torch":
            return cls(model, prof.imgsz, prof.thresholds, names=names, nms=nms, **kwargs)
        t1, t2 = prof.thresholds
        folder = Path(export_dir or _export_cache() / f"{prof.checkpoint_sha256[:16]}-{prof.imgsz}-{t1:g}-{t2:g}")
        if not _usable(folder, prof):
            from .export.bundle import export_deployment

            export_deployment(model, prof, folder, "onnx", names=names or [str(i) for i in range(model.nc)],
                           allow_other_runtime=True)
        return cls._from_folder(folder, wanted, nms, threads, allow_other_runtime=True)

    @classmethod
    def exported(cls, model: DHNet, imgsz: int, thresholds: tuple[float, float], runtime: str, folder: str | Path,
                 *, names: list[str] | None = None, nms: NMSConfig = DEPLOY_NMS,
                 threads: int | None = None) -> Predictor:
        """`model` with these thresholds exported into `folder` and run by onnxruntime or openvino (no profile)."""
        from .export.bundle import export_folder

        names = names or [str(i) for i in range(model.nc)]
        export_folder(model, folder, "onnx", imgsz=imgsz, thresholds=thresholds, names=names, runtime=runtime)
        return cls._from_folder(Path(folder), runtime, nms, threads, allow_other_runtime=False)

    @classmethod
    def _from_folder(cls, folder: Path, runtime: str | None, nms: NMSConfig, threads: int | None,
                     allow_other_runtime: bool) -> Predictor:
        from .export.bundle import check_manifest
        from .export.dhnet_runtime import MANIFEST

        detector = Detector(folder, runtime, threads=threads, allow_other_runtime=allow_other_runtime,
                            nms_override={"conf": nms.conf, "iou": nms.iou, "max_det": nms.max_det,
                                          "multi_label": nms.multi_label, "max_candidates": nms.max_candidates})
        check_manifest(detector.manifest, str(folder / MANIFEST))  # checksums were verified by the Detector
        return cls(None, detector.imgsz, detector.thresholds, nms=nms, names=detector.names, detector=detector)

    def __call__(self, image_bgr: np.ndarray) -> Prediction:
        if self.detector is not None:
            r = self.detector(image_bgr)
            return Prediction(Detections(r.boxes, r.scores, r.classes), r.exit_level, r.gate_scores, r.time_ms)
        return self._torch(image_bgr)

    def _model(self) -> DHNet:
        """The torch model; only called on a predictor built from one."""
        if self.model is None:
            raise RuntimeError("this predictor runs a runtime detector, not a torch model")
        return self.model

    @torch.inference_mode()
    def _torch(self, image_bgr: np.ndarray) -> Prediction:
        t0 = time.perf_counter()
        x = preprocess(image_bgr, self.imgsz, self.device)
        model = self._model()
        out = model.forward_dynamic(x, self.thresholds)
        det = postprocess(out.maps, model.anchors_px, model.strides, self.nms)[0]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = (time.perf_counter() - t0) * 1000
        h, w = image_bgr.shape[:2]
        det.boxes = np.asarray(boxes_from_network(det.boxes, letterbox_info(w, h, self.imgsz)), dtype=np.float32)
        scores = out.gate_scores[0].tolist()
        return Prediction(det, int(out.exit_level[0]), (scores[0], scores[1]), elapsed)


def _export_cache() -> Path:
    from .data.home import dh_tune_home

    return dh_tune_home() / "exports"


def _usable(folder: Path, profile: Profile) -> bool:
    """True when `folder` holds an intact export of this profile's checkpoint, size and thresholds."""
    from .export.bundle import load_manifest

    try:
        doc = load_manifest(folder)
    except (OSError, ValueError):
        return False
    return (doc.get("source", {}).get("checkpoint_sha256") == profile.checkpoint_sha256
            and doc.get("imgsz") == profile.imgsz and doc.get("thresholds") == list(profile.thresholds))


__all__ = ["Prediction", "Predictor", "ProfileError"]
