"""Load YOLOv5-named state dicts into a DHNet by name and shape.

Only plain state dicts are read (torch.load with weights_only=True): a pickled YOLOv5 model
object is refused, since unpickling runs arbitrary code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..messages import InputError, first_line


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
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling refusal becomes one clear line
            raise WeightsError(f"{path}: not a plain state dict loadable with weights_only=True "
                               f"(save `model.state_dict()` instead of the model object): "
                               f"{first_line(exc)}") from None
    for key in ("model", "state_dict", "ema"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{source}: does not hold a state dict of tensors")
    return sd


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
