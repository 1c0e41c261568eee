"""Reader for COCO instance annotations (one JSON per split) and their image folder.

Category ids are mapped to contiguous class ids (the map is kept for export), crowd boxes are
left out of training, and every bad entry is reported with its file and reason.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .images import probe_or_report
from .jsoncheck import EntryCheck, is_integer, is_number, load_annotation_json
from .records import DataError, Dataset, ImageRecord, ProblemLog, inside_root, sanitize_boxes

_NUMBER = {"type": "number"}
TOP_SCHEMA = {
    "type": "object",
    "required": ["images", "annotations", "categories"],
    "properties": {"images": {"type": "array"}, "annotations": {"type": "array"},
                   "categories": {"type": "array", "minItems": 1}},
}
CATEGORY_SCHEMA = {"type": "object", "required": ["id", "name"],
                   "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}
IMAGE_SCHEMA = {"type": "object", "required": ["id", "file_name"],
                "properties": {"id": {"type": ["integer", "string"]}, "file_name": {"type": "string", "minLength": 1},
                               "width": {"type": "integer"}, "height": {"type": "integer"}}}
ANNOTATION_SCHEMA = {"type": "object", "required": ["image_id", "category_id", "bbox"],
                     "properties": {"image_id": {"type": ["integer", "string"]}, "category_id": {"type": "integer"},
                                    "bbox": {"type": "array", "items": _NUMBER, "minItems": 4, "maxItems": 4},
                                    "iscrowd": {"enum": [0, 1, True, False]}}}


def _is_id(value: object) -> bool:
    return isinstance(value, str) or is_integer(value)


def _quick_annotation(ann: object) -> bool:
    return (isinstance(ann, dict) and _is_id(ann.get("image_id")) and is_integer(ann.get("category_id"))
            and isinstance(ann.get("bbox"), list) and len(ann["bbox"]) == 4
            and all(is_number(v) for v in ann["bbox"]) and ann.get("iscrowd", 0) in (0, 1))


def _quick_image(item: object) -> bool:
    return (isinstance(item, dict) and _is_id(item.get("id")) and isinstance(item.get("file_name"), str)
            and item["file_name"] != "" and all(is_integer(item[k]) for k in ("width", "height") if k in item))


TOP = EntryCheck(TOP_SCHEMA)
CATEGORY = EntryCheck(CATEGORY_SCHEMA)
IMAGE = EntryCheck(IMAGE_SCHEMA, _quick_image)
ANNOTATION = EntryCheck(ANNOTATION_SCHEMA, _quick_annotation)


def split_name(json_file: Path) -> str:
    """Split name of an annotation file: instances_train2017.json -> 'train', ..._val -> 'val'."""
    raw = json_file.stem.removeprefix("instances_")
    for split in ("train", "val", "test"):
        if raw.startswith(split):
            return split
    return raw


def annotation_files(spec: Path) -> list[Path]:
    """The COCO JSON files of a spec: the file itself, or a folder's annotations/instances_*.json.

    A folder may also hold the JSON files directly (instances_*.json next to the images).
    """
    if spec.is_file():
        return [spec]
    for folder in (spec / "annotations", spec):
        files = sorted(folder.glob("instances_*.json"))
        if files:
            return files
    raise DataError(f"{spec}: no COCO annotations found (expected annotations/instances_<split>.json)")


def _image_folder(root: Path, json_file: Path, images: list[dict], explicit: Path | None) -> Path:
    """Folder that `file_name` is relative to: given, or the first candidate holding the images."""
    if explicit is not None:
        return Path(explicit).absolute()
    raw = json_file.stem.removeprefix("instances_")
    candidates = [root / raw, root / "images" / raw, root / "images", json_file.parent, root]
    names = [i["file_name"] for i in images[:20] if isinstance(i, dict) and isinstance(i.get("file_name"), str)]
    for folder in candidates:
        if any((folder / n).is_file() for n in names):
            return folder
    if not names:
        return root
    tried = ", ".join(os.fspath(c) for c in candidates[:3])
    raise DataError(f"{json_file}: cannot find the images (tried {tried}); pass the image folder explicitly")


def _categories(data: dict, file: Path) -> dict[int, str]:
    categories: dict[int, str] = {}
    for item in data["categories"]:
        message = CATEGORY.error(item)
        if message:
            raise DataError(f"{file}: bad category entry: {message}")
        if categories.get(item["id"], item["name"]) != item["name"]:
            raise DataError(f"{file}: category id {item['id']} has two names")
        categories[item["id"]] = item["name"]
    return categories


def _read_split(data: dict, json_file: Path, root: Path, folder: Path, class_of: dict[int, int], nc: int,
                log: ProblemLog) -> list[ImageRecord]:
    """Records of one split; `root` is the folder that no file_name may escape."""
    by_image: dict[object, list[dict]] = defaultdict(list)
    for number, ann in enumerate(data["annotations"]):
        message = ANNOTATION.error(ann)
        if message:
            log.add(json_file, f"annotation #{number}: {message}", "malformed_label", "dropped annotation")
        elif not ann.get("iscrowd"):
            by_image[ann["image_id"]].append(ann)
    known_ids = {i.get("id") for i in data["images"] if isinstance(i, dict)}
    for image_id in sorted(set(by_image) - known_ids, key=str):
        log.add(json_file, f"annotations refer to unknown image id {image_id!r}", "malformed_label",
                "dropped annotations")
    records, seen_ids, seen_paths = [], set(), set()
    for number, item in enumerate(tqdm(data["images"], desc=f"reading {json_file.name}", disable=None, leave=False)):
        message = IMAGE.error(item)
        if message:
            log.add(json_file, f"image #{number}: {message}", "malformed_label", "skipped image")
            continue
        path = inside_root(root, os.path.relpath(folder / item["file_name"], root))
        if path is None:
            log.add(json_file, f"image id {item['id']}: file_name {item['file_name']!r} escapes the dataset root "
                    f"{root}", "path_escape", "rejected")
            continue
        if item["id"] in seen_ids or path in seen_paths:
            log.add(path, f"image id {item['id']} listed twice in {json_file.name}", "duplicate_image",
                    "skipped duplicate")
            continue
        seen_ids.add(item["id"])
        seen_paths.add(path)
        size = probe_or_report(path, log)
        if size is None:
            continue
        width, height = size
        if (item.get("width"), item.get("height")) not in ((width, height), (None, None)):
            log.add(path, f"annotation says {item.get('width')}x{item.get('height')} but the file is {width}x{height}",
                    "size_mismatch", "used the file's size")
        boxes, classes, where = [], [], []
        for ann in by_image.get(item["id"], []):
            label = f"annotation {ann.get('id', '?')} in {json_file.name}"
            if ann["category_id"] not in class_of:
                log.add(path, f"{label}: category id {ann['category_id']} is not in categories",
                        "class_out_of_range", "dropped box")
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes.append([x, y, x + w, y + h])
            classes.append(class_of[ann["category_id"]])
            where.append(label)
        kept_boxes, kept_classes = sanitize_boxes(np.array(boxes).reshape(-1, 4), np.array(classes), width, height,
                                                  nc, path, log, where)
        records.append(ImageRecord(path, width, height, kept_boxes, kept_classes))
    return records


def read_coco(spec: str | Path, *, strict: bool = False, images: str | Path | None = None) -> Dataset:
    """Read COCO instances JSON(s) into a Dataset with contiguous class ids.

    `spec` is one JSON (one split, named from the file: instances_val2017.json -> 'val') or a
    folder with annotations/instances_<split>.json. Images are looked up in `images` if given,
    else in ROOT/<split>, ROOT/images/<split>, ROOT/images, the JSON's folder, ROOT, where ROOT is
    the parent of an 'annotations' folder (else the JSON's folder). iscrowd boxes are skipped.
    """
    spec = Path(spec).absolute()
    files = annotation_files(spec)
    root = files[0].parent.parent if files[0].parent.name == "annotations" else files[0].parent
    loaded = [(file, load_annotation_json(file, TOP, "COCO instances")) for file in files]
    categories: dict[int, str] = {}
    for file, data in loaded:
        for cid, name in _categories(data, file).items():
            if categories.setdefault(cid, name) != name:
                raise DataError(f"{file}: category id {cid} is {name!r} here but {categories[cid]!r} elsewhere")
    source_ids = dict(enumerate(sorted(categories)))
    class_of = {cid: index for index, cid in source_ids.items()}
    log = ProblemLog(strict)
    splits: dict[str, list[ImageRecord]] = {}
    for file, data in loaded:
        name = split_name(file)
        if name in splits:
            name = file.stem.removeprefix("instances_")
        folder = _image_folder(root, file, data["images"], Path(images) if images is not None else None)
        fence = folder if images is not None else root
        splits[name] = _read_split(data, file, fence, folder, class_of, len(class_of), log)
    remapped = any(index != cid for index, cid in source_ids.items())
    return Dataset(name=root.name, root=root, names=[categories[c] for c in source_ids.values()], splits=splits,
                   problems=log.problems, source_ids=source_ids if remapped else None)
