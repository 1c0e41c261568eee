"""Write a self-contained deployment folder for one profile: graphs, manifest, profile and runtime module.

    FOLDER/deploy.json        manifest: thresholds, input size, classes, anchors, NMS, graphs, checksums
    FOLDER/profile.json       the profile it was made from
    FOLDER/stage1-gate1.onnx  one graph per segment (OpenVINO: .xml + .bin)
    FOLDER/dhnet_runtime.py   runs the folder with numpy, OpenCV and the runtime (no torch)
"""
from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import torch

from .. import __version__, fsio
from ..messages import InputError
from ..model import DEPLOY_NMS, DHNet, NMSConfig
from ..runtimes import RuntimeChoiceError, version
from ..threshold_profiles import Profile
from . import dhnet_runtime
from .dhnet_runtime import (
    KIND,
    MANIFEST,
    RUNTIMES_FOR_FORMAT,
    SCHEMA_VERSION,
    DeploymentError,
    file_sha256,
    read_manifest,
)
from .graphs import OPSET, SegmentSpec, cut, export_onnx, export_whole, plan

FORMATS = tuple(RUNTIMES_FOR_FORMAT)
_NAMES = {"type": "array", "items": {"type": "string"}}
_AP = {"type": "object", "required": ["ap50", "ap50_95"],
       "properties": {"ap50": {"type": "number"}, "ap50_95": {"type": "number"}}}
PRECISIONS = ("fp32", "int8")
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dh-tune deployment manifest",
    "type": "object",
    "required": ["kind", "schema_version", "format", "precision", "runtime", "imgsz", "thresholds", "names",
                 "anchors_px", "strides", "nms", "segments", "checksums", "source", "created_at"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": KIND}, "schema_version": {"const": SCHEMA_VERSION}, "format": {"enum": list(FORMATS)},
        "precision": {"enum": list(PRECISIONS)}, "opset": {"type": "integer"},
        "quantization": {"type": "object", "required": ["scheme", "calibration_images", "calibration_source"]},
        "accuracy": {"type": "object", "required": ["images", "source", "runtime", "fp32", "int8"],
                     "properties": {"images": {"type": "integer", "minimum": 1},
                                    "fp32": _AP, "int8": _AP}},
        "runtime": {"type": "object", "required": ["name", "version"],
                    "properties": {"name": {"enum": ["onnxruntime", "openvino"]}, "version": {"type": "string"}}},
        "profile_runtime": {"type": "object"},
        "imgsz": {"type": "integer", "minimum": 32, "multipleOf": 32},
        "thresholds": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
        "names": _NAMES,
        "anchors_px": {"type": "array", "minItems": 3, "maxItems": 3},
        "strides": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
        "nms": {"type": "object", "required": ["conf", "iou", "max_det", "multi_label"]},
        "segments": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["file", "stages", "gate", "inputs", "outputs"],
            "additionalProperties": False,
            "properties": {"file": {"type": "string"}, "stages": {"type": "array", "items": {"enum": [1, 2, 3]}},
                           "gate": {"enum": [None, 1, 2]}, "inputs": _NAMES, "outputs": _NAMES}}},
        "checksums": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
        "source": {"type": "object"},
        "created_at": {"type": "string"},
    },
    # Lower precision only with its AP measured against the fp32 graphs and recorded.
    "if": {"properties": {"precision": {"const": "int8"}}},
    "then": {"required": ["quantization", "accuracy"]},
}
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def check_manifest(doc: Any, source: str) -> None:
    """Raise DeploymentError naming `source` and the first schema problem of a manifest."""
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        message = " ".join(error.message.split())[:200]
        raise DeploymentError(f"{source}: invalid deployment manifest at {where}: {message}")


def load_manifest(folder: str | Path) -> dict[str, Any]:
    """A deployment folder's manifest, checked against its schema, its files against their checksums."""
    doc = read_manifest(folder)
    check_manifest(doc, str(Path(folder) / MANIFEST))
    return doc


def target_runtime(profile: Profile, fmt: str, allow_other_runtime: bool = False) -> str:
    """The runtime a folder of this format runs the profile under: the profile's own if the format allows it."""
    runnable = RUNTIMES_FOR_FORMAT[fmt]
    if profile.runtime in runnable:
        return profile.runtime
    if not allow_other_runtime:
        raise RuntimeChoiceError(
            f"{profile.path}: chosen with {profile.runtime} timings, but --format {fmt} runs under "
            f"{' or '.join(runnable)}; its latency would not hold (search with --runtime {runnable[0]}, "
            "or pass --any-runtime)")
    return runnable[0]


def export_deployment(model: DHNet, profile: Profile, out: str | Path, fmt: str = "onnx", *, names: list[str],
                   nms: NMSConfig = DEPLOY_NMS, allow_other_runtime: bool = False) -> Path:
    """Export a profile's checkpoint (`model`) at its size and thresholds as a deployment folder."""
    runtime = target_runtime(profile, fmt, allow_other_runtime)
    source = {"checkpoint_sha256": profile.checkpoint_sha256, "device": profile.doc["device"]["name"],
              "budget_ms": profile.doc["budget_ms"]}
    return export_folder(model, out, fmt, imgsz=profile.imgsz, thresholds=profile.thresholds, names=names,
                         runtime=runtime, source=source, profile_doc=profile.doc, nms=nms)


def export_folder(model: DHNet, out: str | Path, fmt: str, *, imgsz: int, thresholds: tuple[float, float],
                  names: list[str], runtime: str, source: dict[str, Any] | None = None,
                  profile_doc: dict[str, Any] | None = None, nms: NMSConfig = DEPLOY_NMS,
                  segments: list[SegmentSpec] | None = None) -> Path:
    """Export `model` at `imgsz` with gate `thresholds` for `runtime`; written atomically, replacing `out`.

    `segments` overrides the graphs `plan(*thresholds)` cuts (for measurements of other cuts).
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} (use one of: {', '.join(FORMATS)})")
    if runtime not in RUNTIMES_FOR_FORMAT[fmt]:
        raise InputError(f"{fmt} graphs do not run under {runtime}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t1, t2 = float(thresholds[0]), float(thresholds[1])
    net = model.cpu().fused()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    specs = segments or plan(t1, t2)
    try:
        written = []
        with tempfile.TemporaryDirectory(prefix="dh-tune-whole-") as work:
            # Several graphs are cut from one export of the whole network (one trace instead of one per graph).
            whole = export_whole(net, imgsz, Path(work) / "whole.onnx") if len(specs) > 1 else None
            graphs = [cut(whole, spec, tmp / f"{spec.name}.onnx") if whole else
                      export_onnx(net, spec, imgsz, tmp / f"{spec.name}.onnx") for spec in specs]
        for spec, graph in zip(specs, graphs):
            files = _to_openvino(graph) if fmt == "openvino" else [graph.name]
            written.append({"file": files[0], "stages": list(spec.stages), "gate": spec.gate,
                             "inputs": list(spec.inputs), "outputs": list(spec.outputs)})
        checksums = {f.name: file_sha256(f) for f in sorted(tmp.iterdir())}
        doc = {
            "kind": KIND, "schema_version": SCHEMA_VERSION, "format": fmt, "precision": "fp32", "opset": OPSET,
            "runtime": {"name": runtime, "version": version(runtime) or "unknown"},
            "profile_runtime": (profile_doc or {}).get("device", {}).get("runtime", {"name": runtime}),
            "imgsz": imgsz, "thresholds": [t1, t2], "names": list(names),
            "anchors_px": model.anchors_px.tolist(), "strides": [float(s) for s in model.strides],
            "nms": {"conf": nms.conf, "iou": nms.iou, "max_det": nms.max_det, "multi_label": nms.multi_label,
                    "max_candidates": nms.max_candidates},
            "segments": written, "checksums": checksums,
            "source": {**(source or {}), "dh_tune": __version__, "torch": torch.__version__},
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        check_manifest(doc, str(out / MANIFEST))
        fsio.write_json(tmp / MANIFEST, doc, allow_nan=False)
        if profile_doc is not None:
            fsio.write_json(tmp / "profile.json", profile_doc, indent=2, allow_nan=False)
        shutil.copy2(dhnet_runtime.__file__, tmp / "dhnet_runtime.py")
        fsio.replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _to_openvino(onnx_path: Path) -> list[str]:
    """Convert one ONNX graph to OpenVINO IR in fp32 (no fp16 weight compression); returns [xml, bin] names."""
    import openvino as ov

    xml = onnx_path.with_suffix(".xml")
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    onnx_path.unlink()
    return [xml.name, xml.with_suffix(".bin").name]
