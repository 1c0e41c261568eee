"""One entry point for every dataset format: detect YOLO, COCO or TT100K and read it.

`None` stands for the embedded synthetic dataset, so every command works without user data.
"""
from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .coco import read_coco
from .home import default_dataset
from .problems import summarize_problems
from .records import DataError, Dataset
from .tt100k import ANNOTATION_FILES, read_tt100k
from .yolo import read_yolo

logger = logging.getLogger(__name__)
FORMATS = ("yolo", "coco", "tt100k")
DEFAULT_OPTIONS = ("imgsz", "train", "val", "seed", "home")
_JSON_KEY = re.compile(rb'"(imgs|images)"\s*:')


def detect_format(spec: Path) -> str:
    """'yolo', 'coco' or 'tt100k' for a path, following these conventions:

    a .yaml file or a folder with data.yaml (or one .yaml) is YOLO; a folder with
    annotations.json / annotations_all.json, or a JSON with an 'imgs' key, is TT100K; a folder
    with annotations/instances_<split>.json, or a JSON with an 'images' key, is COCO.
    """
    if not spec.exists():
        raise DataError(f"{spec}: not found")
    if spec.is_file():
        if spec.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
        if spec.suffix.lower() == ".json":
            with spec.open("rb") as f:
                match = _JSON_KEY.search(f.read(1 << 20))
            if match:
                return "tt100k" if match.group(1) == b"imgs" else "coco"
            raise DataError(f"{spec}: JSON has neither COCO 'images' nor TT100K 'imgs' near its start")
        raise DataError(f"{spec}: expected a data YAML, a COCO or TT100K JSON, or a dataset folder")
    yamls = sorted(spec.glob("*.yaml")) + sorted(spec.glob("*.yml"))
    if (spec / "data.yaml").is_file() or len(yamls) == 1:
        return "yolo"
    if any((spec / name).is_file() for name in ANNOTATION_FILES):
        return "tt100k"
    if list(spec.glob("annotations/instances_*.json")) or list(spec.glob("instances_*.json")):
        return "coco"
    if len(yamls) > 1:
        raise DataError(f"{spec}: several YAML files ({', '.join(p.name for p in yamls[:4])}); pass one of them")
    raise DataError(f"{spec}: cannot tell the dataset format (no data.yaml, annotations.json or "
                    f"annotations/instances_*.json)")


def _yaml_in(spec: Path) -> Path:
    if spec.is_file():
        return spec
    if (spec / "data.yaml").is_file():
        return spec / "data.yaml"
    return (sorted(spec.glob("*.yaml")) + sorted(spec.glob("*.yml")))[0]


def load_dataset(spec: str | Path | None, *, strict: bool = False, fmt: str | None = None,
                 **reader_options: Any) -> Dataset:
    """Read a dataset of any supported format; None means the embedded synthetic default.

    Bad items are skipped and listed in `Dataset.problems` (a summary is logged); strict=True
    raises DataError on the first one. Reader options: COCO images=DIR; TT100K min_images,
    min_instances, include_other, drop_empty; default dataset imgsz, train, val, seed, home.
    """
    if spec is None:
        options = {k: reader_options.pop(k) for k in DEFAULT_OPTIONS if k in reader_options}
        spec, fmt = default_dataset(**options), "yolo"
    spec = Path(spec).expanduser()
    fmt = fmt or detect_format(spec)
    if fmt not in FORMATS:
        raise DataError(f"{spec}: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    readers: dict[str, Callable[..., Dataset]] = {"yolo": read_yolo, "coco": read_coco, "tt100k": read_tt100k}
    reader = readers[fmt]
    allowed = [name for name, p in inspect.signature(reader).parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(reader_options) - set(allowed))
    if unknown:
        raise DataError(f"{spec}: option(s) {', '.join(unknown)} do not apply to {fmt} data "
                        f"(options: {', '.join(o for o in allowed if o != 'strict') or 'none'})")
    dataset = reader(_yaml_in(spec) if fmt == "yolo" else spec, strict=strict, **reader_options)
    if not any(dataset.splits.values()):
        first = f"; first: {dataset.problems[0].line()}" if dataset.problems else ""
        raise DataError(f"{spec}: no usable images ({len(dataset.problems)} problems{first})")
    if dataset.problems:
        logger.warning("%s", summarize_problems(dataset.problems))
    return dataset
