"""Dynamic heads against static YOLOv5 on the same images, next to an oracle gate and the MACs' prediction.

Ways to run one trained checkpoint (inference-folded: Conv+BN fused) over the val images, timed image
by image in turn so that machine drift hits them alike:
  static     plain YOLOv5 (all heads, no gates): the baseline every ratio is taken against
  all        the DH-Net with thresholds (0, 0): all heads, gates not computed (they decide nothing)
  all-gated  all heads through both gates (thresholds just above 0: the gates run, every image continues)
  gates-0.5  the learned gates at their training operating point (0.5, 0.5)
  profile    the DH-Net with the given thresholds (a gated profile chosen by the search)
  oracle     each image stops at the head its Eq. 3-7 labels ask for, no gate computed (the best any
             gate could do)
Network time (the forward alone) is compared with the saving the MACs predict; end-to-end time adds
pre-processing and NMS. AP of each comes from the exit cache (same detections, validation NMS).

    python benchmarks/bench_dynamic_vs_static.py --checkpoint CKPT --imgsz 224 320 640 --thresholds 0.2 0.7
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dh_tune.gating import STATIC_THRESHOLDS, gates_computed

LEVEL_THRESHOLDS = STATIC_THRESHOLDS  # thresholds that force an exit level without computing a gate
ALL_GATED = (math.ulp(0.0), math.ulp(0.0))  # above 0, so both gates run; every image still continues


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", default=None, help="dataset (default: the checkpoint's)")
    p.add_argument("--imgsz", type=int, nargs="+", default=None, help="input sizes (default: the checkpoint's)")
    p.add_argument("--thresholds", type=float, nargs=2, default=(0.5, 0.5), metavar=("T1", "T2"))
    p.add_argument("--images", type=int, default=200, help="val images (default 200)")
    p.add_argument("--passes", type=int, default=3, help="timed passes over the images (default 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return p.parse_args(argv)


def measure(checkpoint: Path, thresholds: tuple[float, float], *, imgsz: int | None = None, data: str | None = None,
            images: int = 200, passes: int = 3, cache_dir: Path | None = None) -> dict:
    """Per way of running: mean ms per image (network and end to end), AP, exit shares, ratios to static,
    and the network-time saving against the saving its MACs predict."""
    from dh_tune.data import dh_tune_home, load_dataset
    from dh_tune.data.images import read_image
    from dh_tune.data.preprocess import preprocess
    from dh_tune.evaluate.exit_cache import cached_exit_table
    from dh_tune.model import DEPLOY_NMS, postprocess
    from dh_tune.model.checkpoint import CheckpointPipeline, file_sha256, load_model

    model, ckpt = load_model(checkpoint)
    trained = CheckpointPipeline.of(ckpt)
    size = imgsz or trained.imgsz
    records = load_dataset(data or ckpt["dataset"]).splits[trained.val_split][:images]
    table = cached_exit_table(model, file_sha256(checkpoint), records, size, eps=trained.eps,
                              cache_dir=cache_dir or dh_tune_home() / "cache" / "exit_tables", progress=False)
    model = model.fuse()
    pixels = [read_image(r.path) for r in records]
    oracle_levels = table.label_levels()
    settings = {"static": None, "all": (0.0, 0.0), "all-gated": ALL_GATED, "gates-0.5": (0.5, 0.5),
                "profile": tuple(thresholds), "oracle": None}
    levels = {n: table.exit_levels(*t) for n, t in settings.items() if t is not None}
    levels.update(static=np.full(len(records), 3, np.int8), oracle=oracle_levels)
    static_macs = table.macs_per_exit[2]
    macs = {n: table.mean_macs(*t) for n, t in settings.items() if t is not None}
    macs.update(static=static_macs, oracle=float(table.macs_per_exit[oracle_levels - 1].mean()))

    @torch.inference_mode()
    def run(name: str, i: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        x = preprocess(pixels[i], size, torch.device("cpu"))
        t1 = time.perf_counter()
        if name == "static":
            maps = model.forward_static(x)
        else:
            t = LEVEL_THRESHOLDS[int(oracle_levels[i])] if name == "oracle" else settings[name]
            maps = model.forward_dynamic(x, t).maps
        t2 = time.perf_counter()
        postprocess(maps, model.anchors_px, model.strides, DEPLOY_NMS)
        return (t2 - t1) * 1000, (time.perf_counter() - t0) * 1000

    names = list(settings)
    for i in range(min(10, len(pixels))):  # warm-up
        for n in names:
            run(n, i)
    per_pass = {n: [] for n in names}
    for p in range(passes):
        sums = {n: np.zeros(2) for n in names}
        for i in range(len(pixels)):
            for n in names[p % len(names):] + names[:p % len(names)]:  # rotate who goes first
                sums[n] += run(n, i)
        for n in names:
            per_pass[n].append(sums[n] / len(pixels))
    rows = {}
    for n in names:
        net_ms, ms = np.median(np.array(per_pass[n]), axis=0)
        ap = table.ap_for_levels(levels[n])
        shares = np.bincount(levels[n], minlength=4)[1:] / len(records)
        computed = gates_computed(*settings[n]) if settings[n] is not None else (False, False)
        rows[n] = {"ms": float(ms), "network_ms": float(net_ms), "ap50": ap["ap50"], "ap50_95": ap["ap50_95"],
                   "exit_shares": shares.tolist(), "gates_computed": list(computed),
                   "gmacs": float(macs[n]) / 1e9, "mac_saving": float(1 - macs[n] / static_macs)}
    static = rows["static"]
    for r in rows.values():
        r["speedup"] = static["ms"] / r["ms"]
        r["network_saving"] = 1 - r["network_ms"] / static["network_ms"]
        r["saving"] = 1 - r["ms"] / static["ms"]
    saved = static["ms"] - rows["oracle"]["ms"]
    captured = (static["ms"] - rows["profile"]["ms"]) / saved if saved > 0 else float("nan")
    return {"imgsz": size, "thresholds": list(thresholds), "images": len(records), "passes": passes,
            "threads": torch.get_num_threads(), "rows": rows, "saving_captured": captured}


def format_rows(doc: dict) -> str:
    """The comparison as a plain-text table."""
    lines = [f"{doc['images']} val images at {doc['imgsz']} px, {doc['threads']} threads, "
             f"profile thresholds {tuple(doc['thresholds'])}",
             f"{'model':>9} | {'ms/img':>7} | {'vs static':>9} | {'net saving':>10} | {'MACs say':>8} | {'AP50':>6} | "
             f"{'AP50:95':>7} | exits h1/h2/h3"]
    for name, r in doc["rows"].items():
        shares = "/".join(f"{s:.2f}" for s in r["exit_shares"])
        lines.append(f"{name:>9} | {r['ms']:7.2f} | {r['speedup']:8.2f}x | {100 * r['network_saving']:9.1f}% | "
                     f"{100 * r['mac_saving']:7.1f}% | {r['ap50']:6.3f} | {r['ap50_95']:7.3f} | {shares}")
    lines.append(f"share of the oracle's saving the learned gates capture: {100 * doc['saving_captured']:.0f}%")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    docs = []
    for size in args.imgsz or [None]:
        docs.append(measure(args.checkpoint, tuple(args.thresholds), imgsz=size, data=args.data, images=args.images,
                            passes=args.passes))
        print(format_rows(docs[-1]) + "\n")
    if args.json:
        args.json.write_text(json.dumps(docs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
