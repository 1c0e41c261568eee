"""Network input sizes: square and a positive multiple of the largest stride, so every head's grid is whole.

Checked in one place for the commands, the pipeline file and the letterbox; torch-free.
"""
from __future__ import annotations

LARGEST_STRIDE = 32
"""Stride of the deepest head (P5, the last of model.config.STRIDES): an input size must be a multiple of it."""


def imgsz_problem(imgsz: int) -> str | None:
    """Why `imgsz` cannot be a network input size, e.g. 'must be a positive multiple of 32 ...'; None when it can."""
    if imgsz <= 0 or imgsz % LARGEST_STRIDE:
        return f"must be a positive multiple of {LARGEST_STRIDE} (the largest stride)"
    return None


def check_imgsz(imgsz: int, name: str = "image size", error: type[Exception] = ValueError) -> int:
    """`imgsz` when it is a network input size, else `error` with `<name> <imgsz>: <the problem>`."""
    problem = imgsz_problem(imgsz)
    if problem is not None:
        raise error(f"{name} {imgsz}: {problem}")
    return imgsz
