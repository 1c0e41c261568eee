"""What the exit cache buys, measured on a trained checkpoint, each number beside its baseline.

1. One threshold profile scored from the exit cache vs re-running the dynamic model over the val
   images for that profile (forward, NMS, AP): milliseconds of each and the ratio.
2. Expected latency of several profiles from this device's latency table vs the latency measured
   end to end per image, as a user runs a profile (read from disk, letterboxed from its own size,
   heads that run, decode and NMS): mean and p90 over images, each with its error in percent; the
   p90 both by latency_stats (mixture of the exits' cost distributions) and by the summed-p90 rule (90th
   percentile over images of each image's summed p90 part costs). The table times reading the first
   image's file as well (part "read"); the prediction without it is kept beside. It is timed afresh
   right before and right after each measurement: a shared 2-core machine drifts by 20-30% over minutes, which would
   otherwise swamp the prediction error being measured.

    python benchmarks/bench_search_cost.py --checkpoint runs/search/quickstart/base/weights/best.pt
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# Idle torch threads must not spin while another runtime runs; the torch runtime's own latency check runs
# in a child process with torch's default thread behaviour (DH_TUNE_TORCH_THREADS=default), as it deploys.
if os.environ.get("DH_TUNE_TORCH_THREADS") != "default":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", default=None, help="dataset (default: the checkpoint's)")
    p.add_argument("--images", type=int, default=200, help="val images to use (default 200)")
    p.add_argument("--imgsz", type=int, default=None)
    p.add_argument("--profiles", default="0,0;0.3,0.5;0.5,0.5;0.7,0.7;1,1", help="t1,t2;t1,t2;...")
    p.add_argument("--repeats", type=int, default=5, help="timed passes over the images (default 5; median kept)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    p.add_argument("--runtimes", nargs="+", default=["torch"], choices=["torch", "onnxruntime", "openvino"],
                   help="runtimes whose latency prediction is checked (default torch)")
    p.add_argument("--latency-only", action="store_true",
                   help="only the predicted-vs-measured latency of --runtimes, in this process (run_all's children)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return p.parse_args(argv)


def run_dynamic(predictor, images: list[np.ndarray]) -> tuple[list, list[int], float]:
    """Detections, exit levels and mean ms per image of the dynamic model over decoded images."""
    outs, levels = [], []
    t0 = time.perf_counter()
    for img in images:
        pred = predictor(img)
        outs.append(pred)
        levels.append(pred.exit_level)
    return outs, levels, (time.perf_counter() - t0) * 1000 / len(images)


def run_from_disk(predictor, paths: list[Path]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Exit level, end-to-end ms and disk-read ms of each image: read (cv2.imread), then the predictor
    (letterbox from the image's own size, the heads that run, decode and NMS), as a user runs a profile."""
    import cv2

    levels, total, read = [], np.empty(len(paths)), np.empty(len(paths))
    for i, path in enumerate(paths):
        t0 = time.perf_counter()
        img = cv2.imread(str(path))
        t1 = time.perf_counter()
        pred = predictor(img)
        t2 = time.perf_counter()
        levels.append(pred.exit_level)
        total[i], read[i] = (t2 - t0) * 1000, (t1 - t0) * 1000
    return levels, total, read


def old_p90(levels: np.ndarray, table, profile: tuple[float, float]) -> float:
    """The previous p90 estimate, for comparison: 90th percentile over images of each image's summed p90 part
    costs (it counts the tail twice: the slow images, then the slow run of each)."""
    costs = table.exit_cost_ms("p90", profile)[np.asarray(levels, dtype=np.int64) - 1]
    return float(np.quantile(costs, 0.9, method="inverted_cdf"))


def predicted_vs_measured(model, size: int, levels: list[np.ndarray], profiles: list[tuple[float, float]], predictors: list,
                          paths: list[Path], passes: int, threads: int, runtime: str = "torch") -> list[dict]:
    """Per profile: mean and p90 latency the device table predicts and the measured end-to-end ms per image.

    In each pass every predictor runs over all images as a deployed model runs (one profile over a stream
    of frames read from disk, the first profile rotating), the device table timed afresh (on the first image)
    right before and right after it and the two predictions averaged, so that prediction and measurement see
    the machine in the same state;
    medians over the passes are kept, errors are the median of each pass's error.
    """
    import cv2

    from dh_tune.latency import latency_stats, shares_of
    from dh_tune.latency.measure import latency_table
    from dh_tune.latency.table import READ

    frame = cv2.imread(str(paths[0]))
    for pred in predictors:  # warm-up
        run_from_disk(pred, paths[:10])
    keys = ("predicted_ms", "measured_ms", "predicted_p90_ms", "predicted_p90_old_ms", "measured_p90_ms", "read_ms",
            "predicted_ms_without_read", "predicted_p90_ms_without_read", "table_read_ms")
    k = len(predictors)
    got = {key: np.zeros((passes, k)) for key in keys}
    def predict(j: int) -> np.ndarray:
        """The table's predictions for profile j, timed now: mean, p90, old-rule p90, the two without the read, read."""
        table = latency_table(model, size, threads=threads, repeats=30, max_seconds=2.0, runtime=runtime,
                              image=frame, image_file=paths[0])
        # The prediction without the frame's read (kept beside it for comparison).
        without = dataclasses.replace(table, parts={n: t for n, t in table.parts.items() if n != READ})
        stats = latency_stats(shares_of(levels[j]), table, profiles[j])
        stats_without = latency_stats(shares_of(levels[j]), without, profiles[j])
        return np.array([stats["mean"], stats["p90"], old_p90(levels[j], table, profiles[j]), stats_without["mean"],
                         stats_without["p90"], table.parts[READ].median_ms])

    for p in range(passes):
        for j in [(p + i) % k for i in range(k)]:
            before = predict(j)
            _, ms, read = run_from_disk(predictors[j], paths)
            # Timed on both sides of the measurement: the machine's drift during it cancels to first order.
            mean, p90, p90_old, mean_without, p90_without, table_read = (before + predict(j)) / 2
            for key, v in zip(keys, (mean, float(ms.mean()), p90, p90_old, float(np.percentile(ms, 90)),
                                     float(read.mean()), mean_without, p90_without, table_read)):
                got[key][p, j] = v

    def error(predicted: str, measured: str) -> np.ndarray:
        return np.median(100 * (got[predicted] - got[measured]) / got[measured], 0)

    errors = {"error_pct": error("predicted_ms", "measured_ms"),
              "error_p90_pct": error("predicted_p90_ms", "measured_p90_ms"),
              "error_without_read_pct": error("predicted_ms_without_read", "measured_ms"),
              "error_p90_without_read_pct": error("predicted_p90_ms_without_read", "measured_p90_ms"),
              "error_p90_old_pct": error("predicted_p90_old_ms", "measured_p90_ms")}
    medians = {key: np.median(v, 0) for key, v in got.items()}
    return [{**{key: float(v[j]) for key, v in medians.items()}, **{key: float(v[j]) for key, v in errors.items()}}
            for j in range(k)]


def runtime_predictors(model, size: int, profiles: list[tuple[float, float]], runtime: str, folder: Path) -> list:
    """One predictor per profile in `runtime` (torch: the fused model; others: exported stage graphs)."""
    from dh_tune.predict import Predictor

    if runtime == "torch":
        return [Predictor(model, size, p) for p in profiles]
    return [Predictor.exported(model, size, p, runtime, folder / f"{runtime}-{size}-{p[0]:g}-{p[1]:g}") for p in profiles]


def _latency_in_own_process(runtime: str, *, checkpoint: Path, profiles, data, images: int, imgsz: int, repeats: int,
                            threads: int | None) -> list[dict]:
    """The latency check of one runtime in a child process; torch's with torch's default OpenMP behaviour."""
    import subprocess

    env = dict(os.environ)
    if runtime == "torch":
        env["DH_TUNE_TORCH_THREADS"] = "default"
        env.pop("OMP_WAIT_POLICY", None)
    with tempfile.TemporaryDirectory(prefix="bench-search-cost-") as tmp:
        out = Path(tmp) / "latency.json"
        cmd = [sys.executable, __file__, "--checkpoint", str(checkpoint), "--images", str(images), "--imgsz", str(imgsz),
               "--profiles", ";".join(f"{a!r},{b!r}" for a, b in profiles), "--repeats", str(repeats),
               "--runtimes", runtime, "--latency-only", "--json", str(out)]
        cmd += ["--data", data] if data else []
        cmd += ["--threads", str(threads)] if threads else []
        if subprocess.run(cmd, env=env).returncode != 0:
            raise RuntimeError(f"the {runtime} latency check failed (its error is printed above)")
        return json.loads(out.read_text())["latency_by_runtime"][runtime]


def parse_profiles(text: str) -> list[tuple[float, float]]:
    """'0.3,0.5;0.7,0.7' -> [(0.3, 0.5), (0.7, 0.7)]."""
    return [tuple(float(v) for v in p.split(",")) for p in text.split(";")]  # type: ignore[misc]


def measure(checkpoint: Path, profiles: list[tuple[float, float]], *, data: str | None = None, images: int = 200,
            imgsz: int | None = None, repeats: int = 5, threads: int | None = None,
            runtimes: tuple[str, ...] = ("torch",), latency_only: bool = False) -> dict:
    """Per profile: cache vs re-run milliseconds and ratio, AP of both, predicted vs measured latency.

    Each runtime's latency is checked in a process of its own (thread pools and OpenMP's wait policy are
    per process); `latency_only` is that child: it checks its runtimes here and skips the cache rows.
    """
    from dh_tune.data import dh_tune_home, load_dataset
    from dh_tune.data.images import read_image
    from dh_tune.evaluate import average_precision
    from dh_tune.evaluate.exit_cache import cached_exit_table
    from dh_tune.latency.measure import device_info
    from dh_tune.model import VAL_NMS
    from dh_tune.model.checkpoint import CheckpointPipeline, file_sha256, load_model
    from dh_tune.predict import Predictor

    model, ckpt = load_model(checkpoint)
    trained = CheckpointPipeline.of(ckpt)
    size = imgsz or trained.imgsz
    records = load_dataset(data or ckpt["dataset"]).splits[trained.val_split][:images]
    t0 = time.perf_counter()
    table = cached_exit_table(model, file_sha256(checkpoint), records, size, eps=trained.eps,
                              cache_dir=dh_tune_home() / "cache" / "exit_tables", progress=False)
    build_s = time.perf_counter() - t0
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    profiles = list(dict.fromkeys((float(t1), float(t2)) for t1, t2 in profiles))
    if latency_only:
        with tempfile.TemporaryDirectory(prefix="bench-search-cost-") as tmp:
            return {"latency_by_runtime": {r: [{"t1": p[0], "t2": p[1], **t} for p, t in zip(profiles, predicted_vs_measured(
                model, size, [table.exit_levels(*p) for p in profiles], profiles,
                runtime_predictors(model, size, profiles, r, Path(tmp)), [Path(rec.path) for rec in records], repeats,
                threads, r))]
                for r in runtimes}}
    pixels = [read_image(r.path) for r in records]
    ground_truth = [(r.boxes, r.classes) for r in records]
    rows = []
    val_pred = Predictor(model, size, (0.0, 0.0), nms=VAL_NMS)
    for t1, t2 in profiles:
        table.evaluate(t1, t2)  # the first call builds the shared index
        n = 50
        c0 = time.perf_counter()
        for _ in range(n):
            m = table.evaluate(t1, t2)
        cache_ms = (time.perf_counter() - c0) * 1000 / n
        val_pred.thresholds = (t1, t2)
        r0 = time.perf_counter()
        outs, levels, _ = run_dynamic(val_pred, pixels)
        ap = average_precision(ground_truth, [(o.detections.boxes, o.detections.scores, o.detections.classes)
                                              for o in outs], num_classes=model.nc)
        rerun_ms = (time.perf_counter() - r0) * 1000
        rows.append({"t1": t1, "t2": t2, "cache_ms": cache_ms, "rerun_ms": rerun_ms, "ratio": rerun_ms / cache_ms,
                     "ap50_cache": m.ap50, "ap50_rerun": ap["ap50"],
                     "levels_agree": levels == table.exit_levels(t1, t2).tolist()})
    child = dict(checkpoint=checkpoint, profiles=profiles, data=data, images=images, imgsz=size, repeats=repeats,
                 threads=threads)
    by_runtime = {r: _latency_in_own_process(r, **child) for r in runtimes}
    for row, t in zip(rows, by_runtime[runtimes[0]]):
        row.update({k: v for k, v in t.items() if k not in ("t1", "t2")})
    return {"device": device_info(torch.device("cpu"), threads)["name"], "imgsz": size, "images": len(records),
            "passes": repeats, "build_s": build_s, "rows": rows, "runtime": runtimes[0],
            "latency_by_runtime": by_runtime}


def format_rows(doc: dict) -> str:
    lines = [f"{doc['images']} val images at {doc['imgsz']} px on {doc['device']}; error: median over the passes of "
             "each pass's error (device table timed right before each measurement)",
             f"{'profile':>11} | {'cache ms':>9} | {'re-run ms':>10} | {'ratio':>8} | {'AP50 cache':>10} {'re-run':>7} | "
             f"{'pred ms':>8} {'measured':>9} {'error':>7}"]
    for r in doc["rows"]:
        lines.append(f"({r['t1']:.2f},{r['t2']:.2f}) | {r['cache_ms']:9.3f} | {r['rerun_ms']:10.0f} | "
                     f"{r['ratio']:7.0f}x | {r['ap50_cache']:10.4f} {r['ap50_rerun']:7.4f} | "
                     f"{r['predicted_ms']:8.2f} {r['measured_ms']:9.2f} {r['error_pct']:+6.1f}%")
    for runtime, rows in doc.get("latency_by_runtime", {}).items():
        lines.append(f"{runtime}: " + ", ".join(f"({r['t1']:g},{r['t2']:g}) {r['predicted_ms']:.2f}/{r['measured_ms']:.2f} ms "
                                                 f"{r['error_pct']:+.1f}%"
                                                 + (f" (without the read {r['error_without_read_pct']:+.1f}%)"
                                                    if "error_without_read_pct" in r else "") for r in rows))
        lines += [f"  p90 ({r['t1']:g},{r['t2']:g}): measured {r['measured_p90_ms']:.2f} ms; predicted "
                  f"{r['predicted_p90_ms']:.2f} ({r['error_p90_pct']:+.1f}%), summed-p90 rule {r['predicted_p90_old_ms']:.2f} "
                  f"({r['error_p90_old_pct']:+.1f}%); disk read {r['read_ms']:.2f} ms of the measured mean"
                  + (f", {r['table_read_ms']:.2f} ms in the table" if "table_read_ms" in r else "")
                  for r in rows if "measured_p90_ms" in r]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    doc = measure(args.checkpoint, parse_profiles(args.profiles), data=args.data, images=args.images,
                  imgsz=args.imgsz, repeats=args.repeats, threads=args.threads, runtimes=tuple(args.runtimes),
                  latency_only=args.latency_only)
    if not args.latency_only:
        print(format_rows(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
