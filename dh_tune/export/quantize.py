"""Post-training int8 quantization of a deployment folder's graphs (ONNX QDQ), calibrated on real images.

The trunk runs in int8: weights per output channel, activations per tensor with min-max ranges seen on
the calibration images. The gates and the detection head's output convolutions stay fp32, so a gate
score keeps its resolution next to its threshold and box offsets keep theirs.
"""
from __future__ import annotations

import logging
import multiprocessing
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import fsio
from .dhnet_runtime import MANIFEST, DeploymentError, file_sha256, read_manifest

if TYPE_CHECKING:
    from ..model import DHNet

SCHEME = "ONNX QDQ: int8 weights per channel, uint8 activations per tensor, min-max calibration"


def fp32_modules(net: DHNet) -> tuple[str, ...]:
    """Module paths kept in fp32: both gates and the detection head's output convolutions."""
    return ("gates.", f"model.{len(net.model) - 1}.")


def calibration_tensors(net: DHNet, inputs: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Every tensor a segment can receive (ALL_TENSORS and "images") for each pre-processed (1, 3, S, S) input."""
    import torch

    from .graphs import ALL_TENSORS, WholeNetwork

    whole = WholeNetwork(net.cpu().fused()).eval()
    out = []
    with torch.inference_mode():
        for x in inputs:
            values = whole(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
            out.append({"images": x, **{name: v.numpy() for name, v in zip(ALL_TENSORS, values)}})
    return out


def nodes_in_modules(graph_path: Path, modules: Sequence[str]) -> list[str]:
    """Names of the graph's nodes that the exporter attributes to any of `modules` (or to a gate score)."""
    import onnx

    model = onnx.load(str(graph_path))
    names = []
    for node in model.graph.node:
        scope = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
        paths = [part.split(":")[0].strip().removeprefix("net.") for part in scope.split("/")]
        if any(p.startswith(m) for p in paths for m in modules) or any(o.endswith("_score") for o in node.output):
            names.append(node.name)
    return names


def quantize_graphs(graphs: Sequence[tuple[Path, Path]], feeds: Sequence[dict[str, np.ndarray]],
                    keep_fp32: Sequence[str]) -> None:
    """Write each (src, dst) pair's `src` quantized to int8 (QDQ) at `dst`: ranges from `feeds`, nodes in
    `keep_fp32` left fp32.

    Runs in a process of its own: the calibration's ONNX Runtime session cannot join the process-wide
    thread pool that deployment sessions share once one of them exists.
    """
    with tempfile.TemporaryDirectory(prefix="dh-tune-calibration-") as work:
        arrays = Path(work) / "feeds.npz"
        named: dict[str, Any] = {f"{i}/{name}": v for i, f in enumerate(feeds) for name, v in f.items()}
        np.savez(arrays, **named)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(_quantize_graphs, list(graphs), arrays, tuple(keep_fp32)).result()


def _quantize_graphs(graphs: list[tuple[Path, Path]], arrays: Path, keep_fp32: tuple[str, ...]) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer's advice to pre-process: done by the export
    with np.load(arrays) as stored:
        count = len({key.split("/")[0] for key in stored.files})
        tensors = [{key.split("/", 1)[1]: stored[key] for key in stored.files if key.startswith(f"{i}/")}
                   for i in range(count)]

    class Reader(CalibrationDataReader):
        def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
            self.items: Iterator[dict[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    for src, dst in graphs:
        inputs = [i.name for i in onnx.load(str(src)).graph.input]
        reader = Reader([{n: t[n] for n in inputs} for t in tensors])
        with tempfile.TemporaryDirectory(prefix="dh-tune-quantize-") as work:
            quantize_static(str(src), str(Path(work) / dst.name), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=nodes_in_modules(src, keep_fp32))
            shutil.move(str(Path(work) / dst.name), str(dst))


AccuracyCheck = Callable[[Path, Path], dict[str, Any]]
"""(fp32 folder, int8 folder) -> the accuracy record written into the int8 folder's manifest."""


def quantize_folder(net: DHNet, fp32_folder: Path, out: Path, calibration_inputs: Sequence[np.ndarray], *,
                    calibration_source: str, measure: AccuracyCheck) -> Path:
    """Write `out`: the fp32 ONNX folder with int8 graphs, its AP against the fp32 graphs measured and recorded.

    The folder appears (atomically, replacing `out`) only once its accuracy is in its manifest.
    """
    manifest = read_manifest(fp32_folder)
    if manifest["format"] != "onnx":
        raise DeploymentError(f"{fp32_folder}: int8 graphs are written as ONNX (OpenVINO runs them too); "
                              "use --format onnx")
    if not calibration_inputs:
        raise DeploymentError("int8 export needs calibration images (none were given)")
    out = Path(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        shutil.copytree(fp32_folder, tmp, dirs_exist_ok=True)
        feeds = calibration_tensors(net, calibration_inputs)
        keep = fp32_modules(net)
        quantize_graphs([(fp32_folder / seg["file"], tmp / seg["file"]) for seg in manifest["segments"]], feeds, keep)
        doc = {**manifest, "precision": "int8",
               "checksums": {name: file_sha256(tmp / name) for name in manifest["checksums"]},
               "quantization": {"scheme": SCHEME, "kept_fp32": [m.rstrip(".") for m in keep],
                                "calibration_images": len(calibration_inputs), "calibration_source": calibration_source}}
        fsio.write_json(tmp / MANIFEST, doc, allow_nan=False)
        doc["accuracy"] = measure(fp32_folder, tmp)
        from .bundle import check_manifest

        check_manifest(doc, str(out / MANIFEST))
        fsio.write_json(tmp / MANIFEST, doc, allow_nan=False)
        fsio.replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
