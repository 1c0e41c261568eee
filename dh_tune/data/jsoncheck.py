"""JSON Schema checks for annotation files, fast enough for COCO's 860k annotations.

Every entry is validated against its schema; a cheap hand-written test accepts the common
well-formed case first, and only entries it does not accept go through jsonschema (which
also gives the message a user sees).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema

from .records import DataError


def is_number(value: object) -> bool:
    """True for JSON numbers (int or float, not bool), as JSON Schema's 'number'."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_integer(value: object) -> bool:
    """True for JSON integers (int, not bool); 2.0 is left to the full schema check."""
    return isinstance(value, int) and not isinstance(value, bool)


class EntryCheck:
    """Validator of one kind of entry: `error(item)` is None when the item fits the schema.

    `quick` must only accept items the schema accepts; everything else is checked in full.
    """

    def __init__(self, schema: dict, quick: Callable[[object], bool] | None = None) -> None:
        self.validator = jsonschema.Draft202012Validator(schema)
        self.quick = quick

    def error(self, item: object) -> str | None:
        """None for a valid item, else jsonschema's most relevant one-line message."""
        if self.quick is not None and self.quick(item):
            return None
        best = jsonschema.exceptions.best_match(self.validator.iter_errors(item))
        return None if best is None else best.message


def load_annotation_json(file: Path, check: EntryCheck, kind: str) -> dict:
    """Read an annotation file and check its top level; DataError names the file and the reason."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise DataError(f"{file}: cannot read ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{file}: not valid JSON ({err})") from None
    message = check.error(data)
    if message:
        raise DataError(f"{file}: not a {kind} file ({message})")
    return data
