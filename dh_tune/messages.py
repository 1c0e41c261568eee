"""What users read: one-line messages from exceptions, numbers refused when not finite, URIs without secrets.

Shared by every command, so that a bad input gives the same kind of line wherever it comes in.
"""
from __future__ import annotations

import argparse
import json
import math
import re
from typing import Any


class InputError(ValueError):
    """Input the user can fix (a file, a flag, a setting): commands print its one line and exit with 2.

    The project's input errors derive from it, so that commands catch them and nothing else: an
    unexpected internal error keeps its traceback.
    """


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
