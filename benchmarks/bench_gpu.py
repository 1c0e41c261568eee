"""Per-image network latency of DH-Net on a CUDA GPU in fp32, fp16 and AMP, against YOLOv5's own static graph.

The GPU counterpart of bench_runtimes.py: at every size and precision, YOLOv5's static graph (reference),
dh-tune's fused static model and the early exit with all heads, exit after head 1 and after head 2 (gates
computed), batch 1, variants interleaved in random order, each call timed to the end of its GPU work,
medians. fp16 is YOLOv5's `--half` (weights and input in half precision); AMP is torch.autocast over fp32
weights. Also records whether ONNX Runtime's CUDA provider is installed and, when it is, times the
exported graphs (static, the forced exits, the stages chained) through the torch-free runtime module.

    python benchmarks/bench_gpu.py --export-onnx gpu-graphs          # where torch's ONNX exporter is installed
    python benchmarks/bench_gpu.py --onnx-folders gpu-graphs --json gpu.json
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtimes import EXITS, time_interleaved, yolov5_reference  # noqa: E402

PRECISIONS = ("fp32", "fp16", "amp")
EXPECTED_EXIT = {"all heads": 3, "exit 1": 1, "exit 2": 2}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=None, help="trained checkpoint (default: untrained YOLOv5n)")
    p.add_argument("--nc", type=int, default=11, help="classes of the untrained model (default 11)")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 320, 640])
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--rounds", type=int, default=200, help="timed rounds per variant (default 200)")
    p.add_argument("--device", default="cuda", help="torch device (default cuda; cpu only to check the script)")
    p.add_argument("--export-onnx", type=Path, default=None, metavar="DIR",
                   help="instead of timing: export the graphs ONNX Runtime's CUDA provider is timed on into DIR")
    p.add_argument("--onnx-folders", type=Path, default=None, metavar="DIR",
                   help="graphs written by --export-onnx, timed with ONNX Runtime's CUDA provider when it is installed")
    p.add_argument("--train-run", type=Path, default=None, metavar="RUN_DIR",
                   help="instead of timing: summarise a finished `python -m dh_tune.train --gpu` run folder")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return p.parse_args(argv)


def _synced(fn, device: torch.device):
    """fn followed by waiting for the device, so a call's time covers its GPU work."""
    if device.type != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize(device)
    return run


def precision_variants(model, imgsz: int, precision: str, device: torch.device) -> tuple[dict, dict[str, int]]:
    """Name -> call for one precision at one size, and the exit level each dynamic variant really took."""
    fused = model.fused().to(device)
    ref = yolov5_reference(copy.deepcopy(model)).to(device)
    x = torch.rand(1, 3, imgsz, imgsz, device=device)
    if precision == "fp16":
        fused, ref, x = copy.deepcopy(fused).half(), ref.half(), x.half()
    ctx = (lambda: torch.autocast(device.type, dtype=torch.float16)) if precision == "amp" else nullcontext

    def call(fn, *args):
        def run():
            with ctx():
                return fn(*args)
        return run

    out = {f"{precision} YOLOv5 static (reference)": call(ref, x), f"{precision} static": call(fused.forward_static, x)}
    levels = {}
    with torch.inference_mode():
        for name, t in EXITS.items():
            out[f"{precision} {name}"] = call(fused.forward_dynamic, x, t)
            levels[name] = int(out[f"{precision} {name}"]().exit_level[0])
    return {k: _synced(v, device) for k, v in out.items()}, levels


ORT_VARIANTS = {"static": "static", "all heads": "allheads", "exit 1": "exit1", "exit 2": "exit2",
                "stages chained, no gate": "chain"}


def export_for_onnxruntime(model, sizes, folder: Path) -> None:
    """Write the ONNX deployment folders that `onnxruntime_cuda` times (a GPU machine then needs no exporter)."""
    from bench_runtimes import export_variants

    for s in sizes:
        export_variants(model, s, folder, "onnxruntime")


def onnxruntime_cuda(folder: Path | None, sizes, rounds: int) -> dict:
    """Whether ONNX Runtime's CUDA provider is installed; if so and `folder` holds the exported graphs, ms per
    variant and size through the torch-free runtime module (numpy in and out, as a deployment runs)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"installed": False, "reason": "onnxruntime is not installed"}
    providers = ort.get_available_providers()
    doc = {"installed": True, "version": ort.__version__, "providers": providers}
    if "CUDAExecutionProvider" not in providers:
        doc["reason"] = f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (the onnxruntime-gpu build is needed)"
        return doc
    if folder is None:
        doc["reason"] = "no exported graphs given (--onnx-folders)"
        return doc
    from dh_tune.export.dhnet_runtime import Detector

    doc["sizes"] = {}
    for s in sizes:
        x = np.random.default_rng(0).random((1, 3, s, s), dtype=np.float32)
        dets = {name: Detector(folder / f"onnxruntime-{s}-{tag}", "onnxruntime", device="cuda")
                for name, tag in ORT_VARIANTS.items()}
        ms = time_interleaved({n: (lambda d=d, x=x: d.run_network(x)) for n, d in dets.items()}, rounds)
        levels = {n: int(dets[n].run_network(x)[1]) for n in EXPECTED_EXIT}
        doc["sizes"][str(s)] = {"ms": ms, "exit_levels": levels, "all_heads_over_static": ms["all heads"] / ms["static"] - 1,
                                "exit1_saving": 1 - ms["exit 1"] / ms["all heads"]}
    return doc


def measure(checkpoint: Path | None = None, sizes=(224, 320, 640), precisions=PRECISIONS, rounds: int = 200,
            nc: int = 11, device: str = "cuda", onnx_folders: Path | None = None) -> dict:
    """Timings per size, precision and variant, the exit levels taken, the MAC-predicted exit-1 saving."""
    from dh_tune.evaluate.exit_cache import exit_macs
    from dh_tune.model import DHNet
    from dh_tune.model.checkpoint import load_model

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size, as YOLOv5's detect.py
    model = load_model(checkpoint)[0] if checkpoint else DHNet("n", nc=nc)
    model.eval()
    doc = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
           "checkpoint": str(checkpoint) if checkpoint else None, "rounds": rounds, "sizes": {}}
    for s in sizes:
        print(f"[gpu] {s} px ...", file=sys.stderr, flush=True)
        fns, levels = {}, {}
        for p in precisions:
            f, lv = precision_variants(model, s, p, dev)
            fns.update(f)
            levels[p] = lv
        ms = time_interleaved(fns, rounds)
        stages, gates = exit_macs(model, s)
        doc["sizes"][str(s)] = {"ms": ms, "exit_levels": levels,
                                "mac_exit1_saving": float(1 - (stages[0] + gates[0]) / (stages[2] + gates.sum()))}
    doc["onnxruntime_cuda"] = onnxruntime_cuda(onnx_folders, sizes, rounds) if dev.type == "cuda" else None
    doc["summary"] = summary(doc, precisions)
    return doc


def summary(doc: dict, precisions) -> dict:
    """Per size and precision: static vs YOLOv5 and vs fp32, all heads over static, exit-1 saving vs MACs."""
    out = {}
    for s, d in doc["sizes"].items():
        ms = d["ms"]
        out[s] = {}
        for p in precisions:
            static = ms[f"{p} static"]
            out[s][p] = {"static_vs_yolov5": static / ms[f"{p} YOLOv5 static (reference)"],
                         "static_vs_fp32": static / ms["fp32 static"] if "fp32" in precisions else None,
                         "all_heads_over_static": ms[f"{p} all heads"] / static - 1,
                         "exit1_saving": 1 - ms[f"{p} exit 1"] / ms[f"{p} all heads"],
                         "exit1_saving_macs": d["mac_exit1_saving"],
                         "exits_as_asked": all(d["exit_levels"][p][n] == EXPECTED_EXIT[n] for n in EXPECTED_EXIT)}
    return out


def train_run_summary(run_dir: Path) -> dict:
    """Per-epoch time, throughput and accuracy of a finished training run, from its last checkpoint."""
    from dh_tune.model.checkpoint import CheckpointPipeline, load_checkpoint

    ckpt = load_checkpoint(run_dir / "weights" / "last.pt")
    cfg = CheckpointPipeline.of(ckpt).config
    hist = ckpt["history"]
    keys = ("epoch", "epoch_time_s", "train_time_s", "images_per_s", "ap50", "ap50_95", "gate1_acc", "gate2_acc")
    return {"pipeline": cfg["name"], "gpu": cfg["ray"]["gpu"], "workers": cfg["ray"]["workers"], "amp": cfg["train"]["amp"],
            "imgsz": cfg["data"]["imgsz"], "batch_size": cfg["train"]["batch_size"],
            "epochs": [{k: float(h[k]) for k in keys if k in h} for h in hist]}


def format_doc(doc: dict) -> str:
    lines = [f"{doc['device']}, torch {doc['torch']} (CUDA {doc['cuda']}, cuDNN {doc['cudnn']}), batch 1, "
             f"{doc['rounds']} interleaved rounds, medians"]
    sizes = list(doc["sizes"])
    names = list(doc["sizes"][sizes[0]]["ms"])
    lines.append(f"{'variant':<34}" + "".join(f"{s + ' px':>12}" for s in sizes))
    lines += [f"{n:<34}" + "".join(f"{doc['sizes'][s]['ms'][n]:9.3f} ms" for s in sizes) for n in names]
    for s, per in doc["summary"].items():
        for p, g in per.items():
            lines.append(f"{s} px {p}: static {g['static_vs_yolov5']:.2f}x YOLOv5; all heads "
                         f"{100 * g['all_heads_over_static']:+.1f}% over static; exit-1 saving "
                         f"{100 * g['exit1_saving']:.1f}% vs MACs {100 * g['exit1_saving_macs']:.1f}%"
                         + ("" if g["exits_as_asked"] else " [EXITS NOT AS ASKED]"))
    ort = doc.get("onnxruntime_cuda")
    if ort and "sizes" in ort:
        for s, d in ort["sizes"].items():
            lines.append(f"ONNX Runtime CUDA {s} px: " + ", ".join(f"{n} {v:.3f} ms" for n, v in d["ms"].items())
                         + f"; all heads {100 * d['all_heads_over_static']:+.1f}% over static, exit-1 saving "
                         f"{100 * d['exit1_saving']:.1f}%, exits {d['exit_levels']}")
    elif ort:
        lines.append(f"ONNX Runtime CUDA: {ort['reason']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.export_onnx is not None:
        from dh_tune.model import DHNet
        from dh_tune.model.checkpoint import load_model

        model = load_model(args.checkpoint)[0] if args.checkpoint else DHNet("n", nc=args.nc)
        export_for_onnxruntime(model.eval(), args.sizes, args.export_onnx)
        print(f"exported to {args.export_onnx}")
        return 0
    if args.train_run is not None:
        doc = train_run_summary(args.train_run)
        last = doc["epochs"][-1]
        print(f"{len(doc['epochs'])} epochs, last: {last.get('images_per_s', 0):.0f} images/s, "
              f"AP50 {last.get('ap50', float('nan')):.3f} AP50:95 {last.get('ap50_95', float('nan')):.3f}")
        if args.json:
            args.json.write_text(json.dumps(doc, indent=1))
        return 0
    doc = measure(args.checkpoint, args.sizes, args.precisions, args.rounds, args.nc, args.device, args.onnx_folders)
    print(format_doc(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
