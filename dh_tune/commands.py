"""The package's commands: each `dh-tune` subcommand, the module whose `main(argv)` runs it and its summary.

One table, read by the `dh-tune` dispatcher (cli.py) and by each command's usage line (messages.command_prog).
"""
from __future__ import annotations

COMMANDS: dict[str, tuple[str, str]] = {
    "search": ("dh_tune.search.__main__", "gate-threshold profiles per device latency budget"),
    "train": ("dh_tune.train.__main__", "train a DH-Net from a pipeline file (Ray Train)"),
    "evaluate": ("dh_tune.evaluate.__main__", "AP, gate quality and latency of a profile"),
    "detect": ("dh_tune.detect", "run a DH-Net (and a profile) on images"),
    "latency": ("dh_tune.latency.__main__", "time DH-Net's parts on this device (latency table)"),
    "export": ("dh_tune.export.__main__", "a profile as a deployment folder (ONNX, OpenVINO)"),
    "data": ("dh_tune.data.__main__", "check datasets, make synthetic signs, Table 1"),
    "model": ("dh_tune.model.__main__", "parameters and GMACs per exit (Table 2)"),
    "import-yolov5": ("dh_tune.import_yolov5", "a YOLOv5 best.pt as a dh-tune checkpoint (no YOLOv5 code run)"),
}
"""Subcommand -> (module whose main(argv) runs it, one-line description)."""

ALIASES: dict[str, str] = {"profile-device": "latency"}
"""Former subcommand names that still run, -> the subcommand they name now (not listed in --help)."""


def command_module(command: str) -> str:
    """The module that runs a subcommand (or an alias of one), e.g. 'dh_tune.latency.__main__'."""
    return COMMANDS[ALIASES.get(command, command)][0]


def python_m(command: str) -> str:
    """What `python -m` takes to run a subcommand, e.g. 'dh_tune.latency' for 'latency'."""
    return command_module(command).removesuffix(".__main__")
