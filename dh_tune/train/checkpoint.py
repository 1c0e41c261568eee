"""The training checkpoint format, readable with `torch.load(..., weights_only=True)`.

A checkpoint is a dict of tensors and plain Python values only (no pickled objects):
`format`, `version`, `model`/`ema` (state dicts), `optimizer`, `scaler`, `epoch` (last finished,
0-based), `config` (the pipeline as a dict), `names` (class names), `model_args` (scale, nc,
anchors), `metrics` (of that epoch), `best_fitness`, `history` (metrics of every epoch).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..export.dhnet_runtime import file_sha256  # checkpoints are identified by content, not by path
from ..model import DHNet
from ..messages import first_line

FORMAT = "dh-tune-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (one line: the file and the reason)."""


def model_args(model: DHNet) -> dict[str, Any]:
    """What it takes to rebuild the architecture: scale (depth, width), nc, anchors in pixels, gates."""
    return {"scale": [model.scale.depth, model.scale.width], "nc": model.nc,
            "anchors_px": model.anchors_px.tolist(), "gates": model.gates is not None}


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write atomically (temp file, then rename) so an interrupted save never leaves a broken file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (weights_only=True) and check its format."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report any unreadable file in one line
        raise CheckpointError(f"{path}: not a readable dh-tune checkpoint ({first_line(exc)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a dh-tune checkpoint (no format tag '{FORMAT}')")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt['version']} is newer than this dh-tune ({VERSION})")
    return ckpt


def build_model(ckpt: dict[str, Any], use_ema: bool = True) -> DHNet:
    """The model stored in a checkpoint (EMA weights when present), in eval mode."""
    args = ckpt["model_args"]
    model = DHNet(tuple(args["scale"]), nc=args["nc"], anchors_px=args["anchors_px"], gates=args["gates"])
    weights = ckpt.get("ema") if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(weights)
    return model.eval()


def load_model(path: str | Path, use_ema: bool = True) -> tuple[DHNet, dict[str, Any]]:
    """Model and checkpoint dict from a checkpoint file."""
    ckpt = load_checkpoint(path)
    return build_model(ckpt, use_ema), ckpt


__all__ = ["CheckpointError", "build_model", "file_sha256", "load_checkpoint", "load_model", "model_args",
           "save_checkpoint"]
