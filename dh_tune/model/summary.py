"""Parameters and multiply-accumulates of each DH-Net part, and the paper's Table 2 from them.

MACs are counted on the meta device (no memory, no compute) with hooks on Conv2d and Linear,
the paper's "G" unit being GMACs of convolutions.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .dhnet import DHNet

PARTS = ("stage1", "gate1", "stage2", "gate2", "stage3")
# Which parts run when an image leaves after head k (gate 1 always runs; gate 2 when stage 2 ran).
EXIT_PARTS = {1: ("stage1", "gate1"), 2: ("stage1", "gate1", "stage2", "gate2"), 3: PARTS}


@dataclass(frozen=True)
class Cost:
    """Parameters and GMACs of a part or a path through the network."""

    params: int
    gmacs: float

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.gmacs + other.gmacs)


def _part_modules(model: DHNet) -> dict[str, list[nn.Module]]:
    layers, head = model.model, model.detect.m
    parts = {
        "stage1": [layers[i] for i in range(18)] + [head[0]],
        "stage2": [layers[i] for i in range(18, 21)] + [head[1]],
        "stage3": [layers[i] for i in range(21, 24)] + [head[2]],
    }
    if model.gates is not None:
        parts["gate1"], parts["gate2"] = [model.gates[0]], [model.gates[1]]
    return parts


def _macs_hook(store: dict, part: list[str]):
    def hook(module: nn.Module, inputs, output) -> None:
        per_image = output[0].numel()
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            store[part[0]] = store.get(part[0], 0) + per_image * k
        elif isinstance(module, nn.Linear):
            store[part[0]] = store.get(part[0], 0) + per_image * module.in_features
    return hook


def part_costs(model: DHNet, imgsz: int) -> dict[str, Cost]:
    """Params and GMACs per part (stage1, gate1, stage2, gate2, stage3) for one imgsz x imgsz image."""
    params = {name: sum(p.numel() for m in mods for p in m.parameters()) for name, mods in _part_modules(model).items()}
    meta = copy.deepcopy(model).to("meta").eval()
    macs: dict[str, int] = {}
    current = ["stage1"]
    handles = [m.register_forward_hook(_macs_hook(macs, current))
               for m in meta.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            x = torch.empty(1, 3, imgsz, imgsz, device="meta")
            s1 = meta.stage1(x)
            current[0] = "stage2"
            p4, _ = meta.stage2(s1.p3, s1.lateral14)
            current[0] = "stage3"
            meta.stage3(p4, s1.lateral10)
            if meta.gates is not None:
                current[0] = "gate1"
                meta.gate_logit(0, s1.p3)
                current[0] = "gate2"
                meta.gate_logit(1, p4)
    finally:
        for h in handles:
            h.remove()
    return {name: Cost(params[name], macs.get(name, 0) / 1e9) for name in params}


def summarize(model: DHNet, imgsz: int) -> dict:
    """The model-summary document: static YOLOv5, each exit path, savings and gate overhead."""
    parts = part_costs(model, imgsz)
    static = parts["stage1"] + parts["stage2"] + parts["stage3"]
    doc: dict = {"imgsz": imgsz, "nc": model.nc, "static": asdict(static), "parts": {k: asdict(v) for k, v in parts.items()}}
    if model.gates is None:
        return doc
    exits = {k: sum((parts[p] for p in names[1:]), parts[names[0]]) for k, names in EXIT_PARTS.items()}
    full = exits[3]
    doc["exit"] = {}
    for k, cost in exits.items():
        stages = sum((parts[p] for p in EXIT_PARTS[k] if p.startswith("stage")), Cost(0, 0.0))
        doc["exit"][str(k)] = {
            **asdict(cost),
            "params_without_gates": stages.params,
            "gmacs_without_gates": stages.gmacs,
            "params_saved": full.params - cost.params,
            "gmacs_saved": full.gmacs - cost.gmacs,
            "params_saved_pct": 100.0 * (full.params - cost.params) / full.params,
            "gmacs_saved_pct": 100.0 * (full.gmacs - cost.gmacs) / full.gmacs,
        }
    gates = parts["gate1"] + parts["gate2"]
    doc["gates"] = {**asdict(gates), "params_pct": 100.0 * gates.params / full.params,
                    "gmacs_pct": 100.0 * gates.gmacs / full.gmacs}
    return doc


def format_summary(doc: dict, title: str) -> str:
    """The summary as a plain-text table (paper Table 2 layout plus absolute costs)."""
    lines = [title, f"static YOLOv5 (no gates): {doc['static']['params'] / 1e6:.3f}M params, "
                    f"{doc['static']['gmacs']:.3f} GMACs"]
    if "exit" not in doc:
        return "\n".join(lines)
    g = doc["gates"]
    lines.append(f"gates: {g['params'] / 1e6:.3f}M params ({g['params_pct']:.2f}%), "
                 f"{g['gmacs']:.3f} GMACs ({g['gmacs_pct']:.2f}%)")
    header = f"{'exit after':>10} | {'params':>9} | {'GMACs':>8} | {'no gates':>17} | {'params saved':>18} | {'GMACs saved':>18}"
    lines += [header, "-" * len(header)]
    for k, e in doc["exit"].items():
        lines.append(
            f"{'head ' + k:>10} | {e['params'] / 1e6:8.3f}M | {e['gmacs']:8.3f} | "
            f"{e['params_without_gates'] / 1e6:6.3f}M {e['gmacs_without_gates']:8.3f}G | "
            f"{0.0 - e['params_saved'] / 1e6:7.3f}M ({0.0 - e['params_saved_pct']:5.1f}%) | "
            f"{0.0 - e['gmacs_saved']:7.3f}G ({0.0 - e['gmacs_saved_pct']:5.1f}%)")
    return "\n".join(lines)
