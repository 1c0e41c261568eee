"""YOLOv5-named state dicts: read from files or from pickled YOLOv5 models, loaded into a DHNet by name and shape.

Plain state dicts are read with torch.load(weights_only=True); a pickled YOLOv5 model (its best.pt) through the
restricted reader of yolov5_pickle, which rebuilds tensors only. Any other pickled object is refused in one line.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..messages import InputError
from .yolov5_pickle import ModuleRecord, PickleRefused, load_archive

MAX_MODULES = 100_000
"""Far more modules than any YOLOv5 model has: a walk over a file's records stops there."""


class WeightsError(InputError):
    """A weights file that cannot be used (one line: the file and the reason)."""


@dataclass
class LoadReport:
    """What a YOLOv5 state dict gave the model: loaded keys, skipped keys with reasons, keys left as initialised."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs."""
        return (f"loaded {len(self.loaded)} tensors, skipped {len(self.skipped)}, "
                f"kept {len(self.missing)} as initialised")


def read_state_dict(source: str | Path | dict) -> dict[str, torch.Tensor]:
    """A state dict from a dict or a `.pt` file holding one (optionally under 'model' or 'state_dict')."""
    if isinstance(source, dict):
        sd = source
    else:
        path = Path(source)
        if not path.is_file():
            raise WeightsError(f"{path}: no such file")
        sd = _read_file(path)
    for key in ("model", "state_dict", "ema"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{source}: does not hold a state dict of tensors")
    return sd


def _read_file(path: Path) -> Any:
    """torch.load(weights_only=True), else the restricted reader: a YOLOv5 model gives its (EMA) weights in fp32.

    torch's own refusal is many lines with advice we never pass on; the restricted reader's is one line.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - read again by the restricted reader, which explains in one line
        pass
    try:
        obj = load_archive(path)
    except PickleRefused as exc:
        raise WeightsError(f"{path}: not a plain state dict loadable with weights_only=True (save "
                           f"`model.state_dict()` instead of the model object): {exc.reason}") from None
    weights = yolov5_weights(obj)
    return obj if weights is None else weights


def load_yolov5_weights(model: nn.Module, source: str | Path | dict) -> LoadReport:
    """Copy every tensor whose name and shape match; report the rest (gates stay initialised)."""
    incoming = read_state_dict(source)
    own = model.state_dict()
    report = LoadReport()
    accepted = {}
    for name, tensor in incoming.items():
        if name not in own:
            report.skipped.append((name, "no such tensor in this model"))
        elif own[name].shape != tensor.shape:
            report.skipped.append((name, f"shape {tuple(tensor.shape)} != {tuple(own[name].shape)}"))
        else:
            accepted[name] = tensor
            report.loaded.append(name)
    report.missing = [k for k in own if k not in accepted]
    model.load_state_dict(accepted, strict=False)
    return report


def walk(root: ModuleRecord, prefix: str = "") -> Iterator[tuple[str, ModuleRecord]]:
    """Each module of the tree with its dotted name plus '.', parents first; a cycle is not followed.

    A file can make records refer to themselves; the walk also stops after more modules than any YOLOv5 has.
    """
    todo: list[tuple[str, ModuleRecord, frozenset[int]]] = [(prefix, root, frozenset())]
    for _ in range(MAX_MODULES):
        if not todo:
            return
        name, record, above = todo.pop()
        yield name, record
        above = above | {id(record)}
        todo += reversed([(f"{name}{k}.", c, above) for k, c in record.children().items() if id(c) not in above])


def module_tensors(record: ModuleRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict the module would give: parameters and persistent buffers of it and its children, by name."""
    out: dict[str, torch.Tensor] = {}
    for name, rec in walk(record, prefix):
        transient = rec.attrs.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            tensors = rec.attrs.get(group)
            for key, t in (tensors.items() if isinstance(tensors, dict) else ()):
                if isinstance(t, torch.Tensor) and not (group == "_buffers" and key in transient):
                    out[name + key] = t
    return out


def yolov5_model(obj: Any) -> tuple[ModuleRecord, str] | None:
    """The detection model of a YOLOv5 checkpoint dict and its key: `ema` when present, else `model` (as YOLOv5)."""
    if not isinstance(obj, dict):
        return None
    for key in ("ema", "model"):
        rec = obj.get(key)
        if isinstance(rec, ModuleRecord) and rec.type_name in ("DetectionModel", "Model"):
            return rec, key
    return None


def yolov5_weights(obj: Any) -> dict[str, torch.Tensor] | None:
    """The fp32 YOLOv5-named state dict of a YOLOv5 checkpoint dict, or None when `obj` is not one."""
    found = yolov5_model(obj)
    if found is None:
        return None
    return {k: (t.float() if t.is_floating_point() else t).clone() for k, t in module_tensors(found[0]).items()}


def describe_unloadable(path: str | Path) -> str:
    """What a file that torch.load(weights_only=True) refused is, in words for a one-line message."""
    try:
        obj = load_archive(path)
    except PickleRefused as exc:
        return exc.reason
    if yolov5_model(obj) is not None:
        return (f"a pickled YOLOv5 model, not a state dict: import it with "
                f"`python -m dh_tune.import_yolov5 {path} --out MODEL.pt`")
    return "it holds pickled objects that a weights-only load refuses"
