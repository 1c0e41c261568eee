"""How the gate loss reaches the trunk, and what that costs the detector: four trainings side by side.

Each setting trains the pipeline (default: quickstart) from scratch for the same epochs and seed:
  plain        gate weight 0: a YOLOv5 trained without gate supervision (the accuracy baseline)
  paper        lambda 0.2, end to end (the gate gradient flows into the backbone and neck)
  small-lambda lambda 0.0125, end to end (lambda rescaled the way YOLOv5 rescales its own gains)
  detached     lambda 0.2, gates read the detector's features through a stopped gradient
and reports AP with all heads, gate accuracy, AP lost against `plain`, and the trunk-gradient share
of the gate term (|grad lambda*L_gate| / |grad L_det| over the backbone, neck and heads) on the
trained model. Each finished setting is kept in --json, so a stopped run resumes.

    python benchmarks/bench_gate_parity.py --epochs 8 --json runs/benchmarks/gate_parity.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SETTINGS: dict[str, dict] = {
    "plain": {"gate_lambda": 0.0, "gate_trunk_grad": 1.0},
    "paper": {"gate_lambda": 0.2, "gate_trunk_grad": 1.0},
    "small-lambda": {"gate_lambda": 0.0125, "gate_trunk_grad": 1.0},
    "detached": {"gate_lambda": 0.2, "gate_trunk_grad": 0.0},
}


def trunk_share(checkpoint: Path, pipeline, batches: int = 4) -> float:
    """Median over a few training batches of the gate term's share of the trunk gradient."""
    import numpy as np
    from torch.utils.data import DataLoader

    from dh_tune.data import DetectionDataset, collate
    from dh_tune.data.gate_labels import gate_targets
    from dh_tune.loss import DHLoss
    from dh_tune.model.checkpoint import load_model
    from dh_tune.train.data_setup import load_splits
    from dh_tune.train.gradients import gate_gradient_share

    model, _ = load_model(checkpoint, use_ema=False)
    ls = pipeline.train.loss
    crit = DHLoss(model.nc, model.anchors_px.detach(), model.strides, pipeline.data.imgsz, ls)
    splits = load_splits(pipeline)
    loader = DataLoader(DetectionDataset(splits.train[: 16 * batches], pipeline.data.imgsz, augment=False),
                        batch_size=16, collate_fn=collate)
    shares = []
    for images, targets, _ in loader:
        gl = gate_targets(targets[:, 4:6], targets[:, 0].long(), images.shape[0], model.anchors_px.detach(), ls.eps)
        shares.append(gate_gradient_share(model, crit, images.float() / 255, targets, gl, ls.gate_trunk_grad))
    return float(np.median(shares))


def measure(pipeline, out: Path, epochs: int, store: Path | None = None, names: list[str] | None = None) -> dict:
    """Train every setting (or read it back from `store`) and return the rows with deltas against `plain`."""
    from dh_tune.train.run import TrainOptions, run_training

    rows = json.loads(store.read_text()) if store and store.is_file() else {}
    for name in names or list(SETTINGS):
        if name in rows:
            continue
        p = pipeline.with_overrides(train={"epochs": epochs, "loss": SETTINGS[name]})
        t0 = time.time()
        print(f"[gate-parity] {name}: {SETTINGS[name]}, {epochs} epochs", file=sys.stderr, flush=True)
        outcome = run_training(p, TrainOptions(run_dir=out / name, use_ray=False, track=False))
        import torch

        best = torch.load(outcome.best, map_location="cpu", weights_only=True)["metrics"]
        rows[name] = {**SETTINGS[name], "epochs": epochs, "ap50": best["ap50"], "ap50_95": best["ap50_95"],
                      "gate1_acc": best["gate1_acc"], "gate2_acc": best["gate2_acc"],
                      "trunk_share": trunk_share(outcome.last, p), "seconds": time.time() - t0}
        if store:
            store.parent.mkdir(parents=True, exist_ok=True)
            store.write_text(json.dumps(rows, indent=1))
    if "plain" in rows:
        for r in rows.values():
            r["d_ap50"] = r["ap50"] - rows["plain"]["ap50"]
            r["d_ap50_95"] = r["ap50_95"] - rows["plain"]["ap50_95"]
    return rows


def format_rows(rows: dict) -> str:
    lines = [f"{'setting':>13} | {'lambda':>6} | {'trunk':>5} | {'AP50':>6} {'AP50:95':>7} | {'vs plain':>15} | "
             f"{'gate acc':>11} | trunk share"]
    for name, r in rows.items():
        d = f"{r.get('d_ap50', 0):+.3f} / {r.get('d_ap50_95', 0):+.3f}"
        lines.append(f"{name:>13} | {r['gate_lambda']:6.4g} | {r['gate_trunk_grad']:5.2g} | {r['ap50']:6.3f} "
                     f"{r['ap50_95']:7.3f} | {d:>15} | {r['gate1_acc']:.3f}/{r['gate2_acc']:.3f} | "
                     f"{r['trunk_share']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", default="pipelines/quickstart.yaml")
    p.add_argument("--epochs", type=int, default=8, help="epochs of every setting (default 8)")
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks/gate_parity"), help="run folders")
    p.add_argument("--json", type=Path, default=None, help="keep the numbers here (and resume from them)")
    args = p.parse_args(argv)
    from dh_tune.pipeline import PipelineError, load_pipeline
    from dh_tune.resources import find_file

    try:
        pipeline = load_pipeline(find_file(args.pipeline, "pipelines"))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = measure(pipeline, args.out, args.epochs, args.json or args.out / "results.json", args.settings)
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
