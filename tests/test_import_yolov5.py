"""Importing YOLOv5 checkpoints without YOLOv5: faithful pickled models (a clone's `models.*` and the pip package's
`yolov5.models.*`), state dicts, refused architectures, and payloads that must never run.

The YOLOv5 classes (tests/yolov5_fake.py, written from YOLOv5 v6's layer table) are imported only to build and save
the checkpoints, then made unimportable.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path, PosixPath
from typing import Any

import numpy as np
import pytest
import torch
from yolov5_fake import BACKBONE, HEAD, NAMES, SCALE, forget, p6_yaml, write_package, yaml_doc

from dh_tune.import_yolov5 import import_yolov5, main
from dh_tune.model import DEFAULT_ANCHORS_PX, DHNet, WeightsError, YOLOv5Error, read_yolov5
from dh_tune.model.checkpoint import CheckpointError, load_checkpoint, load_model

X = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))


class _System:
    """Unpickles by calling os.system (posix.system) with a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


class _Eval:
    """Unpickles by calling builtins.eval on Python source."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return eval, (self.source,)




def calibrated(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random BatchNorm affine weights and running statistics measured on random images (outputs of order 1)."""
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.uniform_(-0.2, 0.2, generator=gen)
            bn.momentum = None
            bn.reset_running_stats()
        model.train()
        for _ in range(2):
            model(torch.rand(4, 3, 64, 64, generator=gen))
    for bn in bns:
        bn.momentum = 0.03
    return model.eval()


def reference(model: torch.nn.Module) -> list[torch.Tensor]:
    """YOLOv5's own raw maps in fp32 from the weights as saved (fp16), as YOLOv5's attempt_load uses them."""
    with torch.no_grad():
        return copy.deepcopy(model).half().float().eval()(X)


def save_checkpoint_of(package: str, yaml: dict, path: Path, pip: bool = False, **extra: Any) -> dict[str, Any]:
    """Build, train-like (EMA differs from the model, AutoAnchor changed the anchors), save fp16 as YOLOv5 does."""
    yolo = importlib.import_module(f"{package}.yolo")
    torch.manual_seed(0)
    model = calibrated(yolo.DetectionModel(yaml, nc=len(NAMES)), 1)
    model.names = dict(NAMES) if pip else list(NAMES.values())
    model.nc = len(NAMES)
    with torch.no_grad():
        model.model[-1].anchors.mul_(1.1).add_(0.05)  # AutoAnchor's evolved anchors, in grid units
        ema = copy.deepcopy(model)
        for p in ema.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ema = calibrated(ema, 2)  # its own BatchNorm statistics, as YOLOv5's EMA averages them too
    opt = argparse.Namespace(imgsz=100, weights="yolov5s.pt", batch_size=16, save_dir=PosixPath("runs/train/exp"))
    ckpt = {"epoch": 3, "best_fitness": np.float64(0.4217), "model": copy.deepcopy(model).half(),
            "ema": copy.deepcopy(ema).half(), "updates": 120,
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.01).state_dict(),
            "opt": vars(opt) if pip else opt, "date": "2026-12-01T10:00:00", **extra}
    if pip:
        ckpt["yolov5pip_version"] = "7.0.14"
    torch.save(ckpt, path)
    # The best.pt train.py leaves at the end: its optimizer stripped and the EMA saved as `model`.
    torch.save({**ckpt, "model": copy.deepcopy(ema).half(), "ema": None, "optimizer": None}, path.with_name("last.pt"))
    with torch.no_grad():
        ema_fp32 = ema(X)
    return {"path": path, "ema": reference(ema), "model": reference(model), "ema_fp32": ema_fp32,
            "anchors_px": (model.model[-1].anchors.half().float() * model.model[-1].stride.view(-1, 1, 1)).tolist(),
            "state_dict": copy.deepcopy(ema).state_dict()}




def build(root: Path, package: str, pip: bool) -> dict[str, Any]:
    """Every checkpoint one package gives, built while its classes are importable."""
    write_package(root, package)
    sys.path.insert(0, str(root))
    try:
        yolo = importlib.import_module(f"{package}.yolo")
        out = {"best": save_checkpoint_of(package, yaml_doc(), root / "best.pt", pip=pip)}
        if pip:
            return out
        canary = root / "nested-payload-ran"
        torch.manual_seed(0)
        nested = yolo.DetectionModel(yaml_doc(), nc=3)
        nested.model[3].note = _System(f"touch {canary}")
        torch.save({"epoch": 0, "model": nested.half(), "ema": None}, root / "nested.pt")
        out["nested"] = {"path": root / "nested.pt", "canary": canary}
        torch.manual_seed(0)
        torch.save({"model": yolo.DetectionModel(p6_yaml()).half(), "ema": None}, root / "p6.pt")
        seg_head = HEAD[:-1] + [[[17, 20, 23], 1, "Segment", ["nc", "anchors", 32, 256]]]
        torch.save({"model": yolo.SegmentationModel(yaml_doc(head=seg_head)).half(), "ema": None}, root / "seg.pt")
        edited = copy.deepcopy(BACKBONE)
        edited[9] = [-1, 1, "SPPF", [1024, 3]]
        torch.save({"model": yolo.DetectionModel(yaml_doc(backbone=edited)).half(), "ema": None}, root / "edited.pt")
        tasks = importlib.import_module("ultralytics.nn.tasks")
        torch.save({"model": tasks.DetectionModel(), "ema": None}, root / "yolov8.pt")
        return out
    finally:
        forget(package, root)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> dict[str, Any]:
    return build(tmp_path_factory.mktemp("clone"), "models", pip=False)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> dict[str, Any]:
    return build(tmp_path_factory.mktemp("pip"), "yolov5.models", pip=True)


def yolov5_maps(maps: list[torch.Tensor], na: int = 3) -> list[torch.Tensor]:
    """DH-Net's raw (B, na*no, h, w) maps in YOLOv5's training layout (B, na, h, w, no)."""
    return [m.view(m.shape[0], na, -1, *m.shape[2:]).permute(0, 1, 3, 4, 2) for m in maps]


def assert_same_maps(model: DHNet, expected: list[torch.Tensor]) -> None:
    with torch.no_grad():
        got = yolov5_maps(model.forward_static(X))
    assert [g.shape for g in got] == [e.shape for e in expected]
    worst = max(float((g - e).abs().max()) for g, e in zip(got, expected))
    assert worst <= 1e-4, worst


def test_the_yolov5_classes_are_not_importable_when_importing(clone, package) -> None:
    for name in ("models", "yolov5", "ultralytics"):
        assert importlib.util.find_spec(name) is None, name
    DHNet.from_yolov5(clone["best"]["path"])
    DHNet.from_yolov5(package["best"]["path"])
    assert not {"models", "yolov5", "ultralytics"} & {m.split(".")[0] for m in sys.modules}


@pytest.mark.parametrize("variant", ["clone", "package"])
def test_a_yolov5_checkpoint_imports_with_its_ema_weights_exactly(variant, request) -> None:
    built = request.getfixturevalue(variant)["best"]
    model = DHNet.from_yolov5(built["path"])
    assert not model.training and model.gates is not None
    assert_same_maps(model, built["ema"])
    assert max(float((a - b).abs().max()) for a, b in zip(built["ema"], built["model"])) > 1e-2  # EMA is told apart
    source = model.yolov5_source
    assert source is not None and source.weights == "ema"
    assert source.names == tuple(NAMES.values()) and source.nc == 3 and source.scale == SCALE
    assert source.imgsz == 100 and source.anchors_changed()
    torch.testing.assert_close(torch.tensor(source.anchors_px), torch.tensor(built["anchors_px"]))
    assert source.sha256 == hashlib.sha256(built["path"].read_bytes()).hexdigest()
    assert source.version == ("7.0.14" if variant == "package" else None)
    assert json.loads(json.dumps(source.to_dict()))["names"] == list(NAMES.values())


def test_without_an_ema_the_model_is_taken(clone) -> None:
    model = DHNet.from_yolov5(clone["best"]["path"].with_name("last.pt"))
    assert model.yolov5_source is not None and model.yolov5_source.weights == "model"
    assert_same_maps(model, clone["best"]["ema"])


def test_model_pt_is_a_dh_tune_checkpoint_with_the_same_maps(clone, tmp_path) -> None:
    built = clone["best"]
    out = import_yolov5(built["path"], tmp_path / "MODEL.pt")
    model, ckpt = load_model(out)  # torch.load with weights_only=True
    assert_same_maps(model, built["ema"])
    assert ckpt["names"] == list(NAMES.values()) and ckpt["model_args"]["nc"] == 3 and ckpt["epoch"] == -1
    source = ckpt["source"]
    assert source["format"] == "yolov5" and source["file"] == "best.pt" and source["weights"] == "ema"
    assert source["sha256"] == hashlib.sha256(built["path"].read_bytes()).hexdigest()
    torch.testing.assert_close(torch.tensor(ckpt["model_args"]["anchors_px"]), torch.tensor(built["anchors_px"]))
    config = ckpt["config"]
    assert config["name"] == "yolov5-best" and config["model"]["scale"] == list(SCALE)
    assert config["data"]["imgsz"] == 96  # 100 in opt, as a multiple of 32
    assert config["train"]["loss"]["gate_lambda"] == 0.0 and config["train"]["loss"]["gate_trunk_grad"] == 0.0


def test_gates_are_initialised_from_the_seed(clone) -> None:
    path = clone["best"]["path"]
    a, b, c = (DHNet.from_yolov5(path, seed=s).gates.state_dict() for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert DHNet.from_yolov5(path, gates=False).gates is None


def test_a_plain_state_dict_imports_with_shapes_inferred(clone, tmp_path) -> None:
    path = tmp_path / "yolov5n-sd.pt"
    torch.save(clone["best"]["state_dict"], path)
    sd, source = read_yolov5(path)
    assert source.weights == "state_dict" and source.nc == 3 and source.scale == SCALE and source.imgsz is None
    assert source.names == ("class0", "class1", "class2") and source.anchors_changed()
    assert all(t.dtype == torch.float32 for t in sd.values() if t.is_floating_point())
    assert_same_maps(DHNet.from_yolov5(path), clone["best"]["ema_fp32"])


@pytest.mark.parametrize("name, words", [
    ("p6.pt", ["P6", "four outputs", "P3, P4, P5, P6"]),
    ("seg.pt", ["segmentation", "models.yolo.SegmentationModel"]),
    ("edited.pt", ["layer 9", "edited backbone or head"]),
    ("yolov8.pt", ["Ultralytics", "anchor-free"]),
])
def test_what_dh_net_cannot_represent_is_refused_in_one_line(clone, name, words) -> None:
    path = clone["best"]["path"].with_name(name)
    with pytest.raises(YOLOv5Error) as refused:
        DHNet.from_yolov5(path)
    line = str(refused.value)
    assert line.startswith(f"{path}: ") and "\n" not in line
    assert all(w in line for w in words), line


def payloads(clone, tmp_path: Path) -> list[tuple[Path, Path, str]]:
    """(file, canary, what its pickle names): os.system at the top level and nested in a module, builtins.eval."""
    top, evil = tmp_path / "system.pt", tmp_path / "eval.pt"
    top_canary, eval_canary = tmp_path / "system-ran", tmp_path / "eval-ran"
    torch.save(_System(f"touch {top_canary}"), top)
    torch.save({"model": _Eval(f"__import__('pathlib').Path({str(eval_canary)!r}).touch()")}, evil)
    nested = clone["nested"]
    return [(top, top_canary, "posix.system"), (nested["path"], nested["canary"], "posix.system"),
            (evil, eval_canary, "builtins.eval")]


def test_payloads_are_refused_and_never_run(clone, tmp_path, capsys) -> None:
    files = payloads(clone, tmp_path)
    for path, canary, name in files:
        with pytest.raises(YOLOv5Error) as refused:
            DHNet.from_yolov5(path)
        line = str(refused.value)
        assert line.startswith(f"{path}: ") and name in line and "\n" not in line
        assert main([str(path), "--out", str(tmp_path / "MODEL.pt")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {path}: ") and name in err[0]
        with pytest.raises(WeightsError, match="weights_only=True"):
            DHNet(SCALE, nc=3).load_yolov5(path)
        with pytest.raises(CheckpointError) as not_ours:
            load_checkpoint(path)
        assert name in str(not_ours.value)
        assert not canary.exists() and not (tmp_path / "MODEL.pt").exists()
    # The same files do run their payloads under an unrestricted load, so the refusals above are live.
    load = "import sys, torch\nfor f in sys.argv[1:]:\n    getattr(torch, 'load')(f, weights_only=False)\n"
    env = {**os.environ, "PYTHONPATH": str(clone["nested"]["path"].parent)}
    run = subprocess.run([sys.executable, "-c", load, *(str(p) for p, _, _ in files)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert all(canary.exists() for _, canary, _ in files)


def test_truncated_and_foreign_files_are_refused_in_one_line(clone, tmp_path, capsys) -> None:
    truncated, text = tmp_path / "truncated.pt", tmp_path / "notes.pt"
    truncated.write_bytes(clone["best"]["path"].read_bytes()[:4000])
    text.write_text("not a checkpoint\n")
    for path, reason in ((truncated, "truncated"), (text, "not a zip archive")):
        assert main([str(path), "--out", str(tmp_path / "MODEL.pt")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {path}: ") and reason in err[0], err


def test_the_cli_imports_and_prints_one_summary_line(clone, tmp_path, capsys) -> None:
    out = tmp_path / "MODEL.pt"
    assert main([str(clone["best"]["path"]), "--out", str(out), "--seed", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    for words in ("scale 0.33/0.125", "nc 3", "3 names", "changed from YOLOv5's defaults", "ema weights",
                  "tensors loaded"):
        assert words in lines[0], lines[0]
    assert load_checkpoint(out)["source"]["format"] == "yolov5"
    with pytest.raises(SystemExit) as shown:
        main(["--help"])
    assert shown.value.code == 0 and "Refused" in capsys.readouterr().out


def test_foreign_pickles_give_one_clean_line_without_unsafe_advice(clone) -> None:
    best = clone["best"]["path"]
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(best)
    line = str(refused.value)
    assert "\n" not in line and "\x1b" not in line and "weights_only=False" not in line
    assert "a pickled YOLOv5 model" in line and "python -m dh_tune.import_yolov5" in line
    report = DHNet(SCALE, nc=3).load_yolov5(best)  # init_from: a best.pt gives its EMA weights
    assert not report.skipped and all(k.startswith("gates.") for k in report.missing)


def test_a_state_dict_without_anchors_gets_yolov5s_defaults(tmp_path) -> None:
    model = DHNet(SCALE, nc=3, gates=False)
    path = tmp_path / "plain.pt"
    torch.save({k: v for k, v in model.state_dict().items() if k != "model.24.anchors"}, path)
    _, source = read_yolov5(path)
    assert not source.anchors_changed() and all(isinstance(v, float) for lv in source.anchors_px for a in lv for v in a)
    torch.testing.assert_close(DHNet.from_yolov5(path).anchors_px, torch.tensor(DEFAULT_ANCHORS_PX, dtype=torch.float32))


class _Reduced:
    """Pickles as whatever (callable, args[, state]) it is given."""

    def __init__(self, *reduced: Any) -> None:
        self.reduced = reduced

    def __reduce__(self) -> Any:
        return self.reduced


@pytest.mark.parametrize("reduced, words", [
    ((set, ([1],), {"x": 1}), "sets the state of a set"),  # BUILD on anything but a stand-in
    ((torch.FloatStorage, ()), "calls _StorageType"),  # REDUCE of an allowlisted global that is no stand-in function
])
def test_builds_and_calls_outside_the_stand_ins_are_refused(reduced, words, tmp_path) -> None:
    path = tmp_path / "odd.pt"
    torch.save({"model": _Reduced(*reduced)}, path)
    with pytest.raises(YOLOv5Error, match=words):
        read_yolov5(path)
