"""An imported YOLOv5 runs downstream as a trained DH-Net does: evaluate, export (ONNX Runtime fp32 and int8), the
torch-free runtime module, Predictor and detect (OpenVINO export is the same code path, tested in test_export)."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import pytest
from test_export import _profile
from yolov5_fake import yolov5_checkpoint

from dh_tune.data import load_dataset
from dh_tune.detect import main as detect_main
from dh_tune.evaluate.__main__ import main as evaluate_main
from dh_tune.export.__main__ import main as export_main
from dh_tune.export.dhnet_runtime import Detector
from dh_tune.import_yolov5 import import_yolov5
from dh_tune.model.checkpoint import load_checkpoint
from dh_tune.predict import Predictor


@pytest.fixture(scope="module")
def imported(trained_tiny, tmp_path_factory) -> Path:
    """The trained tiny detector saved as YOLOv5's best.pt, then imported as a dh-tune checkpoint."""
    ckpt = load_checkpoint(trained_tiny)
    root = tmp_path_factory.mktemp("imported")
    best = yolov5_checkpoint(root, root / "best.pt", ckpt["ema"] or ckpt["model"], list(ckpt["names"]),
                             tuple(ckpt["model_args"]["scale"]), imgsz=128)
    return import_yolov5(best, root / "model.pt")


def _all_heads_ap(capsys, checkpoint: Path, data: str) -> tuple[float, float]:
    args = ["--checkpoint", str(checkpoint), "--data", data, "--imgsz", "128", "--thresholds", "0", "0",
            "--resamples", "0", "--runtime", "torch"]
    assert evaluate_main(args) == 0
    found = re.search(r"AP50 ([0-9.]+)  AP50:95 ([0-9.]+)", capsys.readouterr().out)
    assert found is not None
    return float(found[1]), float(found[2])


def test_evaluate_scores_the_imported_detector_as_the_original(imported, trained_tiny, tiny_dataset, capsys,
                                                               tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    ours, original = _all_heads_ap(capsys, imported, tiny_dataset), _all_heads_ap(capsys, trained_tiny, tiny_dataset)
    assert ours[0] > 0.3  # a trained detector, not an empty one
    # YOLOv5 saves fp16 weights: the import scores what YOLOv5 itself would run
    assert abs(ours[0] - original[0]) <= 0.02 and abs(ours[1] - original[1]) <= 0.02, (ours, original)


def test_imported_detector_exports_in_fp32_and_int8_and_runs(imported, tiny_dataset, tmp_path, capsys) -> None:
    records = load_dataset(tiny_dataset).splits["val"]
    images = [cv2.imread(str(r.path)) for r in records]
    profile = _profile(imported, tmp_path / "profiles", "onnxruntime", thresholds=(0.0, 0.0))
    torch_run = Predictor.from_profile(profile, imported, runtime="torch", allow_other_runtime=True)
    for precision, extra in (("fp32", []), ("int8", ["--data", tiny_dataset, "--calibration-images", "8"])):
        out = tmp_path / f"onnx-{precision}"
        assert export_main(["--profile", str(profile), "--out", str(out), "--precision", precision,
                            "--check-images", "0", *extra]) == 0, capsys.readouterr().err
        detector = Detector(out, "onnxruntime")
        predictor = Predictor.from_profile(out, runtime="onnxruntime")
        for img in images[:3]:
            assert detector(img).exit_level == predictor(img).exit_level == torch_run(img).exit_level == 3
        if precision == "fp32":  # fp32 graphs find what torch finds
            got, want = predictor(images[0]).detections, torch_run(images[0]).detections
            assert len(got.boxes) == len(want.boxes) > 0
    assert detect_main([str(records[0].path), "--profile", str(tmp_path / "onnx-fp32"), "--out",
                        str(tmp_path / "detect")]) == 0
