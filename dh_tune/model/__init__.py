"""DH-Net model: YOLOv5 with ordered heads, learned gates and early-exit inference."""
from .config import DEFAULT_ANCHORS_PX, SCALES, STRIDES, Scale, resolve_scale
from .dhnet import DHNet, DynamicOutput, Stage1
from .postprocess import DEPLOY_NMS, VAL_NMS, Detections, NMSConfig, decode, postprocess
from .weights import LoadReport, WeightsError
from .yolov5 import YOLOv5Error, YOLOv5Source, read_yolov5

__all__ = [
    "DEFAULT_ANCHORS_PX", "SCALES", "STRIDES", "Scale", "resolve_scale",
    "DHNet", "DynamicOutput", "Stage1",
    "DEPLOY_NMS", "VAL_NMS", "Detections", "NMSConfig", "decode", "postprocess",
    "LoadReport", "WeightsError", "YOLOv5Error", "YOLOv5Source", "read_yolov5",
]
