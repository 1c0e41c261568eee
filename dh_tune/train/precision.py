"""Training precision: bf16 autocast on CPUs that compute bf16 natively, fp16 AMP on CUDA, fp32 elsewhere.

A CPU without native bf16 (AVX2, or AVX512 without its BF16 extension) would emulate it, slower than fp32,
so `train.bf16: auto` turns it on only where the processor says it has the instructions.
"""
from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

import torch

from ..pipeline import TrainConfig

BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}
"""The CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic: x86's AVX512-BF16 and AMX, Arm's BF16."""

CPUINFO = Path("/proc/cpuinfo")


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware and oneDNN can use it (read once per process)."""
    if not _onednn_bf16():
        return False
    if platform.system() != "Linux" or not CPUINFO.is_file():
        return False
    flags = {f for line in CPUINFO.read_text().splitlines() if line.lower().startswith(("flags", "features"))
             for f in line.split(":", 1)[1].split()}
    return bool(flags & BF16_FLAGS)


def _onednn_bf16() -> bool:
    """oneDNN's own check: its bf16 kernels run here (natively, or emulated on AVX512)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_dtype(tc: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The dtype a training step's forward pass autocasts to on `device`, or None for fp32: fp16 on CUDA with
    `train.amp`, bf16 on the CPU with `train.bf16` (auto: where native_bf16)."""
    if device.type == "cuda":
        return torch.float16 if tc.amp else None
    wanted = native_bf16() if tc.bf16 == "auto" else tc.bf16
    return torch.bfloat16 if device.type == "cpu" and wanted else None
