"""The inference runtimes dh-tune times and deploys with: torch (eager), ONNX Runtime and OpenVINO.

A latency table, and every profile chosen against it, belongs to one runtime: the same network runs
2.5-4x faster under ONNX Runtime or OpenVINO than in eager PyTorch on a CPU, so a budget met in one
is not the budget met in another.
"""
from __future__ import annotations

import torch

from .export.dhnet_runtime import RUNTIMES_FOR_FORMAT, runtime_version
from .messages import InputError

RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime", "openvino")

PREFERENCE: tuple[str, ...] = ("onnxruntime", "openvino", "torch")
"""Fastest first on CPUs, as measured side by side in benchmarks/bench_runtimes.py (224-640 px)."""


class RuntimeChoiceError(InputError):
    """A runtime that is unknown, not installed, or not the one a table or profile was made for."""


def version(name: str) -> str | None:
    """Installed version of a runtime, None when it is not installed."""
    if name == "torch":
        return torch.__version__.split("+")[0]
    if name not in RUNTIMES:
        raise RuntimeChoiceError(f"unknown runtime {name!r} (use one of: {', '.join(RUNTIMES)})")
    return runtime_version(name)


def installed() -> list[str]:
    """The runtimes that can be imported here, in RUNTIMES order."""
    return [r for r in RUNTIMES if version(r) is not None]


def fastest_installed() -> str:
    """The default runtime: the first of PREFERENCE that is installed (torch always is)."""
    return next(r for r in PREFERENCE if version(r) is not None)


def resolve(name: str | None) -> str:
    """The runtime to use: `name` if it is installed, the fastest installed one when name is None."""
    if name is None:
        return fastest_installed()
    if version(name) is None:
        raise RuntimeChoiceError(f"runtime {name} is not installed (pip install {name}, or --runtime torch)")
    return name


def check_match(made_for: str, wanted: str, what: str, allow_other: bool = False) -> None:
    """Refuse to use something made with one runtime's timings under another, unless asked."""
    if made_for != wanted and not allow_other:
        raise RuntimeChoiceError(
            f"{what}: made with {made_for} timings, its latency does not hold under {wanted} "
            f"(use --runtime {made_for}, or --any-runtime to run it anyway)")


def format_runtime(fmt: str) -> str:
    """The runtime an exported format runs under by default."""
    return RUNTIMES_FOR_FORMAT[fmt][0]
