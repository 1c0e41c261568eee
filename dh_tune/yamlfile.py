"""Read a YAML configuration file, turning every failure into one line: the file and the reason."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .fsio import UnreadableFile, read_text
from .messages import first_line


def read_yaml_mapping(path: str | Path, error: type[Exception], expected: str) -> dict[str, Any]:
    """The file's top-level mapping; `error` (with file and reason) when missing, invalid or not a mapping."""
    path = Path(path)
    try:
        doc = yaml.safe_load(read_text(path))
    except UnreadableFile as exc:
        raise error(str(exc)) from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({first_line(exc)})") from None
    if not isinstance(doc, dict) or not doc:
        raise error(f"{path}: expected {expected}")
    return doc
