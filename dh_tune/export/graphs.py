"""DH-Net cut into graphs a runtime can run: which stages and gates each graph holds, and the ONNX export.

Early exit cannot be traced into one graph (the tracer freezes the branch it took), so the network is
exported as a chain of segments cut at every gate that decides something (see `dh_tune.gating`):
stage 1 with gate 1, stage 2 with gate 2, stage 3. A gate whose threshold decides alone is left
out and the stages around it are joined; a static profile is one graph. Tensors that pass between
segments are named inputs and outputs.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..gating import GRAPH_KEYS, deepest_head, graph_key, plan_graphs
from ..model import DHNet

OPSET = 20

STAGE_INPUTS: dict[int, tuple[str, ...]] = {1: ("images",), 2: ("p3", "lateral14"), 3: ("p4", "lateral10")}
STAGE_OUTPUTS: dict[int, tuple[str, ...]] = {1: ("p3_map", "p3", "lateral14", "lateral10"), 2: ("p4_map", "p4"),
                                             3: ("p5_map",)}
GATE_INPUT = {1: "p3", 2: "p4"}
"""Gate k reads the features of head k and decides whether stage k+1 runs."""


@dataclass(frozen=True)
class SegmentSpec:
    """One exported graph: consecutive stages, optionally followed by the gate after the last of them."""

    stages: tuple[int, ...]
    gate: int | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def name(self) -> str:
        parts = [f"stage{'-'.join(map(str, self.stages))}"] if self.stages else []
        return "-".join(parts + ([f"gate{self.gate}"] if self.gate else []))


def _spec(stages: tuple[int, ...], gate: int | None, later: tuple[int, ...]) -> SegmentSpec:
    """Inputs: what the stages (and gate) need and do not make; outputs: maps, gate score, what later stages need."""
    made = [n for s in stages for n in STAGE_OUTPUTS[s]]
    needed = [n for s in stages for n in STAGE_INPUTS[s]] + ([GATE_INPUT[gate]] if gate else [])
    inputs = tuple(dict.fromkeys(n for n in needed if n not in made))
    carried = [n for s in later for n in STAGE_INPUTS[s] if n in made]
    outputs = [f"p{s + 2}_map" for s in stages] + ([f"gate{gate}_score"] if gate else []) + carried
    return SegmentSpec(stages, gate, inputs, tuple(dict.fromkeys(outputs)))


def plan(t1: float, t2: float) -> list[SegmentSpec]:
    """The graphs that run a profile with thresholds (t1, t2), in order (one graph for a static profile)."""
    last = deepest_head(t1, t2)
    return [_spec(stages, gate, tuple(range(stages[-1] + 1, last + 1))) for stages, gate in plan_graphs(t1, t2)]


def part_specs() -> dict[str, SegmentSpec]:
    """One graph per timed part of a latency table: each stage alone and each gate alone."""
    return {"stage1": _spec((1,), None, (2, 3)), "gate1": _spec((), 1, ()), "stage2": _spec((2,), None, (3,)),
            "gate2": _spec((), 2, ()), "stage3": _spec((3,), None, ())}


def deployment_specs() -> dict[str, SegmentSpec]:
    """Every graph some profile's plan runs, by `dh_tune.gating.graph_key` (the keys of GRAPH_KEYS)."""
    corners = (0.0, 0.5, 1.0)
    specs = {graph_key(g, deepest_head(a, b)): spec for a in corners for b in corners
             for g, spec in zip(plan_graphs(a, b), plan(a, b))}
    return {key: specs[key] for key in GRAPH_KEYS}


ALL_TENSORS = ("p3_map", "p3", "lateral14", "lateral10", "gate1_score", "p4_map", "p4", "gate2_score", "p5_map")
"""Outputs of the whole-network graph that every segment is cut from."""


class WholeNetwork(nn.Module):
    """Stages and both gates in one graph that outputs every tensor a segment can receive or return."""

    def __init__(self, net: DHNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        net = self.net
        s1 = net.stage1(images)
        p4, p4_map = net.stage2(s1.p3, s1.lateral14)
        return (s1.p3_map, s1.p3, s1.lateral14, s1.lateral10, torch.sigmoid(net.gate_logit(0, s1.p3)), p4_map, p4,
                torch.sigmoid(net.gate_logit(1, p4)), net.stage3(p4, s1.lateral10))


class Segment(nn.Module):
    """Runs the stages and gate of one SegmentSpec on named tensors (positional, in the spec's input order)."""

    def __init__(self, net: DHNet, spec: SegmentSpec) -> None:
        super().__init__()
        self.net, self.spec = net, spec

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        net, env = self.net, dict(zip(self.spec.inputs, inputs))
        for stage in self.spec.stages:
            if stage == 1:
                s1 = net.stage1(env["images"])
                env.update(p3_map=s1.p3_map, p3=s1.p3, lateral14=s1.lateral14, lateral10=s1.lateral10)
            elif stage == 2:
                env["p4"], env["p4_map"] = net.stage2(env["p3"], env["lateral14"])
            else:
                env["p5_map"] = net.stage3(env["p4"], env["lateral10"])
        if self.spec.gate:
            env[f"gate{self.spec.gate}_score"] = torch.sigmoid(net.gate_logit(self.spec.gate - 1,
                                                                              env[GATE_INPUT[self.spec.gate]]))
        return tuple(env[name] for name in self.spec.outputs)


def example_inputs(net: DHNet, spec: SegmentSpec, imgsz: int) -> tuple[torch.Tensor, ...]:
    """Zero tensors of the shapes this segment receives at input size imgsz (batch 1)."""
    with torch.no_grad():
        s1 = net.stage1(torch.zeros(1, 3, imgsz, imgsz))
        p4, _ = net.stage2(s1.p3, s1.lateral14)
    shapes = {"images": (1, 3, imgsz, imgsz), "p3": s1.p3.shape, "lateral14": s1.lateral14.shape,
              "lateral10": s1.lateral10.shape, "p4": p4.shape}
    return tuple(torch.zeros(shapes[name]) for name in spec.inputs)


def export_onnx(net: DHNet, spec: SegmentSpec, imgsz: int, path: Path) -> Path:
    """Write one segment of the fused, eval-mode network as an fp32 ONNX graph with a fixed input size."""
    net = net.cpu().fused()
    return _export(Segment(net, spec), example_inputs(net, spec, imgsz), spec.inputs, spec.outputs, path)


def export_whole(net: DHNet, imgsz: int, path: Path) -> Path:
    """Write the whole network with both gates as one fp32 ONNX graph whose outputs are ALL_TENSORS."""
    net = net.cpu().fused()
    return _export(WholeNetwork(net), (torch.zeros(1, 3, imgsz, imgsz),), ("images",), ALL_TENSORS, path)


def cut(whole: Path, spec: SegmentSpec, path: Path) -> Path:
    """The segment `spec` cut out of a graph written by export_whole (one export serves every segment)."""
    import onnx
    from onnx.utils import Extractor

    model = Extractor(onnx.load(str(whole))).extract_model(list(spec.inputs), list(spec.outputs))
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], inputs, outputs, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The exporter logs skipped torchvision ops and prints progress; neither concerns a DH-Net.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(module.eval(), args, str(path), dynamo=True, opset_version=OPSET, input_names=list(inputs),
                          output_names=list(outputs), external_data=False, verbose=False, optimize=True)
    return path
