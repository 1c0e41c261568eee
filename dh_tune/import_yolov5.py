"""`python -m dh_tune.import_yolov5 BEST.pt --out MODEL.pt`: a YOLOv5 checkpoint as a dh-tune checkpoint.

The file is read without YOLOv5 installed and without running code from it; MODEL.pt loads with weights_only=True and
its static forward is YOLOv5's, with two untrained gates that a search (`--from-yolov5`) can train.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .fsio import slug
from .messages import command_prog, run_command
from .model.checkpoint import model_args, save_checkpoint
from .model.dhnet import DHNet
from .model.yolov5 import DEFAULT_IMGSZ, YOLOv5Source
from .pipeline import DataConfig, LossConfig, ModelConfig, Pipeline, TrainConfig

ACCEPTED = ("Accepted: best.pt/last.pt as YOLOv5 v6.0-v7.0's train.py writes them (a clone's models.* classes or the "
            "yolov5 package's, fp16 or fp32; EMA weights when present) and YOLOv5-named state dicts. Refused, with one "
            "line: P6 models (four outputs), edited backbones or heads, Ultralytics' anchor-free YOLOv5u/YOLOv8, "
            "segmentation and classification models, and any file whose pickle names anything but tensors, plain "
            "containers and YOLOv5's layer classes (exit status 2; nothing from the file is run).")


def training_size(source: YOLOv5Source) -> int:
    """The size the detector was trained at, as a multiple of 32 (YOLOv5's default 640 when the file lacks it)."""
    return DEFAULT_IMGSZ if source.imgsz is None else max(32, round(source.imgsz / 32) * 32)


def pipeline_for(source: YOLOv5Source) -> Pipeline:
    """The pipeline the imported checkpoint records: its scale and size, and a plain detector's loss (no gate loss)."""
    return Pipeline(name=f"yolov5-{slug(Path(source.file).stem)}", model=ModelConfig(scale=source.scale),
                    data=DataConfig(imgsz=training_size(source)),
                    train=TrainConfig(loss=LossConfig(gate_lambda=0.0, gate_trunk_grad=0.0)))


def checkpoint_state(model: DHNet, source: YOLOv5Source) -> dict[str, Any]:
    """What save_checkpoint writes for an imported detector: weights, its description and no training history."""
    return {"model": model.state_dict(), "ema": None, "optimizer": None, "scaler": None, "epoch": -1, "epochs": 0,
            "metrics": {}, "history": [], "best_fitness": -1.0, "dataset": None, "names": list(source.names),
            "model_args": model_args(model), "config": pipeline_for(source).model_dump(mode="json"),
            "source": {"format": "yolov5", **source.to_dict()}}


def import_yolov5(src: Path, out: Path, seed: int = 0) -> Path:
    """Write OUT, a dh-tune checkpoint of the YOLOv5 file SRC (gates initialised from `seed`); returns OUT."""
    _write(src, out, seed)
    return Path(out)


def _write(src: Path, out: Path, seed: int) -> tuple[DHNet, YOLOv5Source]:
    model = DHNet.from_yolov5(src, gates=True, seed=seed)
    assert model.yolov5_source is not None
    save_checkpoint(out, checkpoint_state(model, model.yolov5_source))
    return model, model.yolov5_source


def summary(out: Path, model: DHNet, source: YOLOv5Source) -> str:
    """One line: what was imported, from which weights, and what the file said about the model."""
    tensors = sum(not k.startswith("gates.") for k in model.state_dict())
    anchors = "changed from YOLOv5's defaults" if source.anchors_changed() else "YOLOv5's defaults"
    return (f"{source.file} -> {out}: scale {source.scale[0]:g}/{source.scale[1]:g}, nc {source.nc}, "
            f"{len(source.names)} names, anchors {anchors}, {source.weights} weights, {tensors} tensors loaded")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=command_prog("import-yolov5"), description=__doc__.split(":", 1)[1].strip(),
                                epilog=ACCEPTED)
    p.add_argument("src", type=Path, metavar="SRC", help="YOLOv5 checkpoint (best.pt) or state dict")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL.pt", help="dh-tune checkpoint to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained gates' initial weights (default 0)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    """Import and print the summary line."""
    model, source = _write(args.src, args.out, args.seed)
    print(summary(args.out, model, source))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
