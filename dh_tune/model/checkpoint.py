"""The checkpoint format that training writes and inference reads, loadable with
`torch.load(..., weights_only=True)`.

A checkpoint is a dict of tensors and plain Python values only (no pickled objects):
`format`, `version`, `model`/`ema` (state dicts), `optimizer`, `scaler`, `epoch` (last finished,
0-based), `config` (the pipeline as a dict), `names` (class names), `model_args` (scale, nc,
anchors), `metrics` (of that epoch), `best_fitness`, `history` (metrics of every epoch).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..fsio import UnreadableFile, atomic_path, check_regular, sha256_of
from ..messages import InputError
from .dhnet import DHNet
from .weights import describe_unloadable

FORMAT = "dh-tune-checkpoint"
VERSION = 1


class CheckpointError(InputError):
    """A checkpoint that cannot be used (one line: the file and the reason)."""


def model_args(model: DHNet) -> dict[str, Any]:
    """What it takes to rebuild the architecture: scale (depth, width), nc, anchors in pixels, gates."""
    return {"scale": [model.scale.depth, model.scale.width], "nc": model.nc,
            "anchors_px": model.anchors_px.tolist(), "gates": model.gates is not None}


def checkpoint_file(path: str | Path) -> Path:
    """`path` when it is a non-empty regular file; CheckpointError names it otherwise.

    Folders, devices and pipes are refused before anything reads them (reading /dev/zero never ends).
    """
    try:
        path = check_regular(path, "checkpoint")
    except UnreadableFile as exc:
        raise CheckpointError(str(exc)) from None
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a dh-tune checkpoint")
    return path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a checkpoint's bytes: checkpoints are identified by content, not by path.

    CheckpointError for what `checkpoint_file` refuses.
    """
    return sha256_of(checkpoint_file(path))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write atomically (temp file, then rename) so an interrupted save never leaves a broken file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (weights_only=True) and check its format."""
    path = checkpoint_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - one line of our own: torch's is many, with advice never to pass on
        raise CheckpointError(f"{path}: not a readable dh-tune checkpoint ({describe_unloadable(path)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a dh-tune checkpoint (no format tag '{FORMAT}')")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')!r} is not the one this dh-tune "
                              f"reads ({VERSION})")
    return ckpt


def build_model(ckpt: dict[str, Any], use_ema: bool = True) -> DHNet:
    """The model stored in a checkpoint (EMA weights when present), in eval mode."""
    args = ckpt["model_args"]
    model = DHNet(tuple(args["scale"]), nc=args["nc"], anchors_px=args["anchors_px"], gates=args["gates"])
    weights = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(weights)
    return model.eval()


def load_model(path: str | Path, use_ema: bool = True) -> tuple[DHNet, dict[str, Any]]:
    """Model and checkpoint dict from a checkpoint file."""
    ckpt = load_checkpoint(path)
    return build_model(ckpt, use_ema), ckpt


@dataclass(frozen=True)
class CheckpointPipeline:
    """Typed view of the pipeline a checkpoint was trained with (the plain dict stored in it as `config`)."""

    config: dict[str, Any]

    @classmethod
    def of(cls, ckpt: dict[str, Any]) -> CheckpointPipeline:
        return cls(ckpt["config"])

    @property
    def imgsz(self) -> int:
        """data.imgsz: the input size it was trained at."""
        return int(self.config["data"]["imgsz"])

    @property
    def val_split(self) -> str:
        """data.val_split: the split it was validated on."""
        return str(self.config["data"]["val_split"])

    @property
    def train_split(self) -> str:
        return str(self.config["data"].get("train_split", "train"))

    @property
    def data_format(self) -> str | None:
        """data.format: the dataset format its pipeline named, None when it was detected from the files."""
        return self.config["data"].get("format")

    @property
    def loss(self) -> dict[str, Any]:
        """train.loss, as a plain dict."""
        return self.config["train"]["loss"]

    @property
    def eps(self) -> float:
        """train.loss.eps: the gate-label epsilon (paper Eq. 5)."""
        return float(self.loss["eps"])

    @property
    def epochs(self) -> int:
        return int(self.config["train"]["epochs"])


def checkpoint_pipeline(ckpt: dict[str, Any]) -> CheckpointPipeline:
    """The typed view of the pipeline stored in a checkpoint."""
    return CheckpointPipeline.of(ckpt)


def checkpoint_imgsz(ckpt: dict[str, Any]) -> int:
    """Input size the checkpoint was trained at (its pipeline's data.imgsz)."""
    return CheckpointPipeline.of(ckpt).imgsz


def checkpoint_eps(ckpt: dict[str, Any]) -> float:
    """Gate-label epsilon the checkpoint was trained with (its pipeline's train.loss.eps, paper Eq. 5)."""
    return CheckpointPipeline.of(ckpt).eps


def checkpoint_val_split(ckpt: dict[str, Any]) -> str:
    """Name of the split the checkpoint was validated on (its pipeline's data.val_split)."""
    return CheckpointPipeline.of(ckpt).val_split


def checkpoint_data_format(ckpt: dict[str, Any]) -> str | None:
    """Dataset format its pipeline named (data.format), or None when it was detected from the files."""
    return CheckpointPipeline.of(ckpt).data_format


__all__ = ["CheckpointError", "CheckpointPipeline", "build_model", "checkpoint_data_format", "checkpoint_eps",
           "checkpoint_file", "checkpoint_imgsz", "checkpoint_pipeline", "checkpoint_val_split", "file_sha256",
           "load_checkpoint", "load_model", "model_args", "save_checkpoint"]
