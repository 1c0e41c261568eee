"""Epoch hooks named by the environment: functions the training loop calls after every epoch, on every rank.

$DH_TUNE_EPOCH_HOOKS lists `module:function` names, comma-separated; each is called with an EpochEnd.
Ray Train workers read it from their own environment, so it must be set before Ray starts.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ENV_VAR = "DH_TUNE_EPOCH_HOOKS"


@dataclass(frozen=True)
class EpochEnd:
    """What a hook sees after an epoch (and its checkpoint and report): the run, this rank and the model.

    `epoch` is 0-based; `model` is the rank's own model, not its DDP wrapper.
    """

    run_dir: Path
    rank: int
    world_size: int
    epoch: int
    model: torch.nn.Module


EpochHook = Callable[[EpochEnd], None]


def epoch_hooks(spec: str | None = None) -> list[EpochHook]:
    """The functions named in `spec` (default: $DH_TUNE_EPOCH_HOOKS), imported now; none when it is empty.

    ValueError names an entry that is not `module:function`.
    """
    spec = os.environ.get(ENV_VAR, "") if spec is None else spec
    hooks = []
    for name in (part.strip() for part in spec.split(",")):
        if not name:
            continue
        module, _, function = name.partition(":")
        if not module or not function:
            raise ValueError(f"{ENV_VAR}: {name!r} is not module:function")
        hooks.append(getattr(importlib.import_module(module), function))
    return hooks
