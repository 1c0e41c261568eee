"""Reader for YOLO datasets: a data YAML plus one normalised label file per image.

Follows the YOLOv5 conventions (labels/ mirrors images/, train/val as folders, list files or
lists, names as list or dict) and turns every bad line or file into a reported problem.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import jsonschema
import numpy as np
import yaml
from tqdm import tqdm

from ..messages import first_line
from .images import IMAGE_SUFFIXES, ImageProblem, list_images, probe_image
from .records import DataError, Dataset, ImageRecord, ProblemLog, inside_root, sanitize_boxes

SPLITS = ("train", "val", "test")
_ENTRY = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
YAML_SCHEMA = {
    "type": "object",
    "required": ["train", "val", "names"],
    "properties": {
        "path": {"type": "string"},
        "train": _ENTRY,
        "val": _ENTRY,
        "test": {"oneOf": [_ENTRY, {"type": "null"}]},
        "nc": {"type": "integer", "minimum": 1},
        "names": {
            "oneOf": [
                {"type": "array", "items": {"type": ["string", "number"]}, "minItems": 1},
                {"type": "object", "additionalProperties": {"type": ["string", "number"]}, "minProperties": 1},
            ]
        },
    },
}


def label_path(image: Path) -> Path:
    """The label file of an image: the last '/images/' of its path replaced by '/labels/', '.txt'."""
    text = os.fspath(image)
    marker = f"{os.sep}images{os.sep}"
    if marker in text:
        head, tail = text.rsplit(marker, 1)
        text = f"{head}{os.sep}labels{os.sep}{tail}"
    return Path(text).with_suffix(".txt")


def parse_names(names: list | dict, file: Path) -> list[str]:
    """Class names from a YAML `names` list or {id: name} dict with ids 0..n-1."""
    if isinstance(names, list):
        return [str(n) for n in names]
    try:
        ids = sorted(int(k) for k in names)
    except ValueError:
        raise DataError(f"{file}: 'names' keys must be integer class ids") from None
    if ids != list(range(len(ids))):
        raise DataError(f"{file}: 'names' ids must be contiguous from 0, got {ids[:10]}")
    by_id = {int(k): str(v) for k, v in names.items()}
    return [by_id[i] for i in ids]


def _list_file_images(list_file: Path, root: Path, log: ProblemLog) -> list[Path]:
    images = []
    for number, raw in enumerate(list_file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        entry = raw.strip()
        if not entry:
            continue
        relative = os.path.relpath(list_file.parent / entry, root) if not os.path.isabs(entry) else entry
        path = inside_root(root, relative)
        if path is None:
            log.add(list_file, f"line {number}: path {entry!r} escapes the dataset root {root}", "path_escape",
                    "rejected")
        else:
            images.append(path)
    return images


def split_images(entries: str | list[str], root: Path, yaml_file: Path, log: ProblemLog) -> list[Path]:
    """Image paths of one split from its YAML entries (folders, list files or image files)."""
    images: list[Path] = []
    for entry in [entries] if isinstance(entries, str) else entries:
        path = inside_root(root, entry)
        if path is None:
            log.add(yaml_file, f"split entry {entry!r} escapes the dataset root {root}", "path_escape", "rejected")
        elif path.is_dir():
            images.extend(list_images(path))
        elif path.suffix.lower() == ".txt" and path.is_file():
            images.extend(_list_file_images(path, root, log))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            raise DataError(f"{yaml_file}: split entry {entry!r} not found under {root}")
    return images


def _parse_line(fields: list[str]) -> tuple[int, np.ndarray]:
    """One label line -> (class, normalised xyxy); polygons (YOLO segments) become their box."""
    if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
        raise ValueError(f"expected 5 values 'class cx cy w h' (or a polygon), got {len(fields)}")
    values = [float(v) for v in fields]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("non-finite value")
    if values[0] != int(values[0]):
        raise ValueError(f"class id {fields[0]!r} is not an integer")
    if len(values) == 5:
        cx, cy, w, h = values[1:]
        return int(values[0]), np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    xy = np.array(values[1:]).reshape(-1, 2)
    return int(values[0]), np.concatenate([xy.min(0), xy.max(0)])


def read_labels(file: Path, width: int, height: int, nc: int, log: ProblemLog) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (absolute xyxy) and classes of one YOLO label file; bad lines become problems."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        log.add(file, f"label file unreadable: {err}", "malformed_label", "image kept without objects")
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    boxes, classes, where, seen = [], [], [], set()
    for number, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields:
            continue
        try:
            cls, box = _parse_line(fields)
        except ValueError as err:
            log.add(file, f"line {number}: {err}", "malformed_label", "dropped line")
            continue
        key = (cls, *np.round(box, 6))
        if key in seen:
            log.add(file, f"line {number}: duplicate of an earlier line", "duplicate_label", "dropped line")
            continue
        seen.add(key)
        boxes.append(box * [width, height, width, height])
        classes.append(cls)
        where.append(f"line {number}")
    return sanitize_boxes(np.array(boxes).reshape(-1, 4), np.array(classes), width, height, nc, file, log, where)


def read_yolo(yaml_file: str | Path, *, strict: bool = False) -> Dataset:
    """Read a YOLO data YAML into a Dataset (splits train/val and, when given, test).

    A relative `path` is taken relative to the YAML's folder; without `path` the folder itself
    is the root. An image without a label file has no objects.
    """
    yaml_file = Path(yaml_file)
    try:
        config = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
        jsonschema.validate(config, YAML_SCHEMA)
    except OSError as err:
        raise DataError(f"{yaml_file}: cannot read ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise DataError(f"{yaml_file}: not valid YAML ({first_line(err)})") from None
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "top level"
        raise DataError(f"{yaml_file}: invalid data YAML at {where}: {err.message}") from None
    names = parse_names(config["names"], yaml_file)
    if "nc" in config and config["nc"] != len(names):
        raise DataError(f"{yaml_file}: nc is {config['nc']} but {len(names)} names are given")
    root = Path(os.path.normpath(yaml_file.parent.absolute() / config.get("path", ".")))
    log = ProblemLog(strict)
    splits: dict[str, list[ImageRecord]] = {}
    owner: dict[Path, str] = {}
    for split in SPLITS:
        if not config.get(split):
            continue
        records = []
        for image in tqdm(split_images(config[split], root, yaml_file, log), desc=f"reading {split}", disable=None,
                          leave=False):
            if owner.get(image) == split:
                log.add(image, f"listed twice in split '{split}'", "duplicate_image", "skipped duplicate")
                continue
            if image in owner:
                log.add(image, f"listed in split '{owner[image]}' and '{split}'", "duplicate_image",
                        "kept in both splits")
            owner[image] = split
            try:
                width, height = probe_image(image)
            except ImageProblem as err:
                log.add(image, err.reason, err.kind, "skipped image")
                continue
            labels = label_path(image)
            boxes, classes = (read_labels(labels, width, height, len(names), log) if labels.is_file()
                              else (np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
            records.append(ImageRecord(image, width, height, boxes, classes))
        splits[split] = records
    name = yaml_file.stem if yaml_file.stem not in ("data", "dataset") else root.name
    return Dataset(name=name, root=root, names=names, splits=splits, problems=log.problems)
