"""A faithful stand-in for YOLOv5's code, written from its architecture, to build checkpoints as YOLOv5 saves them.

The classes have YOLOv5's module paths and attribute layout (a from-index forward with a save list); tests import
them only to build and save checkpoints, then make them unimportable again (`forget`).
"""
from __future__ import annotations

import copy
import importlib
import sys
import textwrap
from pathlib import Path

COMMON = '''
import torch
from torch import nn


class Conv(nn.Module):
    default_act = nn.SiLU()

    def __init__(self, c1, c2, k=1, s=1, p=None):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = self.default_act

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True, e=0.5):
        super().__init__()
        self.cv1 = Conv(c1, int(c2 * e), 1, 1)
        self.cv2 = Conv(int(c2 * e), c2, 3, 1)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C3(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=True, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1, self.cv2, self.cv3 = Conv(c1, c_, 1, 1), Conv(c1, c_, 1, 1), Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, e=1.0) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        self.cv1, self.cv2 = Conv(c1, c1 // 2, 1, 1), Conv(c1 // 2 * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)
'''

YOLO = '''
import math
from copy import deepcopy

import torch
from torch import nn

from .common import C3, SPPF, Concat, Conv


class Detect(nn.Module):
    stride = None

    def __init__(self, nc=80, anchors=(), ch=()):
        super().__init__()
        self.nc, self.no, self.nl, self.na = nc, nc + 5, len(anchors), len(anchors[0]) // 2
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.inplace = True

    def forward(self, x):
        out = []
        for i in range(self.nl):
            y = self.m[i](x[i])
            bs, _, ny, nx = y.shape
            out.append(y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        return out


class Segment(Detect):
    def __init__(self, nc=80, anchors=(), nm=32, npr=256, ch=()):
        super().__init__(nc, anchors, ch)
        self.nm, self.no = nm, 5 + nc + nm
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.proto = Conv(ch[0], npr, 3)


MODULES = {"Conv": Conv, "C3": C3, "SPPF": SPPF, "Concat": Concat, "nn.Upsample": nn.Upsample,
           "Detect": Detect, "Segment": Segment}


def parse_model(d, ch):
    nc, gd, gw, anchors = d["nc"], d["depth_multiple"], d["width_multiple"], d["anchors"]
    layers, save = [], []
    for i, (f, n, name, args) in enumerate(d["backbone"] + d["head"]):
        m = MODULES[name]
        args = [{"None": None, "nc": nc, "anchors": anchors}.get(a, a) if isinstance(a, str) else a for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if m in (Conv, C3, SPPF):
            c1, c2 = ch[f], math.ceil(args[0] * gw / 8) * 8
            args = [c1, c2, *args[1:]]
            if m is C3:
                args.insert(2, n)
                n = 1
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        elif m in (Detect, Segment):
            if m is Segment:
                args[3] = math.ceil(args[3] * gw / 8) * 8
            args.append([ch[x] for x in f])
        else:
            c2 = ch[f]
        layer = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        layer.i, layer.f, layer.type = i, f, f"{m.__module__}.{m.__name__}"
        layer.np = sum(p.numel() for p in layer.parameters())
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(layer)
        ch = ([] if i == 0 else ch) + [c2]
    return nn.Sequential(*layers), sorted(save)


class DetectionModel(nn.Module):
    def __init__(self, cfg, ch=3, nc=None):
        super().__init__()
        self.yaml = cfg
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc:
            self.yaml["nc"] = nc
        self.model, self.save = parse_model(deepcopy(self.yaml), ch=[ch])
        self.names = [str(i) for i in range(self.yaml["nc"])]
        self.inplace = True
        detect = self.model[-1]
        detect.stride = torch.tensor([256 / y.shape[-3] for y in self.forward(torch.zeros(1, ch, 256, 256))])
        detect.anchors /= detect.stride.view(-1, 1, 1)
        self.stride = detect.stride
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = 1e-3, 0.03

    def forward(self, x):
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x


class SegmentationModel(DetectionModel):
    pass


Model = DetectionModel
'''

ULTRALYTICS = '''
from torch import nn


class DetectionModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 4, 1))
'''

BACKBONE = [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C3", [128]],
            [-1, 1, "Conv", [256, 3, 2]], [-1, 6, "C3", [256]], [-1, 1, "Conv", [512, 3, 2]], [-1, 9, "C3", [512]],
            [-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C3", [1024]], [-1, 1, "SPPF", [1024, 5]]]
HEAD = [[-1, 1, "Conv", [512, 1, 1]], [-1, 1, "nn.Upsample", ["None", 2, "nearest"]], [[-1, 6], 1, "Concat", [1]],
        [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [256, 1, 1]], [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
        [[-1, 4], 1, "Concat", [1]], [-1, 3, "C3", [256, False]], [-1, 1, "Conv", [256, 3, 2]],
        [[-1, 14], 1, "Concat", [1]], [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [512, 3, 2]],
        [[-1, 10], 1, "Concat", [1]], [-1, 3, "C3", [1024, False]], [[17, 20, 23], 1, "Detect", ["nc", "anchors"]]]
ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
NAMES = {0: "stop", 1: "yield", 2: "speed-30"}
SCALE = (0.33, 0.125)


def yaml_doc(backbone: list | None = None, head: list | None = None, anchors: list | None = None) -> dict:
    return {"nc": len(NAMES), "depth_multiple": SCALE[0], "width_multiple": SCALE[1], "anchors": anchors or ANCHORS,
            "backbone": copy.deepcopy(backbone or BACKBONE), "head": copy.deepcopy(head or HEAD)}


def p6_yaml() -> dict:
    """YOLOv5's P6 layout (models/hub/yolov5s6.yaml): an extra stride-64 level and a fourth Detect input."""
    backbone = BACKBONE[:7] + [[-1, 1, "Conv", [768, 3, 2]], [-1, 3, "C3", [768]], [-1, 1, "Conv", [1024, 3, 2]],
                               [-1, 3, "C3", [1024]], [-1, 1, "SPPF", [1024, 5]]]
    up = [-1, 1, "nn.Upsample", ["None", 2, "nearest"]]
    head = [[-1, 1, "Conv", [768, 1, 1]], up, [[-1, 8], 1, "Concat", [1]], [-1, 3, "C3", [768, False]],
            [-1, 1, "Conv", [512, 1, 1]], up, [[-1, 6], 1, "Concat", [1]], [-1, 3, "C3", [512, False]],
            [-1, 1, "Conv", [256, 1, 1]], up, [[-1, 4], 1, "Concat", [1]], [-1, 3, "C3", [256, False]],
            [-1, 1, "Conv", [256, 3, 2]], [[-1, 20], 1, "Concat", [1]], [-1, 3, "C3", [512, False]],
            [-1, 1, "Conv", [512, 3, 2]], [[-1, 16], 1, "Concat", [1]], [-1, 3, "C3", [768, False]],
            [-1, 1, "Conv", [768, 3, 2]], [[-1, 12], 1, "Concat", [1]], [-1, 3, "C3", [1024, False]],
            [[23, 26, 29, 32], 1, "Detect", ["nc", "anchors"]]]
    anchors = [[19, 27, 44, 40, 38, 94], [96, 68, 86, 152, 180, 137], [140, 301, 303, 264, 238, 542],
               [436, 615, 739, 380, 925, 792]]
    return yaml_doc(backbone, head, anchors)


def write_package(root: Path, package: str) -> None:
    """YOLOv5's `models` package (or `yolov5.models`) with common.py and yolo.py, plus a stand-in `ultralytics`."""
    parts = package.split(".")
    for n in range(1, len(parts) + 1):
        root.joinpath(*parts[:n]).mkdir(exist_ok=True)
        root.joinpath(*parts[:n], "__init__.py").touch()
    folder = root.joinpath(*parts)
    (folder / "common.py").write_text(textwrap.dedent(COMMON))
    (folder / "yolo.py").write_text(textwrap.dedent(YOLO))
    tasks = root / "ultralytics" / "nn"
    tasks.mkdir(parents=True, exist_ok=True)
    for f in (root / "ultralytics" / "__init__.py", tasks / "__init__.py"):
        f.touch()
    (tasks / "tasks.py").write_text(textwrap.dedent(ULTRALYTICS))


def forget(package: str, root: Path) -> None:
    """Make the YOLOv5 classes unimportable again: off sys.path and out of sys.modules."""
    sys.path.remove(str(root))
    for name in list(sys.modules):
        if name.split(".")[0] in (package.split(".")[0], "ultralytics"):
            del sys.modules[name]
    importlib.invalidate_caches()


def yolov5_checkpoint(root: Path, path: Path, state_dict: dict, names: list[str], scale: tuple[float, float],
                      imgsz: int, package: str = "models") -> Path:
    """A best.pt as YOLOv5's train.py leaves it (fp16, EMA saved as `model`) holding `state_dict`'s weights.

    The classes are importable only while it is written: a test then imports it as a user's file from elsewhere.
    """
    import argparse

    import torch

    write_package(root, package)
    sys.path.insert(0, str(root))
    try:
        yolo = importlib.import_module(f"{package}.yolo")
        doc = {**yaml_doc(), "nc": len(names), "depth_multiple": scale[0], "width_multiple": scale[1]}
        model = yolo.DetectionModel(doc, nc=len(names))
        model.load_state_dict({k: v for k, v in state_dict.items() if k in model.state_dict()})
        model.names = list(names)
        opt = argparse.Namespace(imgsz=imgsz, weights="", batch_size=16)
        torch.save({"epoch": -1, "best_fitness": None, "model": model.half(), "ema": None, "updates": None,
                    "optimizer": None, "opt": opt, "date": "2026-12-01T10:00:00"}, path)
    finally:
        forget(package, root)
    return path
