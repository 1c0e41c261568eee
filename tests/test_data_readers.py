"""YOLO, COCO and TT100K readers on tiny datasets, format detection and the default dataset."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dh_tune.data import DataError, default_dataset, detect_format, load_dataset


def test_yolo_folders_dict_names_and_image_without_labels(data_yolo_root):
    ds = load_dataset(data_yolo_root / "data.yaml")
    assert ds.names == ["circle", "square"] and ds.problems == []
    assert sorted(ds.splits) == ["train", "val"]
    train = {r.path.name: r for r in ds.splits["train"]}
    assert (train["0.jpg"].width, train["0.jpg"].height) == (64, 48)
    np.testing.assert_allclose(train["0.jpg"].boxes, [[24, 12, 40, 36], [12, 9, 20, 15]])
    assert train["0.jpg"].classes.tolist() == [0, 1]
    assert train["2.jpg"].boxes.shape == (0, 4) and train["2.jpg"].classes.dtype == np.int64


def test_yolo_list_files_lists_polygons_and_test_split(tmp_path, data_make_image):
    root = tmp_path / "d"
    for name in ("a", "b", "c"):
        data_make_image(root / "images" / f"{name}.png", 100, 50)
    labels = root / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text("2 0.1 0.2 0.3 0.2 0.3 0.6 0.1 0.6\n")  # polygon -> its box
    (root / "train.txt").write_text("./images/a.png\nimages/b.png\n\n")
    (tmp_path / "cfg.yaml").write_text(
        "path: d\ntrain: train.txt\nval: [images/b.png]\ntest: images/c.png\nnames: [x, y, z]\n")
    ds = load_dataset(tmp_path / "cfg.yaml")
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    a = ds.splits["train"][0]
    np.testing.assert_allclose(a.boxes, [[10, 10, 30, 30]], atol=1e-4)
    assert a.classes.tolist() == [2]
    # b is in train and val: kept in both, reported.
    assert [p.kind for p in ds.problems] == ["duplicate_image"]


def _coco(root: Path, data_make_image, split: str = "val2017") -> Path:
    for i in (1, 2, 3):
        data_make_image(root / split / f"{i}.jpg", 80, 60)
    ann = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 80, "height": 60} for i in (1, 2, 3)],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 30], "area": 600, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 1},
            {"id": 12, "image_id": 2, "category_id": 3, "bbox": [40, 20, 10, 10], "area": 100, "iscrowd": 0},
        ],
        "categories": [{"id": 7, "name": "car"}, {"id": 3, "name": "bike"}],
    }
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ann))
    return path


def test_coco_contiguous_ids_crowd_ignored_and_folder_convention(tmp_path, data_make_image):
    json_file = _coco(tmp_path / "coco", data_make_image)
    for spec in (json_file, tmp_path / "coco"):
        ds = load_dataset(spec)
        assert list(ds.splits) == ["val"] and ds.problems == []
        assert ds.names == ["bike", "car"] and ds.source_ids == {0: 3, 1: 7}
        by_name = {r.path.name: r for r in ds.splits["val"]}
        np.testing.assert_allclose(by_name["1.jpg"].boxes, [[10, 10, 30, 40]])  # crowd box left out
        assert by_name["1.jpg"].classes.tolist() == [1]
        assert by_name["2.jpg"].classes.tolist() == [0]
        assert len(by_name["3.jpg"].boxes) == 0


def _tt100k(root: Path, data_make_image) -> Path:
    imgs = {}
    objects = {  # id -> categories; 'pl40' in 3 images, 'w55' in 1 image with 3 instances
        "1": ["pl40", "w55", "w55", "w55"], "2": ["pl40"], "3": ["pl40"], "4": [], "5": ["pl40"],
    }
    for key, cats in objects.items():
        folder = "test" if key == "5" else "train"
        data_make_image(root / folder / f"{key}.jpg", 128, 128)
        objs = [{"category": c, "bbox": {"xmin": 10.0 + 20 * j, "ymin": 10.0, "xmax": 25.0 + 20 * j, "ymax": 30.0},
                 "polygon": [[10, 10], [20, 10], [20, 20]], "ellipse": [[15, 20], [10, 10], 0]}
                for j, c in enumerate(cats)]
        imgs[key] = {"id": int(key), "path": f"{folder}/{key}.jpg", "objects": objs}
    imgs["6"] = {"id": 6, "path": "../outside/6.jpg", "objects": []}
    (root / "train" / "ids.txt").write_text("1\n2\n3\n4\n6\n")
    (root / "test" / "ids.txt").write_text("5\n")
    path = root / "annotations.json"
    path.write_text(json.dumps({"types": ["pl40", "w55", "i5"], "imgs": imgs}))
    return path


def test_tt100k_splits_optional_fields_escape_and_class_filter(tmp_path, data_make_image):
    _tt100k(tmp_path / "tt", data_make_image)
    ds = load_dataset(tmp_path / "tt", min_images=2)
    assert ds.names == ["pl40"]  # w55 is seen in one image only
    assert [len(ds.splits["train"]), len(ds.splits["val"])] == [4, 1]
    assert [p.kind for p in ds.problems] == ["path_escape"]
    assert "../outside/6.jpg" in ds.problems[0].reason
    first = next(r for r in ds.splits["train"] if r.path.name == "1.jpg")
    np.testing.assert_allclose(first.boxes, [[10, 10, 25, 30]])
    empty = next(r for r in ds.splits["train"] if r.path.name == "4.jpg")
    assert len(empty.boxes) == 0
    # By instance count w55 (3 objects) passes a threshold of 3, pl40 (4 objects) too.
    assert load_dataset(tmp_path / "tt", min_instances=3).names == ["pl40", "w55"]
    assert load_dataset(tmp_path / "tt", min_instances=4).names == ["pl40"]
    assert load_dataset(tmp_path / "tt", min_images=1).names == ["pl40", "w55"]
    dropped = load_dataset(tmp_path / "tt", min_images=2, drop_empty=True)
    assert sorted(r.path.name for r in dropped.splits["train"]) == ["1.jpg", "2.jpg", "3.jpg"]
    # 'other' is read on request and does not count towards the class filter.
    data_make_image(tmp_path / "tt" / "other" / "7.jpg", 128, 128)
    (tmp_path / "tt" / "other" / "ids.txt").write_text("7\n")
    annotations = json.loads((tmp_path / "tt" / "annotations.json").read_text())
    annotations["imgs"]["7"] = {"path": "other/7.jpg", "objects": [
        {"category": "w55", "bbox": {"xmin": 1, "ymin": 1, "xmax": 9, "ymax": 9}}]}
    (tmp_path / "tt" / "annotations.json").write_text(json.dumps(annotations))
    with_other = load_dataset(tmp_path / "tt", min_images=2, include_other=True)
    assert list(with_other.splits) == ["train", "val", "other"] and with_other.names == ["pl40"]
    assert len(with_other.splits["other"]) == 1 and len(with_other.splits["other"][0].boxes) == 0
    assert "other" not in load_dataset(tmp_path / "tt", min_images=2).splits


def test_tt100k_without_ids_files_uses_path_prefix(tmp_path, data_make_image):
    json_file = _tt100k(tmp_path / "tt", data_make_image)
    for folder in ("train", "test"):
        (tmp_path / "tt" / folder / "ids.txt").unlink()
    ds = load_dataset(json_file, min_images=1)
    assert [len(ds.splits["train"]), len(ds.splits["val"])] == [4, 1]


def test_detect_format_conventions(tmp_path, data_yolo_root, data_make_image):
    coco_json = _coco(tmp_path / "coco", data_make_image)
    tt_json = _tt100k(tmp_path / "tt", data_make_image)
    assert detect_format(data_yolo_root) == detect_format(data_yolo_root / "data.yaml") == "yolo"
    assert detect_format(coco_json) == detect_format(tmp_path / "coco") == "coco"
    assert detect_format(tt_json) == detect_format(tmp_path / "tt") == "tt100k"
    with pytest.raises(DataError, match="cannot tell"):
        detect_format(tmp_path / "coco" / "val2017")
    with pytest.raises(DataError, match="do not apply"):
        load_dataset(data_yolo_root, min_images=3)


def test_default_dataset_is_generated_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    path = default_dataset(imgsz=128, train=6, val=3, seed=1)
    assert path.is_file() and path.is_relative_to(tmp_path / "home" / "datasets")
    stamp = path.stat().st_mtime_ns
    again = load_dataset(None, imgsz=128, train=6, val=3, seed=1)
    assert path.stat().st_mtime_ns == stamp
    assert [len(again.splits["train"]), len(again.splits["val"])] == [6, 3]
    assert again.nc == 11 and again.problems == []
