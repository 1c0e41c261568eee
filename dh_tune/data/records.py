"""In-memory dataset records shared by the YOLO, COCO and TT100K readers.

One `ImageRecord` per image (absolute-pixel xyxy boxes), one `Dataset` per source, and the
`Problem` list that tells a user which file is bad and why, so training never trips over it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..messages import InputError

# Clipping by less than this many pixels is rounding noise (normalised labels), not a problem.
CLIP_TOLERANCE_PX = 0.5


class DataError(InputError):
    """A dataset problem that stops loading (strict mode or an unusable dataset).

    The message is one line naming the file and the reason, fit for a command-line error.
    """


@dataclass(frozen=True)
class Problem:
    """One bad item found while reading a dataset: which file, why, and what was done about it.

    `kind` is a stable keyword (e.g. 'missing_image', 'box_clipped') for counting and filtering.
    """

    file: str
    reason: str
    kind: str
    action: str

    def line(self) -> str:
        """One human-readable line: 'file: reason (action)'."""
        return f"{self.file}: {self.reason} ({self.action})"


@dataclass
class ImageRecord:
    """One image and its objects: boxes are float32 xyxy in absolute pixels of the stored image.

    `classes` holds contiguous int64 class ids indexing `Dataset.names`.
    """

    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        if len(self.boxes) != len(self.classes):
            raise ValueError(f"{self.path}: {len(self.boxes)} boxes but {len(self.classes)} classes")


@dataclass
class Dataset:
    """A whole dataset: contiguous class names, records per split and every problem found.

    `source_ids` maps contiguous class id -> original category id when the source ids were
    remapped (COCO); it is None otherwise.
    """

    name: str
    root: Path
    names: list[str]
    splits: dict[str, list[ImageRecord]]
    problems: list[Problem] = field(default_factory=list)
    source_ids: dict[int, int] | None = None

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)


class ProblemLog:
    """Collects problems while a reader runs; in strict mode the first one raises DataError.

    Readers call `add` for every bad item and keep going, so one bad file never stops a load.
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.problems: list[Problem] = []

    def add(self, file: str | Path, reason: str, kind: str, action: str) -> None:
        """Record one problem (or raise it at once in strict mode)."""
        problem = Problem(str(file), reason, kind, action)
        if self.strict:
            raise DataError(f"{problem.file}: {problem.reason}")
        self.problems.append(problem)


def inside_root(root: Path, candidate: str | Path) -> Path | None:
    """Join `candidate` onto `root` and return it only if it stays inside `root` (else None).

    Lexical check (no symlink resolution), so a '..' or an absolute path in an annotation file
    cannot point a reader outside the dataset, while symlinked dataset folders still work.
    """
    base = os.path.normpath(os.path.abspath(root))
    joined = os.path.normpath(os.path.join(base, os.fspath(candidate)))
    if joined != base and not joined.startswith(base + os.sep):
        return None
    return Path(joined)


def sanitize_boxes(
    boxes: np.ndarray,
    classes: np.ndarray,
    width: int,
    height: int,
    nc: int,
    file: str | Path,
    log: ProblemLog,
    labels: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Drop or clip invalid boxes of one image and record each fix as a problem.

    Checks, in order: class id in range, finite size > 0, overlap with the image (else dropped),
    and clipping to the image (recorded when it moves an edge by more than half a pixel).
    `labels` names each box in the messages (e.g. 'line 3'); defaults to 'box i'.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    keep = np.ones(len(boxes), dtype=bool)
    out = boxes.copy()
    for i, (box, cls) in enumerate(zip(boxes, classes)):
        where = labels[i] if labels is not None else f"box {i}"
        x1, y1, x2, y2 = box
        if not 0 <= cls < nc:
            log.add(file, f"{where}: class id {cls} out of range 0-{nc - 1}", "class_out_of_range", "dropped box")
            keep[i] = False
        elif not np.all(np.isfinite(box)) or x2 - x1 <= 0 or y2 - y1 <= 0:
            log.add(file, f"{where}: box of zero, negative or undefined size ({x2 - x1:g} x {y2 - y1:g} px)",
                    "degenerate_box", "dropped box")
            keep[i] = False
        elif x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            log.add(file, f"{where}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] fully outside the {width}x{height} image",
                    "box_outside", "dropped box")
            keep[i] = False
        else:
            clipped = np.array([max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))])
            if np.abs(clipped - box).max() > CLIP_TOLERANCE_PX:
                log.add(file, f"{where}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] partly outside the {width}x{height} "
                        "image", "box_clipped", "clipped box")
            out[i] = clipped
    return out[keep].astype(np.float32), classes[keep]
