"""The results page's GPU section, from the figures kept in benchmarks/gpu/ (measured on a GPU machine).

CPU-only runs of run_all.py cannot measure them again, so they are stored with the card, driver, torch
build and date they were measured with, and shown as such.
"""
from __future__ import annotations

import json
from pathlib import Path
from statistics import median

GPU_DIR = Path(__file__).resolve().parent / "gpu"


def load(folder: Path = GPU_DIR) -> dict:
    """{'bench': ..., 'train': {'gpu': ..., 'cpu': ...}} from the stored JSON files; {} where none are kept."""
    files = {"bench": "h100_bench.json", "ort": "h100_ort.json", "gpu": "h100_train.json", "cpu": "cpu_train.json"}
    docs = {k: json.loads((folder / f).read_text()) for k, f in files.items() if (folder / f).is_file()}
    if "bench" not in docs:
        return {}
    return {"bench": docs["bench"], "ort": docs.get("ort"), "train": {k: docs[k] for k in ("gpu", "cpu") if k in docs}}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _train_row(name: str, doc: dict) -> list[str]:
    epochs = doc["epochs"]
    last = epochs[-1]
    return [name, doc["device"], f"{median(e['epoch_time_s'] for e in epochs):.1f}",
            f"{median(e['images_per_s'] for e in epochs):.0f}", f"{last['ap50']:.3f} / {last['ap50_95']:.3f}",
            f"{100 * last['gate1_acc']:.1f} / {100 * last['gate2_acc']:.1f}%"]


def _ort_lines(doc: dict | None) -> list[str]:
    """ONNX Runtime's CUDA provider through the torch-free runtime module, beside torch CUDA in the same process."""
    ort = (doc or {}).get("onnxruntime_cuda") or {}
    if "sizes" not in ort:
        return [f"ONNX Runtime's CUDA provider: **not measured** ({ort.get('reason', 'no measurement kept')}).", ""]
    sizes = list(ort["sizes"])
    names = list(ort["sizes"][sizes[0]]["ms"])
    torch_ms = {s: doc["sizes"][s]["ms"]["fp32 static"] for s in sizes}
    rows = [[f"onnxruntime CUDA {n}", *(f"{ort['sizes'][s]['ms'][n]:.2f} ({ort['sizes'][s]['ms'][n] / torch_ms[s]:.2f}x)"
                                       for s in sizes)] for n in names]
    rows.append(["torch CUDA fp32 static (same process)", *(f"{torch_ms[s]:.2f} (1.00x)" for s in sizes)])
    return [f"ONNX Runtime {ort['version']} with its CUDA provider (onnxruntime-gpu), exported graphs run by the "
            "torch-free runtime module (numpy in and out of every graph, as `dhnet_runtime.py --device cuda` runs "
            f"them), measured on {doc['date']} on a {doc['card']} next to torch CUDA in the same process; ms per "
            "image and ratio to torch CUDA fp32 static:", "",
            *_table(["variant", *(f"{s} px" for s in sizes)], rows),
            "The static graph is about twice as fast as eager torch on the GPU; the early exit is not: between two "
            "graphs the carried tensors go to host memory and back (the stages chained without gates alone cost "
            + ", ".join(f"{100 * (ort['sizes'][s]['ms']['stages chained, no gate'] / ort['sizes'][s]['ms']['static'] - 1):+.0f}%"
                        for s in sizes)
            + f" at {', '.join(sizes)} px), so all heads through the gates cost "
            + ", ".join(f"{100 * ort['sizes'][s]['all_heads_over_static']:+.0f}%" for s in sizes)
            + " over the static graph, and leaving after head 1 is barely faster than the static network. On this GPU "
            "a static profile is the right deployment; keeping the carried tensors on the device (I/O binding) is "
            "not done.", ""]


def section(gpu: dict, number: int = 8) -> list[str]:
    """Per-image latency per precision on the GPU, its goals, ONNX Runtime's CUDA provider, and GPU training."""
    if not gpu:
        return []
    b = gpu["bench"]
    sizes = list(b["sizes"])
    names = list(b["sizes"][sizes[0]]["ms"])
    rows = [[n, *(f"{b['sizes'][s]['ms'][n]:.2f} ({b['sizes'][s]['ms'][n] / b['sizes'][s]['ms']['fp32 static']:.2f}x)"
                  for s in sizes)] for n in names]
    goal_rows = [[f"{s} px", p, f"{g['static_vs_yolov5']:.2f}x", f"{100 * g['all_heads_over_static']:+.1f}%",
                  f"{100 * g['exit1_saving']:.1f}% vs {100 * g['exit1_saving_macs']:.1f}%",
                  "yes" if g["exits_as_asked"] else "NO"]
                 for s, per in b["summary"].items() for p, g in per.items()]
    lines = [f"## {number}. GPU ({b['card']})", "",
             f"Measured on {b['date']}: {b['card']} (driver {b['driver']}, {b['cpus']} CPU cores), torch {b['torch']} "
             f"(CUDA {b['cuda']}, cuDNN {b['cudnn']}; the GPU machine's own build, not the CPU pin), batch 1, "
             f"{b['rounds']} rounds with every variant once per round in random order, each call timed to the end of "
             f"its GPU work, medians; ratio to fp32 static. `{b['command']}`. fp16 is YOLOv5's `--half`; amp is "
             "torch.autocast over fp32 weights. Dynamic variants compute their gates.", "",
             *_table(["variant", *(f"{s} px" for s in sizes)], rows),
             *_table(["size", "precision", "static vs YOLOv5", "all heads over static", "exit-1 saving vs MACs",
                      "exits as asked"], goal_rows),
             "At batch 1 this GPU is bound by kernel launches, not arithmetic: the network takes about the same time "
             "at 224 and 640 px, fp16 is no faster than fp32 and autocast's casts make it slower. For the same reason "
             "the gates cost far more than their MACs (every gate decision waits for the GPU before the next stage "
             "can be launched), and leaving after head 1 saves more than the MACs predict (time follows the number "
             "of kernels). Profiles for a GPU must be chosen with a device table timed on that GPU "
             "(`python -m dh_tune.latency --gpu`; not run for this page): a CPU's table does not transfer.", "",
             *_ort_lines(gpu.get("ort"))]
    train = gpu.get("train", {})
    if "gpu" in train:
        t = train["gpu"]
        trows = [_train_row("H100, `--gpu`", t)] + ([_train_row("CPU baseline", train["cpu"])] if "cpu" in train else [])
        ratio = ""
        if "cpu" in train:
            g_ips = median(e["images_per_s"] for e in t["epochs"])
            c_ips = median(e["images_per_s"] for e in train["cpu"]["epochs"])
            ratio = f" The GPU worker trains {g_ips / c_ips:.1f}x as many images per second."
        lines += [f"Ray Train on the GPU: `{t['command']}` ({t['pipeline']} pipeline, {len(t['epochs'])} epochs, "
                  f"{t['imgsz']} px, batch {t['batch_size']}, {t['workers']} worker, AMP {'on' if t['amp'] else 'off'}), "
                  "beside the same pipeline trained on this page's CPU." + ratio
                  + " In this run data loading stayed on the worker's CPU (`data.loader_workers: 0`), which bounds "
                  "the GPU's epoch time. The two runs share every setting and differ in numerics (AMP, CUDA kernels); one "
                  "run each, so their AP difference is no claim that either device trains better.", "",
                  *_table(["run", "device", "epoch s (median)", "images/s (median)", "AP50 / AP50:95 (last epoch)",
                           "gate accuracy"], trows)]
    return lines


def summary_rows(gpu: dict) -> list[list[str]]:
    """README rows: the GPU's static latency per runtime, the gates' overhead there, and GPU training speed."""
    if not gpu:
        return []
    b, ort = gpu["bench"], (gpu.get("ort") or {}).get("onnxruntime_cuda") or {}
    card = b["card"].replace("NVIDIA ", "").split()[0]
    sizes = list(b["sizes"])
    static = ", ".join(f"{b['sizes'][s]['ms']['fp32 static']:.2f}"
                       + (f" / {ort['sizes'][s]['ms']['static']:.2f}" if s in ort.get("sizes", {}) else "")
                       + f" ms @{s}" for s in sizes)
    over = ", ".join(f"{100 * b['summary'][s]['fp32']['all_heads_over_static']:+.0f}%"
                     + (f" / {100 * ort['sizes'][s]['all_heads_over_static']:+.0f}%" if s in ort.get("sizes", {}) else "")
                     + f" @{s}" for s in sizes)
    rows = [[f"{card}, batch 1: static network, torch CUDA fp32 / ONNX Runtime CUDA", static, "-"],
            [f"{card}: all heads through the gates over static (torch / ONNX Runtime)", over, "<= 3%"]]
    train = gpu.get("train", {})
    if "gpu" in train and "cpu" in train:
        g = median(e["images_per_s"] for e in train["gpu"]["epochs"])
        c = median(e["images_per_s"] for e in train["cpu"]["epochs"])
        rows.append([f"Ray Train `--gpu` on the {card}, quickstart", f"{g:.0f} vs {c:.0f} images/s on 2 CPU cores "
                     f"({g / c:.1f}x), AP50 {train['gpu']['epochs'][-1]['ap50']:.3f}", "-"])
    return rows
