"""What users read: one-line messages from exceptions, numbers refused when not finite, URIs without secrets.

Shared by every command, so that a bad input gives the same kind of line wherever it comes in: each runs its
body through `run_command`, which also shows the library's log records as plain lines on stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .commands import python_m


class InputError(ValueError):
    """Input the user can fix (a file, a flag, a setting): commands print its one line and exit with 2.

    The project's input errors derive from it, so that commands catch them and nothing else: an
    unexpected internal error keeps its traceback.
    """


PACKAGE_LOGGER = "dh_tune"
"""Parent of every module's logger (`logging.getLogger(__name__)`)."""


TAGGED_PACKAGES = ("search",)
"""Subpackages whose progress (INFO) lines start with their name in brackets, e.g. `[search] training ...`."""


class LineFormatter(logging.Formatter):
    """A record as the line users read: `warning: <message>` from WARNING up, else the message alone
    (tagged `[search] ` for the TAGGED_PACKAGES)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {line}"
        parts = record.name.split(".")
        if len(parts) > 1 and parts[0] == PACKAGE_LOGGER and parts[1] in TAGGED_PACKAGES:
            return f"[{parts[1]}] {line}"
        return line


class _LineHandler(logging.StreamHandler):
    """Each record as one `LineFormatter` line on the sys.stderr of the time the handler is made."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(LineFormatter("%(message)s"))


@contextmanager
def command_logging() -> Iterator[None]:
    """While a command runs, dh_tune's log records (INFO and up) are `LineFormatter` lines on stderr.

    The handler is made per command, so each call writes to the sys.stderr of its time, and removed afterwards.
    """
    logger = logging.getLogger(PACKAGE_LOGGER)
    handler, level = _LineHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def worker_logging() -> None:
    """In a process that runs no command (a Ray worker): dh_tune's log records as `LineFormatter` lines on stderr.

    Installed once per process; they stay off the root logger, whose handlers (if any) are Ray's.
    """
    logger = logging.getLogger(PACKAGE_LOGGER)
    if not any(isinstance(h, _LineHandler) for h in logger.handlers):
        logger.addHandler(_LineHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def command_prog(command: str) -> str:
    """A command's name in its usage line: `dh-tune COMMAND` under the console script, else `python -m dh_tune...`."""
    if os.path.basename(sys.argv[0]) == "dh-tune":
        return f"dh-tune {command}"
    return f"python -m {python_m(command)}"


def _refuse(line: str, status: int) -> int:
    print(f"error: {line}", file=sys.stderr)
    return status


def run_command(body: Callable[[], int], *, refused: tuple[type[BaseException], ...] = (),
                failed: tuple[type[BaseException], ...] = (),
                explain: Callable[[BaseException], str | None] | None = None) -> int:
    """Run a command's body under `command_logging` and return its exit status.

    InputError and the `refused` types print `error: <message>` on stderr and give 2, the `failed` types the
    same with 1; any other exception gives 1 with `explain`'s line where it has one, and otherwise propagates.
    """
    refusals: tuple[type[BaseException], ...] = (InputError, *refused)
    with command_logging():
        try:
            return body()
        except refusals as exc:
            return _refuse(str(exc), 2)
        except failed as exc:
            return _refuse(str(exc), 1)
        except Exception as exc:
            line = explain(exc) if explain is not None else None
            if line is None:
                raise
            return _refuse(line, 1)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def finite_float(text: str) -> float:
    """argparse type: a finite number (NaN and infinities are refused with the flag named by argparse)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


class NonFiniteNumber(InputError):
    """A JSON document holds NaN, Infinity or a number too large for a float."""


def _refuse_constant(name: str) -> Any:
    raise NonFiniteNumber(f"{name} is not a finite number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumber(f"{text} is not a finite number")
    return value


def loads_finite(text: str) -> Any:
    """json.loads that refuses NaN, Infinity and overflowing numbers (NonFiniteNumber) instead of reading them."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)


_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact_uri(uri: str) -> str:
    """A URI with any `user:password@` replaced by `***@`, for messages and logs."""
    return _CREDENTIALS.sub("***@", uri)
