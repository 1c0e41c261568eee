"""Validation report: a short summary for the console and the full problem list for a file.

Users act on this list (fix or delete files), so each entry keeps the file, reason and action.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from .. import fsio
from .records import Problem


def summarize_problems(problems: list[Problem], limit: int = 5) -> str:
    """Counts per kind and the first few problems, as a few console lines ('' when clean)."""
    if not problems:
        return ""
    counts = Counter(p.kind for p in problems)
    lines = [f"{len(problems)} data problem(s): " + ", ".join(f"{k} {n}" for k, n in counts.most_common())]
    lines += [f"  {p.line()}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def write_problems(problems: list[Problem], path: str | Path) -> Path:
    """Write every problem to `path`: JSON list for '.json', else tab-separated with a header.

    Columns/keys: kind, file, reason, action. Parent folders are created. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = problems_as_dicts(problems)
    if path.suffix.lower() == ".json":
        return fsio.write_json(path, rows)
    with fsio.atomic_open(path) as f:
        writer = csv.DictWriter(f, fieldnames=["kind", "file", "reason", "action"], delimiter="\t",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_problems(path: str | Path) -> list[Problem]:
    """Read a problem list written by `write_problems` (JSON or tab-separated)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
    else:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    return [Problem(file=r["file"], reason=r["reason"], kind=r["kind"], action=r["action"]) for r in rows]


def problems_as_dicts(problems: list[Problem]) -> list[dict[str, str]]:
    """Problems as plain dicts (for JSON output and experiment tracking)."""
    return [asdict(p) for p in problems]
