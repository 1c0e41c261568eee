"""What chaining the stage graphs costs under ONNX Runtime, and two ways tried to make it cheaper.

Side by side at one input size, interleaved in random order, medians, ratio to the single static graph:
  static       the whole network as one graph (no gate)
  chain        the deployed early exit: one graph per stage with its gate, numpy arrays between them
  chain-ort    the same graphs, ONNX Runtime's own tensors (OrtValue) passed between them
  chain-bind   the same graphs through I/O binding
  if-graph     the early exit as one graph: the later stages inside ONNX `If` nodes on the gate scores
each with every image running all heads through both gates, and the if-graph also leaving after head 1.
The deployment uses `chain`; the others are kept here because they were measured not to be faster.

    python benchmarks/bench_chain.py --imgsz 224
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ALL_HEADS, EXIT_1 = (1e-6, 1e-6), (1 - 1e-6, 1e-6)


def if_graph(whole: Path, thresholds: tuple[float, float], out: Path) -> Path:
    """The early exit of `thresholds` as one ONNX graph: each later segment inside an If on the gate before it.

    A branch not taken returns empty (0,) maps; the maps of the heads that ran are those of the static graph.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.utils import Extractor

    from dh_tune.export.graphs import plan

    model = onnx.load(str(whole))
    specs = plan(*thresholds)
    parts = [Extractor(model).extract_model(list(s.inputs), list(s.outputs)) for s in specs]
    const = lambda name, value: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))  # noqa: E731
    any_float = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)  # noqa: E731

    def segment(k: int) -> tuple[list, list[str]]:
        """Nodes of segment k and of everything after it; the names of the maps and scores it yields."""
        spec, nodes = specs[k], list(parts[k].graph.node)
        yields = [f"p{s + 2}_map" for s in spec.stages] + ([f"gate{spec.gate}_score"] if spec.gate else [])
        if spec.gate and k + 1 < len(specs):
            g = spec.gate
            later, names = segment(k + 1)
            nodes += [const(f"t{g}", np.array(thresholds[g - 1], np.float32)),
                      helper.make_node("GreaterOrEqual", [f"gate{g}_score", f"t{g}"], [f"go{g}_1"]),
                      helper.make_node("Reshape", [f"go{g}_1", "scalar_shape"], [f"go{g}"])]
            then = helper.make_graph(later + [helper.make_node("Identity", [n], [f"{n}_then"]) for n in names],
                                     f"then{g}", [], [any_float(f"{n}_then") for n in names])
            skip = helper.make_graph([const(f"{n}_else", np.zeros((0,), np.float32)) for n in names],
                                     f"else{g}", [], [any_float(f"{n}_else") for n in names])
            nodes.append(helper.make_node("If", [f"go{g}"], names, then_branch=then, else_branch=skip))
            yields += names
        return nodes, yields

    nodes, outputs = segment(0)
    nodes.insert(0, const("scalar_shape", np.zeros((0,), np.int64)))
    initializers = {i.name: i for p in parts for i in p.graph.initializer}
    graph = helper.make_graph(nodes, "dhnet_early_exit", [model.graph.input[0]], [any_float(o) for o in outputs],
                              initializer=list(initializers.values()))
    fused = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    fused.functions.extend(model.functions)
    onnx.save(fused, str(out))
    return out


def variants(imgsz: int, folder: Path, nc: int = 11, seed: int = 0) -> dict[str, callable]:
    """Name -> a call returning {output name: array} for one random image."""
    import onnxruntime as ort
    import torch

    from dh_tune.export.dhnet_runtime import _ort_session
    from dh_tune.export.graphs import cut, export_whole, plan
    from dh_tune.model import DHNet

    torch.manual_seed(seed)
    whole = export_whole(DHNet("n", nc=nc).eval(), imgsz, folder / "whole.onnx")
    x = np.random.default_rng(seed).random((1, 3, imgsz, imgsz), dtype=np.float32)
    specs = plan(*ALL_HEADS)
    chain = [_ort_session(cut(whole, s, folder / f"{s.name}.onnx"), None) for s in specs]
    names = [[o.name for o in s.get_outputs()] for s in chain]
    static = _ort_session(cut(whole, plan(0.0, 0.0)[0], folder / "static.onnx"), None)

    def run_chain(kind: str) -> dict:
        env = {"images": x if kind == "numpy" else ort.OrtValue.ortvalue_from_numpy(x)}
        for sess, outs, spec in zip(chain, names, specs):
            feeds = {k: env[k] for k in spec.inputs}
            if kind == "numpy":
                env.update(zip(outs, sess.run(outs, feeds)))
            elif kind == "ortvalue":
                env.update(zip(outs, sess.run_with_ort_values(outs, feeds)))
            else:
                binding = sess.io_binding()
                for k, v in feeds.items():
                    binding.bind_ortvalue_input(k, v)
                for o in outs:
                    binding.bind_output(o)
                sess.run_with_iobinding(binding)
                env.update(zip(outs, binding.get_outputs()))
            score = env.get(f"gate{spec.gate}_score") if spec.gate else None
            if score is not None and float(np.asarray(score if kind == "numpy" else score.numpy()).item()) < ALL_HEADS[spec.gate - 1]:
                break
        return {k: (v if kind == "numpy" else v.numpy()) for k, v in env.items() if k.endswith("_map")}

    def one(sess) -> callable:
        outs = [o.name for o in sess.get_outputs()]
        return lambda: dict(zip(outs, sess.run(outs, {"images": x})))

    return {"static": one(static), "chain": lambda: run_chain("numpy"), "chain-ort": lambda: run_chain("ortvalue"),
            "chain-bind": lambda: run_chain("binding"),
            "if-graph": one(_ort_session(if_graph(whole, ALL_HEADS, folder / "if-all.onnx"), None)),
            "if-graph exit 1": one(_ort_session(if_graph(whole, EXIT_1, folder / "if-exit1.onnx"), None))}


def measure(imgsz: int = 224, rounds: int = 150) -> dict:
    """Median ms per variant, ratio to the static graph, and each variant's largest map difference from it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_runtimes import time_interleaved

    with tempfile.TemporaryDirectory(prefix="bench-chain-") as tmp:
        fns = variants(imgsz, Path(tmp))
        ref = fns["static"]()
        diff = {n: max(float(np.abs(out[k] - ref[k]).max()) for k in out if k.endswith("_map") and out[k].size)
                for n, out in ((n, f()) for n, f in fns.items())}
        ms = time_interleaved(fns, rounds)
    return {"imgsz": imgsz, "rounds": rounds, "ms": ms, "ratio": {n: v / ms["static"] for n, v in ms.items()},
            "max_map_diff": diff}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--imgsz", type=int, default=224)
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    doc = measure(args.imgsz, args.rounds)
    for n, v in doc["ms"].items():
        print(f"{n:<16} {v:7.3f} ms  {doc['ratio'][n]:.3f}x static   maps within {doc['max_map_diff'][n]:.1e}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
