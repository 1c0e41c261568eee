"""Staged export and the deployment runtimes: graphs equal PyTorch, the same early exit, the same AP."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dh_tune.data import load_dataset
from dh_tune.data.preprocess import preprocess as torch_preprocess
from dh_tune.detect import main as detect_main
from dh_tune.evaluate import average_precision
from dh_tune.export.__main__ import main as export_main
from dh_tune.export.bundle import export_deployment
from dh_tune.export.dhnet_runtime import DeploymentError, Detector, decode, nms, preprocess
from dh_tune.export.dhnet_runtime import main as runtime_main
from dh_tune.export.graphs import plan
from dh_tune.export.verify import agreement
from dh_tune.gating import GRAPH_KEYS
from dh_tune.latency import PARTS, LatencyTable, LatencyTableError
from dh_tune.latency.measure import latency_table
from dh_tune.model import VAL_NMS, DHNet, postprocess
from dh_tune.model.checkpoint import file_sha256, load_model
from dh_tune.predict import Predictor
from dh_tune.runtimes import RuntimeChoiceError, version
from dh_tune.search.records import FrontPoint
from dh_tune.threshold_profiles import load_profile, make_profile, save_profile


def _profile(checkpoint: Path, folder: Path, runtime: str, thresholds=(0.5, 0.5), imgsz: int = 128) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(checkpoint, folder / "model.pt")
    cand = {"imgsz": imgsz, "t1": thresholds[0], "t2": thresholds[1], "ap50": 0.9, "ap50_95": 0.7, "latency_ms": 5.0,
            "latency_p90_ms": 6.0, "exit_shares": (0.3, 0.3, 0.4), "gate_accuracy": (1.0, 1.0), "gate_recall": (1.0, 1.0),
            "mean_gmacs": 0.05}
    doc = make_profile(device_name="Test CPU", table_digest="e" * 64, runtime={"name": runtime, "version": "x"},
                       budget_ms=10, feasible=True, candidate=FrontPoint.from_dict(cand), metric="ap50_95", hyperparameters={},
                       checkpoint_rel="model.pt", checkpoint_sha256=file_sha256(checkpoint),
                       model={"scale": [0.33, 0.25], "nc": 11})
    return save_profile(doc, folder / f"{runtime}-{thresholds[0]:g}-{thresholds[1]:g}.json")


@pytest.fixture(scope="module")
def val_images(tiny_dataset):
    records = load_dataset(tiny_dataset).splits["val"]
    return records, [cv2.imread(str(r.path)) for r in records]


@pytest.fixture(scope="module")
def onnx_folder(trained_tiny, tmp_path_factory) -> Path:
    """The tiny model's (0.5, 0.5) profile, chosen with ONNX Runtime timings, exported as ONNX."""
    root = tmp_path_factory.mktemp("export")
    profile = _profile(trained_tiny, root / "profiles", "onnxruntime")
    assert export_main(["--profile", str(profile), "--out", str(root / "onnx")]) == 0
    return root / "onnx"


def test_plan_cuts_the_network_at_every_gate_that_decides() -> None:
    names = {t: [s.name for s in plan(*t)] for t in [(0.5, 0.5), (0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (1.0, 0.5),
                                                       (0.0, 1.0), (0.5, 1.0)]}
    assert names == {(0.5, 0.5): ["stage1-gate1", "stage2-gate2", "stage3"], (0.0, 0.0): ["stage1-2-3"],
                     (0.5, 0.0): ["stage1-gate1", "stage2-3"], (0.0, 0.5): ["stage1-2-gate2", "stage3"],
                     (1.0, 0.5): ["stage1"], (0.0, 1.0): ["stage1-2"], (0.5, 1.0): ["stage1-gate1", "stage2"]}
    for t in names:  # every input of a segment is the image or an output of an earlier segment
        available = {"images"}
        for spec in plan(*t):
            assert set(spec.inputs) <= available, (t, spec)
            available |= set(spec.outputs)
        heads = len(plan(*t)[-1].stages) + sum(len(s.stages) for s in plan(*t)[:-1])
        assert {m for m in available if m.endswith("_map")} == {f"p{k + 2}_map" for k in range(1, heads + 1)}


def test_numpy_pre_and_post_processing_equal_the_torch_path() -> None:
    img = np.random.default_rng(0).integers(0, 255, (90, 150, 3), dtype=np.uint8)
    x, _ = preprocess(img, 128)
    assert np.array_equal(x, torch_preprocess(img, 128, torch.device("cpu")).numpy())
    model = DHNet((0.33, 0.25), nc=3)
    maps = [torch.randn(1, 24, 128 // s, 128 // s) * 3 for s in (8, 16, 32)]
    ref = postprocess(maps, model.anchors_px, model.strides, VAL_NMS)[0]
    boxes, scores, classes = nms(decode([m.numpy() for m in maps], model.anchors_px.numpy(), [8, 16, 32]),
                                 VAL_NMS.conf, VAL_NMS.iou, VAL_NMS.max_det, VAL_NMS.multi_label)
    assert len(ref) > 10 and np.array_equal(classes, ref.classes)
    assert np.allclose(boxes, ref.boxes, atol=1e-3) and np.allclose(scores, ref.scores, atol=1e-6)


@pytest.mark.parametrize("runtime,fmt", [("onnxruntime", "onnx"), ("openvino", "onnx"), ("openvino", "openvino")])
def test_exported_profile_equals_pytorch(trained_tiny, onnx_folder, val_images, tmp_path, runtime, fmt) -> None:
    """Raw maps within 1e-4 of their scale, the same exits (scores near a threshold reported), AP50:95 within 0.001.

    This overfitted tiny model's maps reach magnitudes of 40, where fp32 rounding alone differs by 1e-4.
    """
    records, images = val_images
    folder = onnx_folder
    if fmt == "openvino":
        profile = _profile(trained_tiny, tmp_path / "p", "openvino")
        folder = export_deployment(load_model(trained_tiny)[0], load_profile(profile), tmp_path / "ov", "openvino",
                                names=[str(i) for i in range(11)])
        assert any(f.suffix == ".xml" for f in folder.iterdir()) and not any(f.suffix == ".onnx" for f in folder.iterdir())
    detector = Detector(folder, runtime, allow_other_runtime=True)
    agree = agreement(load_model(trained_tiny)[0], detector, images)
    assert agree.max_scaled_diff < 1e-4 and agree.max_score_diff < 1e-5 and agree.decisions_equal
    levels = {detector.run_network(preprocess(img, 128)[0])[1] for img in images}
    assert len(levels) > 1, "the profile should send images to different heads"

    gt = [(r.boxes, r.classes) for r in records]
    ap = {}
    for name, predictor in (("torch", Predictor.from_profile(folder / "profile.json", trained_tiny, runtime="torch",
                                                             allow_other_runtime=True, nms=VAL_NMS)),
                            (runtime, Predictor.from_profile(folder, runtime=runtime, allow_other_runtime=True,
                                                             nms=VAL_NMS))):
        preds = [predictor(img) for img in images]
        ap[name] = average_precision(gt, [(p.detections.boxes, p.detections.scores, p.detections.classes)
                                          for p in preds], num_classes=11)["ap50_95"]
        assert predictor.runtime == name
    assert ap["torch"] > 0.3 and abs(ap[runtime] - ap["torch"]) <= 0.001


def test_static_profile_is_one_graph(trained_tiny, val_images, tmp_path) -> None:
    profile = _profile(trained_tiny, tmp_path / "p", "onnxruntime", thresholds=(0.0, 1.0))
    folder = export_deployment(load_model(trained_tiny)[0], load_profile(profile), tmp_path / "static", "onnx",
                            names=[str(i) for i in range(11)])
    manifest = json.loads((folder / "deploy.json").read_text())
    assert [s["file"] for s in manifest["segments"]] == ["stage1-2.onnx"]
    detector = Detector(folder)
    assert {detector(img).exit_level for img in val_images[1]} == {2}


def test_runtime_module_runs_without_torch(onnx_folder, val_images, tmp_path) -> None:
    blocker = tmp_path / "blocked" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is not available to a deployment')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0  # the block works
    copy = tmp_path / "shipped"
    shutil.copytree(onnx_folder, copy)  # the folder alone, away from the source tree
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), val_images[1][0])
    run = subprocess.run([sys.executable, str(copy / "dhnet_runtime.py"), str(copy), str(image)], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "a.jpg: exit after head" in run.stdout and "onnxruntime" in run.stdout


def test_profile_for_another_runtime_is_refused(trained_tiny, onnx_folder, tmp_path, capsys) -> None:
    profile = onnx_folder / "profile.json"
    with pytest.raises(RuntimeChoiceError, match="onnxruntime timings"):
        Predictor.from_profile(profile, trained_tiny, runtime="openvino")
    with pytest.raises(DeploymentError, match="onnxruntime timings"):
        Detector(onnx_folder, "openvino")
    assert Predictor.from_profile(profile, trained_tiny, runtime="openvino", allow_other_runtime=True,
                                  export_dir=tmp_path / "cache").runtime == "openvino"
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.jpg"), np.full((64, 64, 3), 90, np.uint8))
    assert detect_main([str(images), "--profile", str(onnx_folder), "--runtime", "torch", "--checkpoint",
                        str(trained_tiny), "--out", str(tmp_path / "o")]) == 2
    assert "--any-runtime" in capsys.readouterr().err
    assert export_main(["--profile", str(profile), "--format", "openvino", "--out", str(tmp_path / "x")]) == 2
    assert "onnxruntime timings" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_cuda_device_needs_the_cuda_build_of_onnxruntime(onnx_folder, capsys) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert Detector(onnx_folder, device="cuda").device == "cuda"
        return
    with pytest.raises(DeploymentError, match="no CUDAExecutionProvider.*onnxruntime-gpu"):
        Detector(onnx_folder, device="cuda")
    with pytest.raises(DeploymentError, match="needs onnxruntime"):
        Detector(onnx_folder, "openvino", allow_other_runtime=True, device="cuda")
    with pytest.raises(DeploymentError, match="unknown device"):
        Detector(onnx_folder, device="gpu")
    assert runtime_main([str(onnx_folder), str(onnx_folder / "none.jpg"), "--device", "cuda"]) == 2
    assert "onnxruntime-gpu" in capsys.readouterr().err


def test_detect_runs_an_exported_folder(onnx_folder, tiny_dataset, tmp_path, capsys) -> None:
    images = Path(tiny_dataset).parent / "images" / "val"
    assert detect_main([str(images), "--profile", str(onnx_folder), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert len(results) == 8 and {r["exit_level"] for r in results} <= {1, 2, 3}
    assert "(onnxruntime)" in capsys.readouterr().out


def test_tampered_or_escaping_folder_is_refused(onnx_folder, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(onnx_folder, copy)
    graph = copy / json.loads((copy / "deploy.json").read_text())["segments"][0]["file"]
    graph.write_bytes(graph.read_bytes()[:-10])
    with pytest.raises(DeploymentError, match="checksum"):
        Detector(copy)
    shutil.rmtree(copy)
    shutil.copytree(onnx_folder, copy)
    doc = json.loads((copy / "deploy.json").read_text())
    doc["checksums"]["../outside.onnx"] = "0" * 64
    (copy / "deploy.json").write_text(json.dumps(doc))
    with pytest.raises(DeploymentError, match="outside the deployment folder"):
        Detector(copy)


def test_each_exit_nms_is_timed_on_maps_its_graph_has_just_written(monkeypatch) -> None:
    """As in a deployment: post-processing on maps already read once takes about half the time."""
    from dh_tune.latency import runtime_parts

    events: list[tuple[str, set[int]]] = []
    real_load, real_decode = runtime_parts.load_graph, runtime_parts.decode

    def load_graph(*args, **kwargs):
        run = real_load(*args, **kwargs)

        def recorded(feeds):
            out = run(feeds)
            events.append(("graph", {id(v) for k, v in out.items() if k.endswith("_map")}))
            return out
        return recorded

    def decode(maps, *args):
        events.append(("decode", {id(m) for m in maps}))
        return real_decode(maps, *args)

    monkeypatch.setattr(runtime_parts, "load_graph", load_graph)
    monkeypatch.setattr(runtime_parts, "decode", decode)
    runtime_parts._LOADED.clear()
    times = runtime_parts.measure_parts_runtime(DHNet((0.33, 0.25), nc=3), 64, "onnxruntime", repeats=2, warmup=0)
    runtime_parts._LOADED.clear()
    assert {"nms", "nms:1", "nms:2"} <= set(times)
    decodes = [i for i, (kind, _) in enumerate(events) if kind == "decode"]
    assert len(decodes) == 3 * 2
    for i in decodes:  # every map it decodes was written by the graph that ran just before
        assert events[i - 1][0] == "graph" and events[i][1] <= events[i - 1][1]


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_device_table_records_its_runtime(runtime, tmp_path) -> None:
    import cv2

    frame = np.random.default_rng(0).integers(0, 255, (90, 150, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "frame.jpg"), frame)
    table = latency_table(DHNet((0.33, 0.25), nc=3), 64, runtime=runtime, repeats=5, warmup=1, max_seconds=10,
                          image=frame, image_file=tmp_path / "frame.jpg")
    assert table.runtime == {"name": runtime, "version": version(runtime)} and runtime in table.device_name
    assert table.measurement["frame"] == {"width": 150, "height": 90, "noise": False, "file": "frame.jpg"}
    assert set(table.parts) == {*PARTS, "read"} and all(p.median_ms > 0 for p in table.parts.values())
    # Every graph a profile can deploy is timed as deployed; static profiles are priced by their one graph.
    assert set(table.graphs) == set(GRAPH_KEYS) and all(g.median_ms > 0 for g in table.graphs.values())
    fixed = sum(table.parts[p].median_ms for p in ("read", "preprocess", "nms"))
    head1 = sum(table.parts[p].median_ms for p in ("read", "preprocess")) + table.exit_nms["1"].median_ms \
        + table.graphs["stage1-to1"].median_ms
    assert table.exit_cost_ms("median", (1.0, 1.0))[0] == pytest.approx(head1)
    assert table.exit_cost_ms("median", (0.0, 0.0))[2] == pytest.approx(fixed + table.graphs["stage1-2-3"].median_ms)
    table.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json").graphs == table.graphs
    assert LatencyTable.load(tmp_path / "t.json").runtime["name"] == runtime
    doc = table.to_dict()
    doc["device"]["runtime"] = {"name": "tensorflow", "version": "2"}
    with pytest.raises(LatencyTableError, match="runtime"):
        LatencyTable.from_dict(doc)
    del doc["device"]["runtime"]
    with pytest.raises(LatencyTableError, match="'runtime' is a required property"):
        LatencyTable.from_dict(doc)


def test_device_tables_of_another_runtime_are_refused(tmp_path) -> None:
    from dh_tune.latency.table_sources import tables_from_files

    table = latency_table(DHNet((0.33, 0.25), nc=3), 64, repeats=5, warmup=1)
    table.save(tmp_path / "torch-64.json")
    assert tables_from_files([tmp_path / "torch-64.json"], [64])[64].runtime["name"] == "torch"
    with pytest.raises(ValueError, match="timed in torch, not in --runtime openvino"):
        tables_from_files([tmp_path / "torch-64.json"], [64], runtime="openvino")
