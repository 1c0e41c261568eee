"""YOLOv5 v6.0-v7.0 checkpoints as DH-Net weights, read without YOLOv5 installed and without running its code.

`read_yolov5` gives the fp32 YOLOv5-named state dict and what the file says about the model (scale, classes, anchors
as AutoAnchor left them, training size); a model DH-Net cannot represent is refused in one line naming what differs.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fsio import UnreadableFile, check_regular, sha256_of
from .config import DEFAULT_ANCHORS_PX, SCALES, STRIDES, Scale
from .weights import WeightsError, module_tensors, walk, yolov5_model
from .yolov5_pickle import ModuleRecord, NamespaceRecord, PickleRefused, load_archive

STANDARD_LAYERS: tuple[tuple[Any, int, str, list | None], ...] = (
    (-1, 1, "Conv", [64, 6, 2, 2]), (-1, 1, "Conv", [128, 3, 2]), (-1, 3, "C3", [128]),
    (-1, 1, "Conv", [256, 3, 2]), (-1, 6, "C3", [256]), (-1, 1, "Conv", [512, 3, 2]), (-1, 9, "C3", [512]),
    (-1, 1, "Conv", [1024, 3, 2]), (-1, 3, "C3", [1024]), (-1, 1, "SPPF", [1024, 5]),
    (-1, 1, "Conv", [512, 1, 1]), (-1, 1, "Upsample", [None, 2, "nearest"]), ([-1, 6], 1, "Concat", [1]),
    (-1, 3, "C3", [512, False]), (-1, 1, "Conv", [256, 1, 1]), (-1, 1, "Upsample", [None, 2, "nearest"]),
    ([-1, 4], 1, "Concat", [1]), (-1, 3, "C3", [256, False]), (-1, 1, "Conv", [256, 3, 2]),
    ([-1, 14], 1, "Concat", [1]), (-1, 3, "C3", [512, False]), (-1, 1, "Conv", [512, 3, 2]),
    ([-1, 10], 1, "Concat", [1]), (-1, 3, "C3", [1024, False]), ([17, 20, 23], 1, "Detect", None),
)
"""YOLOv5's models/yolov5{n,s,m,l,x}.yaml (v6.0-v7.0), backbone then head: (from, repeats, module, args) before
scaling. Detect's args (nc, anchors) are read from the model itself."""

C3_LAYERS = (2, 4, 6, 8, 13, 17, 20, 23)
DEFAULT_IMGSZ = 640


class YOLOv5Error(WeightsError):
    """A YOLOv5 file DH-Net cannot import: one line naming the file and what differs."""


@dataclass(frozen=True)
class YOLOv5Source:
    """What an imported YOLOv5 file was: its name and hash, which weights were taken, classes, scale, anchors, size.

    `weights` is "ema", "model" or "state_dict"; `anchors_px` are (3 levels, 3 anchors, (w, h)) in input pixels as
    the file's Detect layer holds them; `imgsz` is the training size from its `opt` (None when absent).
    """

    file: str
    sha256: str
    weights: str
    names: tuple[str, ...]
    nc: int
    scale: tuple[float, float]
    anchors_px: tuple
    imgsz: int | None
    version: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists."""
        return _lists(asdict(self))

    def anchors_changed(self, tol: float = 1e-2) -> bool:
        """True when the anchors differ from YOLOv5's defaults (AutoAnchor or a custom YAML changed them)."""
        ours, default = torch.tensor(self.anchors_px), torch.tensor(DEFAULT_ANCHORS_PX, dtype=torch.float32)
        return ours.shape != default.shape or not torch.allclose(ours, default, atol=tol, rtol=1e-3)


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def read_yolov5(path: str | Path) -> tuple[dict[str, torch.Tensor], YOLOv5Source]:
    """The fp32 YOLOv5-named state dict of a YOLOv5 checkpoint or state dict file, and its description.

    YOLOv5Error (one line) for a file that is unsafe, unreadable, or a model DH-Net cannot represent.
    """
    try:
        path = check_regular(path, "YOLOv5 checkpoint")
        obj = load_archive(path)
        sha = sha256_of(path)
    except (UnreadableFile, PickleRefused) as exc:
        raise YOLOv5Error(str(exc)) from None
    try:
        sd, fields = _describe(path, obj)
    except YOLOv5Error:
        raise
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:  # odd values where numbers belong
        raise YOLOv5Error(f"{path}: a malformed YOLOv5 checkpoint ({type(exc).__name__}: {exc})") from None
    fp32 = {k: (t.float() if t.is_floating_point() else t).clone() for k, t in sd.items()}
    return fp32, YOLOv5Source(file=path.name, sha256=sha, **fields)


def _describe(path: Path, obj: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """Weights and description fields of what the file held: a pickled model, else a plain state dict."""
    found = yolov5_model(obj)
    if found is not None:
        return _from_model(path, obj, *found)
    plain = _plain_state_dict(obj)
    if plain is None:
        raise YOLOv5Error(f"{path}: holds neither a YOLOv5 model nor a YOLOv5-named state dict")
    return _from_state_dict(path, plain)


def _from_model(path: Path, ckpt: dict, root: ModuleRecord, key: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Weights and description of a pickled DetectionModel, after checking DH-Net can represent it."""
    yaml = root.attrs.get("yaml")
    layers = list(root.children().get("model", ModuleRecord()).children().values())
    if not isinstance(yaml, dict) or not layers:
        raise YOLOv5Error(f"{path}: its {key} has no model YAML or layers: not a YOLOv5 v6/v7 DetectionModel")
    detect = layers[-1]
    _check_levels(path, yaml, detect)
    _check_layers(path, yaml)
    _check_batchnorm(path, root)
    nc, buffers = detect.attrs.get("nc", yaml.get("nc")), detect.attrs.get("_buffers")
    anchors = buffers.get("anchors") if isinstance(buffers, dict) else None
    if not isinstance(nc, int) or not isinstance(anchors, torch.Tensor) or tuple(anchors.shape) != (3, 3, 2):
        raise YOLOv5Error(f"{path}: its Detect layer has no class count or no (3, 3, 2) anchors")
    fields = {"weights": key, "nc": nc, "names": _names(path, root.attrs.get("names", ckpt.get("names")), nc),
              "scale": (float(yaml.get("depth_multiple", 1.0)), float(yaml.get("width_multiple", 1.0))),
              "anchors_px": _anchors_px(anchors), "imgsz": _train_size(ckpt.get("opt")),
              "version": ckpt.get("yolov5pip_version") if isinstance(ckpt.get("yolov5pip_version"), str) else None}
    return module_tensors(root), fields


def _check_levels(path: Path, yaml: dict, detect: ModuleRecord) -> None:
    """Refuse a Detect layer that is not three anchor-based levels at strides 8, 16, 32 (a P6 model has four)."""
    rows = yaml.get("anchors")
    levels = detect.attrs.get("nl", len(rows) if isinstance(rows, list) else 3)
    stride = detect.attrs.get("stride")
    strides = [int(s) for s in stride.tolist()] if isinstance(stride, torch.Tensor) and stride.dim() == 1 else []
    if detect.type_name != "Detect" or not isinstance(levels, int):
        raise YOLOv5Error(f"{path}: its last layer is {detect.kind}; DH-Net needs YOLOv5's Detect over P3, P4, P5")
    if levels != 3 or strides != list(STRIDES):
        named = ", ".join(f"P{s.bit_length() - 1}" for s in strides) if len(strides) == levels else "?"
        what = "a P6 model" if named == "P3, P4, P5, P6" else "a model"
        count = {1: "one output", 2: "two outputs", 4: "four outputs", 5: "five outputs"}.get(levels, f"{levels} outputs")
        raise YOLOv5Error(f"{path}: {what} with {count} ({named}); DH-Net has three heads (P3, P4, P5)")


def _check_layers(path: Path, yaml: dict) -> None:
    """Refuse a YAML whose layer table differs from YOLOv5 v6's standard one (types, from-indices, args)."""
    if "activation" in yaml:
        raise YOLOv5Error(f"{path}: its YAML sets activation {yaml['activation']}; DH-Net's layers use SiLU")
    rows = list(yaml.get("backbone") or []) + list(yaml.get("head") or [])
    if len(rows) != len(STANDARD_LAYERS):
        raise YOLOv5Error(f"{path}: {len(rows)} layers in its YAML, YOLOv5 v6's standard architecture has "
                          f"{len(STANDARD_LAYERS)}: an edited backbone or head, which DH-Net cannot represent")
    for i, (row, standard) in enumerate(zip(rows, STANDARD_LAYERS)):
        if _normalised(row, standard[3] is None) != standard:
            raise YOLOv5Error(f"{path}: layer {i} is {str(row)[:100]} in its YAML, YOLOv5 v6's is {list(standard)}: "
                              "an edited backbone or head, which DH-Net cannot represent")


def _check_batchnorm(path: Path, root: ModuleRecord) -> None:
    """Refuse BatchNorm settings other than YOLOv5's eps 1e-3, which DH-Net's layers are built with."""
    for name, record in walk(root):
        eps = record.attrs.get("eps")
        if record.type_name == "BatchNorm2d" and not (isinstance(eps, float) and abs(eps - 1e-3) < 1e-9):
            raise YOLOv5Error(f"{path}: {name.rstrip('.')} is a BatchNorm2d with eps {eps}; YOLOv5 and DH-Net use "
                              "1e-3")


def _normalised(row: Any, ignore_args: bool) -> tuple | None:
    """A YAML layer row as (from, repeats, module, args) with YOLOv5's spellings made equal."""
    if not isinstance(row, (list, tuple)) or len(row) != 4:
        return None
    frm, n, module, args = row
    module = re.sub(r"^(torch\.)?nn\.", "", str(module))
    spelled = {"None": None, "True": True, "False": False}
    args = [spelled.get(a, a) if isinstance(a, str) else a for a in (args if isinstance(args, list) else [args])]
    if module == "C3" and len(args) == 2 and args[1] is True:
        args = args[:1]  # shortcut=True is C3's default
    return (frm, n, module, None if ignore_args else args)


def _names(path: Path, names: Any, nc: int) -> tuple[str, ...]:
    """Class names from a dict {id: name} (the package, v7 clones) or a list (older clones)."""
    if names is None:
        return tuple(f"class{i}" for i in range(nc))
    if isinstance(names, dict):
        names = [names.get(i, names.get(str(i))) for i in range(nc)]
    if not isinstance(names, (list, tuple)) or len(names) != nc or not all(isinstance(n, str) for n in names):
        raise YOLOv5Error(f"{path}: its class names do not name its {nc} classes")
    return tuple(names)


def _anchors_px(grid_units: torch.Tensor) -> tuple:
    """Anchors in input pixels from Detect's buffer in grid units (pixels / stride)."""
    px = grid_units.float() * torch.tensor(STRIDES, dtype=torch.float32).view(-1, 1, 1)
    return tuple(tuple(tuple(pair) for pair in level) for level in px.tolist())


def _grid_units(anchors_px: Any) -> torch.Tensor:
    """Anchors in pixels as Detect stores them, in grid units."""
    return torch.tensor(anchors_px, dtype=torch.float32) / torch.tensor(STRIDES, dtype=torch.float32).view(-1, 1, 1)


def _train_size(opt: Any) -> int | None:
    """Training size from YOLOv5's `opt` (a Namespace, or the dict vars(opt) of v7 clones): imgsz or img_size."""
    attrs = opt.attrs if isinstance(opt, NamespaceRecord) else opt if isinstance(opt, dict) else {}
    size = attrs.get("imgsz", attrs.get("img_size"))
    if isinstance(size, (list, tuple)) and size:
        size = max(size) if all(isinstance(s, int) for s in size) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def _plain_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """A dict of tensors, at the top level or under 'model', 'state_dict' or 'ema' (as DHNet.load_yolov5 takes)."""
    for candidate in (obj, *(obj.get(k) for k in ("model", "state_dict", "ema") if isinstance(obj, dict))):
        if isinstance(candidate, dict) and candidate and all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in candidate.items()):
            return {k: v for k, v in candidate.items() if k.startswith("model.")}
    return None


def _from_state_dict(path: Path, sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """A bare YOLOv5-named state dict: classes, scale and anchors inferred from its tensors' shapes."""
    layers = {int(k.split(".")[1]) for k in sd if k.split(".")[1].isdigit()}
    last = max(layers, default=-1)
    if f"model.{last}.m.3.weight" in sd:  # YOLOv5's P6 models end in layer 33, Detect over P3-P6
        named = "a P6 model with four outputs (P3, P4, P5, P6)" if last == 33 else "a model with four or more outputs"
        raise YOLOv5Error(f"{path}: {named}; DH-Net has three heads (P3, P4, P5)")
    if last != 24 or "model.24.m.2.weight" not in sd:
        raise YOLOv5Error(f"{path}: not a YOLOv5 v6 state dict (its layers run to model.{last}, YOLOv5 v6's to "
                          "model.24, the Detect layer)")
    anchors = sd.get("model.24.anchors")
    na = anchors.shape[1] if anchors is not None and anchors.dim() == 3 else 3
    out, c1024 = sd["model.24.m.0.weight"].shape[0], sd["model.24.m.2.weight"].shape[1]
    if out % na or out // na <= 5:
        raise YOLOv5Error(f"{path}: its P3 Detect conv has {out} outputs, not {na} anchors x (5 + classes)")
    nc = out // na - 5
    fields = {"weights": "state_dict", "nc": nc, "names": tuple(f"class{i}" for i in range(nc)),
              "scale": (_depth(path, sd), c1024 / 1024), "imgsz": None, "version": None,
              "anchors_px": _anchors_px(_grid_units(DEFAULT_ANCHORS_PX) if anchors is None else anchors)}
    return sd, fields


def _depth(path: Path, sd: dict[str, torch.Tensor]) -> float:
    """The depth multiple whose bottleneck counts the C3 layers have (a named scale's when one fits)."""
    counts = {i: len({k.split(".")[3] for k in sd if k.startswith(f"model.{i}.m.")}) for i in C3_LAYERS}
    standard = {i: STANDARD_LAYERS[i][1] for i in C3_LAYERS}
    for depth in sorted({s.depth for s in SCALES.values()} | {counts[6] / 9}):
        if all(Scale(depth, 1.0).repeats(standard[i]) == counts[i] for i in C3_LAYERS):
            return depth
    raise YOLOv5Error(f"{path}: bottlenecks per C3 layer {list(counts.values())} fit no YOLOv5 depth multiple")


def load_exactly(model: nn.Module, sd: dict[str, torch.Tensor], source: YOLOv5Source) -> None:
    """Copy every YOLOv5 tensor into a DH-Net built for `source`; YOLOv5Error when any is missing, extra or reshaped.

    Only the gates, which YOLOv5 does not have, keep their initial weights (and the anchors the model was built
    with, when a bare state dict has none).
    """
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("gates.")}
    missing = [k for k in own if k not in sd and k != "model.24.anchors"]
    extra = [k for k in sd if k not in own]
    if missing or extra:
        what = f"no {missing[0]}" if missing else f"an unexpected {extra[0]}"
        raise YOLOv5Error(f"{source.file}: {what} ({len(missing)} missing, {len(extra)} unexpected): not YOLOv5 v6's "
                          "layers")
    for k, t in own.items():
        if k in sd and t.shape != sd[k].shape:
            raise YOLOv5Error(f"{source.file}: {k} has shape {tuple(sd[k].shape)}, YOLOv5 v6 at scale "
                              f"{source.scale[0]:g}/{source.scale[1]:g} has {tuple(t.shape)}")
    model.load_state_dict(sd, strict=False)
