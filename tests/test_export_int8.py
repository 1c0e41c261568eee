"""int8 export: the trunk quantized, gates and output convolutions fp32, its AP measured and recorded."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import onnx
import pytest
from test_export import _profile

from dh_tune.data import load_dataset
from dh_tune.evaluate import average_precision
from dh_tune.export.__main__ import main as export_main
from dh_tune.export.dhnet_runtime import DeploymentError
from dh_tune.model import VAL_NMS
from dh_tune.predict import Predictor


def _ap(folder: Path, runtime: str, records, images) -> float:
    predictor = Predictor.from_profile(folder, runtime=runtime, allow_other_runtime=True, nms=VAL_NMS)
    preds = [predictor(img) for img in images]
    return average_precision([(r.boxes, r.classes) for r in records],
                             [(p.detections.boxes, p.detections.scores, p.detections.classes) for p in preds],
                             num_classes=11)["ap50_95"]


@pytest.fixture(scope="module")
def folders(trained_tiny, tiny_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny model's (0.5, 0.5) profile exported in fp32 and in int8 (calibrated on 8 training images)."""
    root = tmp_path_factory.mktemp("int8")
    profile = _profile(trained_tiny, root / "profiles", "onnxruntime")
    assert export_main(["--profile", str(profile), "--out", str(root / "fp32"), "--check-images", "0"]) == 0
    assert export_main(["--profile", str(profile), "--out", str(root / "int8"), "--precision", "int8",
                        "--data", tiny_dataset, "--calibration-images", "8", "--check-images", "0"]) == 0
    return root / "fp32", root / "int8"


def test_int8_folder_records_the_ap_it_and_the_fp32_graphs_reach(folders, tiny_dataset) -> None:
    fp32, int8 = folders
    doc = json.loads((int8 / "deploy.json").read_text())
    assert doc["precision"] == "int8" and doc["quantization"]["calibration_images"] == 8
    records = load_dataset(tiny_dataset).splits["val"]
    images = [cv2.imread(str(r.path)) for r in records]
    acc = doc["accuracy"]
    assert acc["images"] == len(records) and acc["runtime"] == "onnxruntime"
    # The recorded numbers are what the two folders score when run again.
    assert acc["fp32"]["ap50_95"] == pytest.approx(_ap(fp32, "onnxruntime", records, images), abs=1e-4)
    assert acc["int8"]["ap50_95"] == pytest.approx(_ap(int8, "onnxruntime", records, images), abs=1e-4)
    # Most of the accuracy survives (this tiny overfitted model loses about 5%; the default pipeline's none).
    assert acc["fp32"]["ap50_95"] > 0.3 and acc["int8"]["ap50_95"] > 0.85 * acc["fp32"]["ap50_95"]
    assert acc["ap50_95_change"] == pytest.approx(acc["int8"]["ap50_95"] - acc["fp32"]["ap50_95"], abs=1e-4)
    # OpenVINO runs the same int8 graphs.
    assert _ap(int8, "openvino", records, images) == pytest.approx(acc["int8"]["ap50_95"], abs=0.02)


def test_int8_graphs_quantize_the_trunk_and_keep_gates_fp32(folders) -> None:
    fp32, int8 = folders
    doc = json.loads((int8 / "deploy.json").read_text())
    assert [s["file"] for s in doc["segments"]] == [s["file"] for s in json.loads((fp32 / "deploy.json").read_text())["segments"]]
    for seg in doc["segments"]:
        graph = onnx.load(str(int8 / seg["file"]))
        ops = [n.op_type for n in graph.graph.node]
        assert ops.count("QuantizeLinear") > 10
        assert (int8 / seg["file"]).stat().st_size < 0.7 * (fp32 / seg["file"]).stat().st_size
        if seg["gate"]:  # the gate's layers read fp32 weights: no DequantizeLinear feeds a Gemm
            made_by = {o: n.op_type for n in graph.graph.node for o in n.output}
            gemms = [n for n in graph.graph.node if n.op_type == "Gemm"]
            assert gemms and all(made_by.get(i) != "DequantizeLinear" for n in gemms for i in n.input[1:])


def test_int8_folder_without_its_accuracy_is_refused(folders, tmp_path) -> None:
    _, int8 = folders
    copy = tmp_path / "copy"
    shutil.copytree(int8, copy)
    doc = json.loads((copy / "deploy.json").read_text())
    del doc["accuracy"]
    (copy / "deploy.json").write_text(json.dumps(doc))
    with pytest.raises(DeploymentError, match="accuracy"):
        Predictor.from_profile(copy, runtime="onnxruntime")


def test_int8_needs_the_onnx_format(trained_tiny, tmp_path, capsys) -> None:
    profile = _profile(trained_tiny, tmp_path / "p", "openvino")
    assert export_main(["--profile", str(profile), "--out", str(tmp_path / "ov"), "--format", "openvino",
                        "--precision", "int8", "--check-images", "0"]) == 2
    assert "use --format onnx" in capsys.readouterr().err and not (tmp_path / "ov").exists()
