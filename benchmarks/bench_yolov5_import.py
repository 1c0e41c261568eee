"""A best.pt from YOLOv5's own trainer, imported and scored by dh-tune, beside what YOLOv5's own val.py reported.

Times the import (no YOLOv5 code run), then scores the imported detector with all heads as
`python -m dh_tune.evaluate --thresholds 0 0` does (COCO-style AP, validation NMS: conf 0.001, IoU 0.6, 300 per
image) and prints it next to val.py's mAP50 and mAP50-95 for the same images, with the difference (goal: AP50
within 0.02; the two integrate the precision-recall curve differently). YOLOv5's numbers are read from a JSON
file the user writes from val.py's output, e.g. {"mAP50": 0.799, "mAP50_95": 0.478}.

    python benchmarks/bench_yolov5_import.py --best best.pt --data data.yaml --imgsz 160 --yolov5-val val.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def measure(best: Path, data: str, imgsz: int, split: str) -> dict:
    """Import time and dh-tune's AP with all heads on the split."""
    from dh_tune.data import load_dataset
    from dh_tune.evaluate.exit_cache import cached_exit_table
    from dh_tune.import_yolov5 import import_yolov5
    from dh_tune.model.checkpoint import file_sha256, load_model

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = import_yolov5(best, Path(tmp) / "model.pt")
        import_s = time.perf_counter() - t0
        model, ckpt = load_model(out)
        records = load_dataset(data).splits[split]
        t0 = time.perf_counter()
        table = cached_exit_table(model, file_sha256(out), records, imgsz, eps=4.0, cache_dir=Path(tmp),
                                  progress=False)
        score_s = time.perf_counter() - t0
    m = table.evaluate(0.0, 0.0)
    return {"import_s": import_s, "score_s": score_s, "images": len(records), "imgsz": imgsz,
            "ap50": float(m.ap50), "ap50_95": float(m.ap50_95), "source": ckpt["source"]}


def format_result(ours: dict, theirs: dict | None) -> str:
    lines = [f"import: {ours['import_s']:.1f} s ({ours['source']['file']}, {ours['source']['weights']} weights); "
             f"scoring {ours['images']} images at {ours['imgsz']} px: {ours['score_s']:.1f} s",
             f"{'':>22} | {'AP50':>6} | {'AP50:95':>7}",
             f"{'dh-tune (all heads)':>22} | {ours['ap50']:6.3f} | {ours['ap50_95']:7.3f}"]
    if theirs:
        d50, d95 = ours["ap50"] - theirs["mAP50"], ours["ap50_95"] - theirs["mAP50_95"]
        lines += [f"{'YOLOv5 val.py':>22} | {theirs['mAP50']:6.3f} | {theirs['mAP50_95']:7.3f}",
                  f"{'difference':>22} | {d50:+6.3f} | {d95:+7.3f}",
                  f"AP50 within 0.02 of val.py: {'met' if abs(d50) <= 0.02 else 'NOT met'}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--best", type=Path, required=True, help="best.pt written by YOLOv5's train.py")
    p.add_argument("--data", required=True, help="the dataset it was trained on (YOLO data YAML)")
    p.add_argument("--imgsz", type=int, default=640, help="input size, as val.py was run (default 640)")
    p.add_argument("--split", default="val", help="split val.py scored (default val)")
    p.add_argument("--yolov5-val", type=Path, default=None, help="JSON with val.py's mAP50 and mAP50_95")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    ours = measure(args.best, args.data, args.imgsz, args.split)
    theirs = json.loads(args.yolov5_val.read_text()) if args.yolov5_val else None
    print(format_result(ours, theirs))
    if args.json:
        args.json.write_text(json.dumps({"dh_tune": ours, "yolov5_val": theirs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
