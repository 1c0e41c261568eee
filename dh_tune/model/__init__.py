"""DH-Net model: YOLOv5 with ordered heads, learned gates and early-exit inference."""
from .config import DEFAULT_ANCHORS_PX, SCALES, STRIDES, Scale, resolve_scale
from .dhnet import DHNet, DynamicOutput, Stage1
from .postprocess import DEPLOY_NMS, VAL_NMS, Detections, NMSConfig, decode, postprocess
from .weights import LoadReport, WeightsError

__all__ = [
    "DEFAULT_ANCHORS_PX", "SCALES", "STRIDES", "Scale", "resolve_scale",
    "DHNet", "DynamicOutput", "Stage1",
    "DEPLOY_NMS", "VAL_NMS", "Detections", "NMSConfig", "decode", "postprocess",
    "LoadReport", "WeightsError",
]
