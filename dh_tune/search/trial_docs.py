"""Trial result documents (OUT/trials/<id>/result.json): what each trial did, read back on every resume.

A trial's status is `running` while it trains, then `finished` (trained and scored), `pruned` (stopped early
by the scheduler, with its last report), `failed` (with the reason), `duplicate` (a point trained before) or
`interrupted` (its search was killed: not counted, its point may be drawn again).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from .. import fsio
from ..messages import first_line
from .records import ENDED, TrialResult, TrialStatus

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"


def write_result(trial_dir: Path, doc: TrialResult) -> None:
    fsio.write_json(trial_dir / RESULT_FILE, doc.to_dict())


def _parse(text: str) -> TrialResult | None:
    """The result document in `text`, or None when it is JSON but not a result (no params, unknown status)."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict):
        return None
    try:
        return TrialResult.from_dict(doc)
    except (KeyError, TypeError, ValueError):
        return None


def read_result(trial_dir: Path) -> TrialResult | None:
    """A trial's result document, or None when it has none (or an unreadable one)."""
    f = trial_dir / RESULT_FILE
    if not f.is_file():
        return None
    try:
        return _parse(fsio.read_text(f, "trial result"))
    except (ValueError, OSError):
        return None


def same_point(a: dict[str, float], b: dict[str, float]) -> bool:
    """True when two hyperparameter points name the same values (up to float round-off)."""
    return a.keys() == b.keys() and all(math.isclose(float(a[k]), float(b[k]), rel_tol=1e-9, abs_tol=1e-12)
                                        for k in a)


def result_docs(out_dir: Path) -> list[tuple[Path, TrialResult]]:
    """Every trial's result document, oldest first; an unreadable one is reported and skipped."""
    docs = []
    for f in (Path(out_dir) / "trials").glob(f"*/{RESULT_FILE}"):
        try:
            doc = _parse(fsio.read_text(f, "trial result"))
        except (ValueError, OSError) as exc:
            logger.warning("%s: unreadable trial result (%s); the trial is run again", f, first_line(exc))
            continue
        if doc is not None:
            docs.append((f, doc))
    return sorted(docs, key=lambda fd: (float(fd[1].started or 0.0), fd[1].trial_id))


def ended_trials(out_dir: Path) -> list[TrialResult]:
    """Result documents of every distinct point that finished, was pruned or failed (across invocations).

    A point tried twice counts once (the first result); a trial still marked running was interrupted.
    """
    docs: list[TrialResult] = []
    for _, doc in result_docs(out_dir):
        if doc.status in ENDED and not any(same_point(d.params, doc.params) for d in docs):
            docs.append(doc)
    return docs


def mark_interrupted(out_dir: Path) -> list[TrialResult]:
    """Trials a killed search left `running` become `interrupted` (they are not counted; their point may be
    drawn again). Call only while holding the search folder's lock. Returns the documents changed."""
    changed = []
    for f, doc in result_docs(out_dir):
        if doc.status is TrialStatus.RUNNING:
            doc.status, doc.error = TrialStatus.INTERRUPTED, "the search stopped while this trial ran"
            write_result(f.parent, doc)
            changed.append(doc)
    return changed


def most_at_once(docs: list[TrialResult]) -> int:
    """The most trials that ran at the same time, from their documents' `started` and `ended` times."""
    events = sorted((t, step) for d in docs if d.started is not None and d.ended is not None
                    for t, step in ((float(d.started), 1), (float(d.ended), -1)))
    running = peak = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start: touching intervals do not overlap
        running += step
        peak = max(peak, running)
    return peak


def adopt_interrupted(out_dir: Path, trial_dir: Path, params: dict[str, float]) -> str | None:
    """Move the training of an interrupted trial with the same point (a search killed while it trained) into
    `trial_dir`, so the new trial resumes it instead of starting over. Returns the adopted trial's id, or None.

    Only a run folder with a checkpoint is taken; the old document keeps status `interrupted` and names its heir.
    """
    target = trial_dir / "train"
    if target.exists():
        return None
    for f, doc in result_docs(out_dir):
        source = f.parent / "train"
        if (doc.status is TrialStatus.INTERRUPTED and f.parent != trial_dir and same_point(doc.params, params)
                and (source / "weights" / "last.pt").is_file()):
            source.rename(target)
            doc.resumed_by = trial_dir.name
            write_result(f.parent, doc)
            return doc.trial_id
    return None
