"""Reader for Tsinghua-Tencent 100K (TT100K): annotations JSON plus per-folder ids.txt splits.

Applies the class filter used in the literature (drop classes seen in fewer than N images, the
paper's 33-class setting, or keep classes with at least N instances, the common 45-class one).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .images import probe_or_report
from .jsoncheck import EntryCheck, is_number, load_annotation_json
from .records import DataError, Dataset, ImageRecord, ProblemLog, inside_root, sanitize_boxes

ANNOTATION_FILES = ("annotations.json", "annotations_all.json")
# TT100K folder -> split name here; the official test split is the evaluation ('val') split.
FOLDER_SPLITS = {"train": "train", "test": "val", "other": "other"}
TOP_SCHEMA = {"type": "object", "required": ["imgs"],
              "properties": {"imgs": {"type": "object"}, "types": {"type": "array", "items": {"type": "string"}}}}
IMAGE_SCHEMA = {"type": "object", "required": ["path"],
                "properties": {"path": {"type": "string", "minLength": 1}, "objects": {"type": "array"}}}
_COORD = {"type": "number"}
OBJECT_SCHEMA = {"type": "object", "required": ["category", "bbox"],
                 "properties": {"category": {"type": "string"},
                                "bbox": {"type": "object", "required": ["xmin", "ymin", "xmax", "ymax"],
                                         "properties": {k: _COORD for k in ("xmin", "ymin", "xmax", "ymax")}}}}


def _quick_object(obj: object) -> bool:
    if not isinstance(obj, dict):
        return False
    box = obj.get("bbox")
    return (isinstance(box, dict) and isinstance(obj.get("category"), str)
            and all(is_number(box.get(k)) for k in ("xmin", "ymin", "xmax", "ymax")))


def _quick_image(item: object) -> bool:
    return (isinstance(item, dict) and isinstance(item.get("path"), str) and item["path"] != ""
            and isinstance(item.get("objects", []), list))


TOP = EntryCheck(TOP_SCHEMA)
IMAGE = EntryCheck(IMAGE_SCHEMA, _quick_image)
OBJECT = EntryCheck(OBJECT_SCHEMA, _quick_object)


def locate(spec: Path) -> tuple[Path, Path]:
    """(root, annotations JSON) of a TT100K spec: the root folder or the JSON file itself.

    In a folder, annotations.json (2016 release) is preferred over annotations_all.json (2021).
    """
    if spec.is_file():
        return spec.parent, spec
    for name in ANNOTATION_FILES:
        if (spec / name).is_file():
            return spec, spec / name
    raise DataError(f"{spec}: no TT100K annotations ({' or '.join(ANNOTATION_FILES)}) found")


def _membership(root: Path, imgs: dict, include_other: bool, log: ProblemLog) -> list[tuple[str, str]]:
    """(split, image id) pairs from each folder's ids.txt, or from the image paths without them."""
    folders = [f for f in FOLDER_SPLITS if include_other or f != "other"]
    if not any((root / f / "ids.txt").is_file() for f in folders):
        prefix = {f"{f}/": FOLDER_SPLITS[f] for f in folders}
        return [(prefix[p], key) for key, item in imgs.items() if isinstance(item, dict)
                for p in prefix if str(item.get("path", "")).startswith(p)]
    pairs, seen = [], set()
    for folder in folders:
        ids_file = root / folder / "ids.txt"
        if not ids_file.is_file():
            continue
        for line in ids_file.read_text(encoding="utf-8").split():
            if line in seen:
                log.add(ids_file, f"image id {line} listed twice", "duplicate_image", "skipped duplicate")
                continue
            seen.add(line)
            pairs.append((FOLDER_SPLITS[folder], line))
    return pairs


def _objects(item: dict, key: str, json_file: Path, types: set[str] | None,
             log: ProblemLog) -> tuple[list[str], list[list[float]]]:
    """Category names and xyxy boxes of one image entry; polygon/ellipse fields are ignored."""
    categories, boxes = [], []
    for number, obj in enumerate(item.get("objects") or []):
        message = OBJECT.error(obj)
        if message:
            log.add(json_file, f"image {key}, object #{number}: {message}", "malformed_label", "dropped box")
        elif types is not None and obj["category"] not in types:
            log.add(json_file, f"image {key}, object #{number}: category {obj['category']!r} is not in 'types'",
                    "class_out_of_range", "dropped box")
        else:
            categories.append(obj["category"])
            boxes.append([float(obj["bbox"][k]) for k in ("xmin", "ymin", "xmax", "ymax")])
    return categories, boxes


def kept_classes(instances: Counter, image_counts: Counter, min_images: int, min_instances: int | None) -> list[str]:
    """Class names kept by the filter, sorted: >= min_instances objects if given, else >= min_images images."""
    if min_instances is not None:
        return sorted(c for c, n in instances.items() if n >= min_instances)
    return sorted(c for c, n in image_counts.items() if n >= min_images)


def read_tt100k(spec: str | Path, *, strict: bool = False, min_images: int = 15, min_instances: int | None = None,
                include_other: bool = False, drop_empty: bool = False) -> Dataset:
    """Read TT100K into splits 'train' and 'val' (the official test split), optionally 'other'.

    Classes seen in fewer than `min_images` images (or with fewer than `min_instances` objects)
    over train and test are removed; `drop_empty` then drops images left without objects.
    """
    root, json_file = locate(Path(spec).absolute())
    data = load_annotation_json(json_file, TOP, "TT100K annotations")
    imgs, types = data["imgs"], set(data["types"]) if "types" in data else None
    log = ProblemLog(strict)
    parsed: list[tuple[str, Path, int, int, list[str], list[list[float]]]] = []
    seen_paths: set[Path] = set()
    for split, key in tqdm(_membership(root, imgs, include_other, log), desc="reading TT100K", disable=None,
                           leave=False):
        item = imgs.get(key)
        message = "no entry in the annotations" if item is None else IMAGE.error(item)
        if message:
            kind = "malformed_label" if item is not None else "unannotated_image"
            log.add(json_file, f"image {key}: {message}", kind, "skipped image")
            continue
        path = inside_root(root, item["path"])
        if path is None:
            log.add(json_file, f"image {key}: path {item['path']!r} escapes the dataset root {root}", "path_escape",
                    "rejected")
            continue
        if path in seen_paths:
            log.add(path, f"image {key}: same file as an earlier image entry", "duplicate_image", "skipped duplicate")
            continue
        seen_paths.add(path)
        size = probe_or_report(path, log)
        if size is None:
            continue
        width, height = size
        parsed.append((split, path, width, height, *_objects(item, key, json_file, types, log)))
    counted = [p for p in parsed if p[0] != "other"]
    instances = Counter(c for p in counted for c in p[4])
    image_counts = Counter(c for p in counted for c in set(p[4]))
    names = kept_classes(instances, image_counts, min_images, min_instances)
    class_of = {name: index for index, name in enumerate(names)}
    present = {p[0] for p in parsed}
    splits: dict[str, list[ImageRecord]] = {s: [] for s in FOLDER_SPLITS.values() if s in present}
    for split, path, width, height, categories, boxes in parsed:
        keep = [i for i, c in enumerate(categories) if c in class_of]
        if drop_empty and not keep:
            continue
        box_array = np.array([boxes[i] for i in keep], dtype=np.float64).reshape(-1, 4)
        classes = np.array([class_of[categories[i]] for i in keep], dtype=np.int64)
        where = [f"object #{i} ({categories[i]})" for i in keep]
        box_array, classes = sanitize_boxes(box_array, classes, width, height, len(names), path, log, where)
        splits[split].append(ImageRecord(path, width, height, box_array, classes))
    if not names:
        raise DataError(f"{json_file}: no class passes the filter (min_images={min_images}, "
                        f"min_instances={min_instances})")
    return Dataset(name="tt100k", root=root, names=names, splits=splits, problems=log.problems)
