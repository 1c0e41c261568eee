"""Time one threshold-profile evaluation from the exit cache against COCO AP from scratch.

Builds a random but realistically sized exit table (default 1,000 images, ~50 detections per
image and exit level, as validation NMS with conf 0.001 produces) and prints, per profile, the
milliseconds of ExitTable.evaluate and of average_precision on the assembled final detections.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from dh_tune.evaluate import average_precision, match_image
from dh_tune.evaluate.exit_table import ExitDetections, ExitTable


def synthetic_dataset(rng: np.random.Generator, n_images: int, n_classes: int, dets_per_level: int):
    """Ground truth, per-level detections (boxes, scores, classes) and gate scores/labels.

    Deeper exits find more of the objects and score them higher, like heads 2 and 3 adding recall.
    """
    gts, per_level = [], [[], [], []]
    for _ in range(n_images):
        n = int(rng.poisson(4))
        xy = rng.uniform(0, 380, (n, 2))
        gb = np.concatenate([xy, xy + rng.uniform(6, 140, (n, 2))], axis=1)
        gc = rng.integers(0, n_classes, n)
        gts.append((gb, gc))
        for k in range(3):
            found = rng.random(n) < 0.55 + 0.15 * k
            tb = gb[found] + rng.normal(0, 6.0 - 1.5 * k, (int(found.sum()), 4))
            n_fp = max(dets_per_level - len(tb), 0)
            fxy = rng.uniform(0, 380, (n_fp, 2))
            boxes = np.concatenate([tb, np.concatenate([fxy, fxy + rng.uniform(6, 140, (n_fp, 2))], 1)])
            boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]),
                                    np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)
            scores = np.concatenate([rng.uniform(0.3 + 0.1 * k, 1.0, len(tb)), rng.uniform(0.001, 0.6, n_fp)])
            classes = np.concatenate([gc[found], rng.integers(0, n_classes, n_fp)])
            per_level[k].append((boxes, scores.astype(np.float32), classes))
    gate_scores = rng.random((n_images, 2)).astype(np.float32)
    gate_labels = rng.random((n_images, 2)) < np.clip(gate_scores + 0.2, 0, 1)
    return gts, per_level, gate_scores, gate_labels


def build_table(gts, per_level, gate_scores, gate_labels, n_classes: int) -> ExitTable:
    """Match every level's detections once and pack them into an ExitTable."""
    levels = []
    for dets in per_level:
        image, score, cls, matches = [], [], [], []
        for i, ((gb, gc), (db, ds, dc)) in enumerate(zip(gts, dets)):
            matches.append(match_image(gb, gc, db, ds, dc))
            image.append(np.full(len(ds), i))
            score.append(ds)
            cls.append(dc)
        levels.append(ExitDetections(np.concatenate(image), np.concatenate(score),
                                     np.concatenate(cls), np.concatenate(matches)))
    gt_counts = np.stack([np.bincount(gc, minlength=n_classes) for _, gc in gts])
    return ExitTable(gate_scores, gate_labels, gt_counts, tuple(levels),  # type: ignore[arg-type]
                     macs_per_exit=np.array([1.0, 1.6, 2.0]))


def best_ms(fn, repeats: int) -> float:
    """Fastest wall time of ``repeats`` calls in milliseconds (least disturbed by other work)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


PROFILES = [(0.0, 0.0), (0.3, 0.5), (0.5, 0.5), (0.7, 0.3), (1.01, 1.01)]


def measure(images: int = 1000, classes: int = 10, dets: int = 50, repeats: int = 20, seed: int = 0) -> dict:
    """Build the table, then per profile: cache ms, COCO AP on the final boxes ms, their ratio and AP difference."""
    rng = np.random.default_rng(seed)
    gts, per_level, gate_scores, gate_labels = synthetic_dataset(rng, images, classes, dets)
    t0 = time.perf_counter()
    table = build_table(gts, per_level, gate_scores, gate_labels, classes)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    table.evaluate(0.5, 0.5)
    first_ms = 1000 * (time.perf_counter() - t0)
    rows = []
    for t1, t2 in PROFILES:
        metrics = table.evaluate(t1, t2)
        cache_ms = best_ms(lambda t1=t1, t2=t2: table.evaluate(t1, t2), repeats)
        levels = table.exit_levels(t1, t2)
        final = [per_level[lv - 1][i] for i, lv in enumerate(levels)]
        t0 = time.perf_counter()
        ref = average_precision(gts, final, num_classes=classes)
        ref_ms = 1000 * (time.perf_counter() - t0)
        rows.append({"t1": t1, "t2": t2, "exit_shares": metrics.exit_shares.tolist(), "ap50_95": metrics.ap50_95,
                     "cache_ms": cache_ms, "boxes_ms": ref_ms, "ratio": ref_ms / cache_ms,
                     "abs_diff": abs(ref["ap50_95"] - metrics.ap50_95)})
    return {"images": images, "classes": classes, "detections": int(sum(len(d.image) for d in table.levels)),
            "build_s": build_s, "first_ms": first_ms, "rows": rows}


def format_rows(doc: dict) -> str:
    lines = [f"table: {doc['images']} images, {doc['classes']} classes, {doc['detections']} cached detections over "
             f"3 levels; matching {doc['build_s']:.2f} s, first evaluate (builds the index) {doc['first_ms']:.1f} ms",
             "cache ms: ExitTable.evaluate (best of --repeats); boxes ms: average_precision on the profile's "
             "final boxes (matching + AP); |diff|: AP50:95 difference between the two",
             f"{'t1':>5} {'t2':>5} {'exit shares':>17} {'AP50:95':>8} {'cache ms':>9} {'boxes ms':>9} "
             f"{'ratio':>7} {'|diff|':>8}"]
    for r in doc["rows"]:
        shares = "/".join(f"{s:.2f}" for s in r["exit_shares"])
        lines.append(f"{r['t1']:5.2f} {r['t2']:5.2f} {shares:>17} {r['ap50_95']:8.4f} {r['cache_ms']:9.2f} "
                     f"{r['boxes_ms']:9.1f} {r['ratio']:6.0f}x {r['abs_diff']:8.1e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Time both paths for a few profiles and print them side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images in the table (default 1000)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    parser.add_argument("--dets", type=int, default=50, help="detections per image and level (default 50)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per cache profile (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the synthetic table (default 0)")
    args = parser.parse_args(argv)
    if min(args.images, args.classes, args.dets, args.repeats) < 1:
        print("error: --images, --classes, --dets and --repeats must be positive", file=sys.stderr)
        return 2
    print(format_rows(measure(args.images, args.classes, args.dets, args.repeats, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
