"""Wall time of the paper's 16-trial search (pipelines/tt100k-yolov5s.yaml) against the number of GPUs, with
and without early stopping, printed side by side. An estimate, labelled as one.

Per-epoch time: measured on the GPU when CUDA is present (DH-YOLOv5s at the pipeline's size, AMP, random
batches); otherwise this machine's measured training images/s on a small DH-Net, scaled by the GMAC ratio to
DH-YOLOv5s at 1024 px (the time an epoch would take on devices as fast as this machine). Beside it, a V100
as YOLOv5 states its own training time (YOLOv5s: 300 COCO epochs at 640 px in 2 days on one V100, README of
ultralytics/yolov5), scaled by the pixel ratio to 1024 px. Trials at once come
from the same arithmetic the search uses (nodes of 8 GPUs and 64 CPUs). Early stopping saves the share of
epochs it saved in a local search run here: four tiny trials on 4 logical CPUs, one made hopeless on purpose
(learning rate 0), as tests/test_search_scaling.py runs it; --saved-fraction gives the share instead.

    python benchmarks/bench_search_scaling.py                      # runs the local search (about 4 minutes)
    python benchmarks/bench_search_scaling.py --saved-fraction 0.06 --json scaling.json
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PAPER_TRAIN_IMAGES, PAPER_VAL_IMAGES = 5840, 2941  # the paper's Table 1 (TT100K, 33 classes)
GPUS = (2, 4, 8, 16, 32)
TRIAL_OVERHEAD_S = 300.0  # worker start, exit tables and threshold search of one trial (assumed, see the note)
COCO_TRAIN_IMAGES = 118_287
V100_YOLOV5S_640 = COCO_TRAIN_IMAGES * 300 / (2 * 86_400)  # images/s: 300 epochs in 2 days, YOLOv5's README


def train_images_per_s(scale, imgsz: int, batch: int, device: torch.device, steps: int = 4) -> float:
    """Forward + backward + step of a DH-Net on random batches (no data loading): images per second."""
    from dh_tune.model import DHNet

    model = DHNet(scale, nc=33).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, imgsz, imgsz, device=device)
    amp = device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, enabled=amp):
            maps, logits = model(x)
            loss = sum(m.float().mean() for m in maps) + logits.float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def gmacs(scale, imgsz: int) -> float:
    from dh_tune.model import DHNet
    from dh_tune.model.summary import summarize

    return float(summarize(DHNet(scale, nc=33), imgsz)["exit"]["3"]["gmacs"])


def epoch_seconds(images_per_s: float, workers: int) -> float:
    """One epoch of the paper's TT100K split on `workers` devices; validation runs forward only (about a third
    of a training step's work) on the val images."""
    return (PAPER_TRAIN_IMAGES + PAPER_VAL_IMAGES / 3) / (images_per_s * workers)


def v100_epoch(pipeline) -> dict:
    """A V100 as YOLOv5's README times YOLOv5s, at the pipeline's size (pixel ratio)."""
    ips = V100_YOLOV5S_640 * (640 / pipeline.data.imgsz) ** 2
    return {"images_per_s_per_worker": ips, "epoch_s": epoch_seconds(ips, pipeline.ray.workers),
            "source": f"ESTIMATE: a V100 at YOLOv5's stated {V100_YOLOV5S_640:.0f} images/s for YOLOv5s at 640 px, "
                      f"scaled to {pipeline.data.imgsz} px: {ips:.0f} images/s"}


def per_epoch_seconds(pipeline) -> dict:
    """Seconds of one epoch of the pipeline's training (all its workers) and where the number comes from."""
    size, scale, workers = pipeline.data.imgsz, pipeline.model.scale, pipeline.ray.workers
    if torch.cuda.is_available():
        ips = train_images_per_s(scale, size, 16, torch.device("cuda"), steps=20)
        source = f"measured on {torch.cuda.get_device_name()} (AMP, batch 16, random images)"
    else:
        small = train_images_per_s("n", 160, 8, torch.device("cpu"))
        ratio = gmacs("n", 160) / gmacs(scale, size)
        ips = small * ratio
        source = (f"ESTIMATE: this machine's {small:.1f} images/s training DH-Net n at 160 px (CPU, "
                  f"{torch.get_num_threads()} threads) x the GMAC ratio {ratio:.4f} to DH-YOLOv5{scale} at {size} px, "
                  "per device as fast as this machine")
    return {"images_per_s_per_worker": ips, "epoch_s": epoch_seconds(ips, workers), "source": source}


def makespan(durations: list[float], slots: int) -> float:
    """Seconds until every trial ended, each started in order on the first free slot (how Tune runs them)."""
    free = [0.0] * slots
    end = 0.0
    for d in durations:
        start = heapq.heappop(free)
        heapq.heappush(free, start + d)
        end = max(end, start + d)
    return end


def trial_epochs(trials: int, epochs: int, saved: float, stopped_share: float) -> list[int]:
    """Epochs each trial trains when early stopping saves `saved` of all epochs by stopping `stopped_share` of
    the trials (spread evenly through the search): the stopped ones train the rest of their share."""
    stopped = round(trials * stopped_share)
    if not stopped or saved <= 0:
        return [epochs] * trials
    each = max(1, round(epochs - saved * trials * epochs / stopped))
    marks = {round((i + 0.5) * trials / stopped) for i in range(stopped)}
    return [each if i in marks else epochs for i in range(trials)]


def local_early_stopping(out: Path) -> dict:
    """Runs the four-trial local search (one trial with learning rate 0) and returns what early stopping saved."""
    import yaml

    from dh_tune.data.synth import generate
    from dh_tune.ray_setup import init_ray
    from dh_tune.search.__main__ import main as search_main
    from dh_tune.search.trial_docs import most_at_once, result_docs

    data = out / "signs"
    generate(data, train=8, val=8, imgsz=128, seed=5, workers=1)
    space = out / "space.yaml"
    space.write_text("gate_lambda: {type: float, low: 0.05, high: 0.5, log: true}\n"
                     "lr_scale: {type: float, low: 0.0, high: 1.0}\n")
    no_augment = {"hsv_h": 0, "hsv_s": 0, "hsv_v": 0, "fliplr": 0, "scale": 0, "translate": 0}
    doc = {"name": "tiny",  # the tiny set's own images score it, as the test's copied val split does
           "data": {"dataset": str(data / "data.yaml"), "imgsz": 64, "val_split": "train", "cache_images": True},
           "model": {"scale": [0.33, 0.125]},
           "train": {"epochs": 12, "batch_size": 8, "optimizer": "adamw", "lr0": 0.01, "momentum": 0.9,
                     "warmup_epochs": 3, "warmup_bias_lr": 0.0, "threads": 2, "augment": no_augment},
           "ray": {"workers": 1, "cpus_per_worker": 1, "max_failures": 1},
           "search": {"threshold_trials": 40, "grid_steps": 11, "bootstrap_resamples": 100}}
    doc["search"].update(trials=4, warm_start=False, trial_epochs=12, deploy_imgsz=[64], search_space=str(space),
                         max_concurrent=3, report_every=3, report_images=8, metric="ap50",
                         early_stop={"grace_epochs": 9, "reduction_factor": 2},
                         first_points=[{"gate_lambda": 0.1, "lr_scale": 1.0}, {"gate_lambda": 0.3, "lr_scale": 1.0},
                                       {"gate_lambda": 0.2, "lr_scale": 0.0}])
    (out / "tiny.yaml").write_text(yaml.safe_dump(doc))
    os.environ["DH_TUNE_HOME"] = str(out / "home")
    init_ray(num_cpus=4)
    search_main(["--budget-ms", "50", "--pipeline", str(out / "tiny.yaml"), "--out", str(out / "search"),
                 "--no-mlflow", "--runtime", "torch"])
    docs = [d for _, d in result_docs(out / "search")]
    planned = 12 * len(docs)
    trained = sum(12 if d.stopped_epoch is None else d.stopped_epoch for d in docs)
    return {"trials": len(docs), "pruned": sum(d.status == "pruned" for d in docs),
            "saved_fraction": (planned - trained) / planned, "most_at_once": most_at_once(docs)}


def estimate(pipeline, epoch_s: float, saved: float, stopped_share: float) -> list[dict]:
    """Per cluster size: trials at once, wall hours and GPU hours of the search without and with early stopping."""
    from dh_tune.search.cluster import NodeResources, plan_concurrency, trial_shape

    trials, epochs, workers = pipeline.search.trials, pipeline.search.trial_epochs, pipeline.ray.workers
    plain = [epochs] * trials
    early = trial_epochs(trials, epochs, saved, stopped_share)
    rows = []
    for g in GPUS:
        nodes = [NodeResources(64.0, 8.0)] * (g // 8) or [NodeResources(8.0 * g, float(g))]
        shape = trial_shape(workers, pipeline.ray.cpus_per_worker, pipeline.ray.gpu, nodes)
        slots = plan_concurrency(nodes, shape, trials).concurrent

        seconds = {"plain": [e * epoch_s + TRIAL_OVERHEAD_S for e in plain],
                   "early": [e * epoch_s + TRIAL_OVERHEAD_S for e in early]}
        rows.append({"gpus": g, "concurrent": slots, "hours": makespan(seconds["plain"], slots) / 3600,
                     "hours_early_stop": makespan(seconds["early"], slots) / 3600,
                     "gpu_hours": sum(seconds["plain"]) * workers / 3600,
                     "gpu_hours_early_stop": sum(seconds["early"]) * workers / 3600})
    for r in rows:
        r["speedup"] = rows[0]["hours"] / r["hours"]
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'GPUs':>5} | {'at once':>7} | {'wall h':>8} | {'wall h, early stop':>18} | {'GPU h':>8} | "
             f"{'GPU h, early stop':>17} | vs 2 GPUs"]
    lines += [f"{r['gpus']:>5} | {r['concurrent']:>7} | {r['hours']:8.1f} | {r['hours_early_stop']:18.1f} | "
              f"{r['gpu_hours']:8.0f} | {r['gpu_hours_early_stop']:17.0f} | {r['speedup']:8.1f}x" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", default=str(ROOT / "pipelines" / "tt100k-yolov5s.yaml"))
    p.add_argument("--saved-fraction", type=float, default=None,
                   help="share of epochs early stopping saves (default: run the local four-trial search)")
    p.add_argument("--stopped-share", type=float, default=None,
                   help="share of trials it stops (default: the local search's, else 0.25)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    from dh_tune.pipeline import load_pipeline

    pipeline = load_pipeline(args.pipeline)
    local = None
    if args.saved_fraction is None:
        with tempfile.TemporaryDirectory() as tmp:
            local = local_early_stopping(Path(tmp))
    saved = args.saved_fraction if args.saved_fraction is not None else local["saved_fraction"]
    share = args.stopped_share or (local["pruned"] / local["trials"] if local and local["pruned"] else 0.25)
    print(f"{pipeline.name}: {pipeline.search.trials} trials x {pipeline.search.trial_epochs} epochs, "
          f"{pipeline.ray.workers} GPU worker(s) a trial, {TRIAL_OVERHEAD_S / 60:.0f} min a trial to start and score "
          "(assumed); nodes of 8 GPUs")
    if local:
        print(f"local search: {local['trials']} trials, {local['pruned']} stopped early, up to "
              f"{local['most_at_once']} at once")
    print(f"early stopping: {100 * saved:.1f}% of epochs saved by stopping {100 * share:.0f}% of the trials "
          f"({'measured in the local search' if local else '--saved-fraction'})")
    report = {"local": local, "saved_fraction": saved, "stopped_share": share, "estimates": []}
    for epoch in (per_epoch_seconds(pipeline), v100_epoch(pipeline)):
        rows = estimate(pipeline, epoch["epoch_s"], saved, share)
        print(f"\none epoch {epoch['epoch_s'] / 60:.1f} min ({epoch['source']})\n{format_rows(rows)}")
        report["estimates"].append({"epoch": epoch, "rows": rows})
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if all(math.isfinite(r["hours"]) for e in report["estimates"] for r in e["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
