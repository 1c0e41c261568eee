"""Every kind of bad input is reported with its file and reason; strict mode fails on it."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dh_tune.data import DataError, DetectionDataset, load_dataset, read_problems, write_problems
from dh_tune.data.__main__ import main
from dh_tune.pipeline import AugmentConfig

LABELS = {
    "good.jpg": "0 0.5 0.5 0.2 0.2\n",
    "bad_lines.jpg": "0 0.5 0.5\nx 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n",
    "bad_boxes.jpg": "5 0.5 0.5 0.1 0.1\n1 0.5 0.5 0 0.1\n0 1.5 1.5 0.1 0.1\n0 0.95 0.5 0.2 0.2\n",
}


@pytest.fixture
def data_bad_yolo(tmp_path: Path, data_make_image) -> Path:
    """A YOLO dataset with one example of each problem kind a user can hit."""
    root = tmp_path / "bad"
    images = root / "images"
    for name, text in LABELS.items():
        data_make_image(images / name, 100, 100)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / name.replace(".jpg", ".txt")).write_text(text)
    jpeg = data_make_image(images / "cut.jpg", 100, 100).read_bytes()
    (images / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    png = data_make_image(images / "cut.png", 100, 100).read_bytes()
    (images / "cut.png").write_bytes(png[: len(png) - 20])
    (images / "noise.jpg").write_bytes(b"not an image at all" * 10)
    (root / "train.txt").write_text("\n".join(
        ["images/good.jpg", "images/good.jpg", "images/bad_lines.jpg", "images/bad_boxes.jpg", "images/cut.jpg",
         "images/cut.png", "images/noise.jpg", "images/missing.jpg", "../../../etc/passwd.jpg"]) + "\n")
    (root / "data.yaml").write_text("train: train.txt\nval: images/good.jpg\nnames: [a, b]\n")
    return root


def test_every_yolo_problem_is_reported_with_file_and_reason(data_bad_yolo):
    ds = load_dataset(data_bad_yolo / "data.yaml")
    kinds = Counter(p.kind for p in ds.problems)
    assert kinds == {"duplicate_image": 2, "malformed_label": 2, "duplicate_label": 1, "class_out_of_range": 1,
                     "degenerate_box": 1, "box_outside": 1, "box_clipped": 1, "unreadable_image": 3,
                     "missing_image": 1, "path_escape": 1}
    by_kind = {p.kind: p for p in ds.problems}
    assert by_kind["missing_image"].file.endswith("missing.jpg")
    assert by_kind["path_escape"].file.endswith("train.txt") and "passwd" in by_kind["path_escape"].reason
    assert "line 5" not in by_kind["class_out_of_range"].reason and "line 1" in by_kind["class_out_of_range"].reason
    assert by_kind["box_clipped"].action == "clipped box" and by_kind["box_outside"].action == "dropped box"
    reasons = {Path(p.file).name: p.reason for p in ds.problems if p.kind == "unreadable_image"}
    assert "truncated" in reasons["cut.jpg"] and "truncated" in reasons["cut.png"]
    assert "noise.jpg" in reasons
    train = {r.path.name: r for r in ds.splits["train"]}
    assert sorted(train) == ["bad_boxes.jpg", "bad_lines.jpg", "good.jpg"]
    assert len(train["bad_lines.jpg"].boxes) == 1
    # Only the partly-outside box survives, clipped to the right edge.
    np.testing.assert_allclose(train["bad_boxes.jpg"].boxes, [[85, 40, 100, 60]], atol=1e-4)


def test_strict_raises_one_line_error_naming_the_file(data_bad_yolo):
    with pytest.raises(DataError) as info:
        load_dataset(data_bad_yolo / "data.yaml", strict=True)
    message = str(info.value)
    # The list file is read first, so its escaping line is the first problem met.
    assert "\n" not in message and "train.txt" in message and "escapes the dataset root" in message


def test_problem_list_round_trips(tmp_path, data_bad_yolo):
    problems = load_dataset(data_bad_yolo / "data.yaml").problems
    for name in ("p.tsv", "p.json"):
        assert read_problems(write_problems(problems, tmp_path / name)) == problems


def test_check_command_reports_and_strict_exits_2(tmp_path, data_bad_yolo, capsys):
    report = tmp_path / "out" / "problems.json"
    argv = ["check", "--data", str(data_bad_yolo), "--report", str(report)]
    assert main(argv) == 1
    assert "14 data problem(s)" in capsys.readouterr().out
    assert len(json.loads(report.read_text())) == 14
    assert main(argv + ["--strict"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.txt: line 9" in err
    assert main(["check", "--data", str(data_bad_yolo / "nothing.yaml")]) == 2
    assert "nothing.yaml: not found" in capsys.readouterr().err


def test_check_writes_its_report_next_to_the_dataset_not_into_the_current_folder(tmp_path, data_bad_yolo, capsys,
                                                                                  monkeypatch):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["check", "--data", str(data_bad_yolo)]) == 1
    report = data_bad_yolo / "data_problems.tsv"
    assert f"full list: {report}" in capsys.readouterr().out
    assert read_problems(report) == load_dataset(data_bad_yolo / "data.yaml").problems
    assert list(cwd.iterdir()) == []


def test_check_prints_every_problem_when_the_dataset_folder_is_read_only(tmp_path, data_bad_yolo, capsys,
                                                                         monkeypatch):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
        False if Path(path).resolve() == data_bad_yolo.resolve() and mode == os.W_OK else real_access(path, mode, **kw)))
    assert main(["check", "--data", str(data_bad_yolo)]) == 1
    out = capsys.readouterr().out
    problems = load_dataset(data_bad_yolo / "data.yaml").problems
    assert len(problems) == 14 and all(p.line() in out for p in problems)
    assert "--report FILE" in out and "full list" not in out
    assert list(cwd.iterdir()) == [] and not (data_bad_yolo / "data_problems.tsv").exists()


def test_coco_problems(tmp_path, data_make_image):
    root = tmp_path / "coco"
    for i in (1, 2):
        data_make_image(root / "images" / f"{i}.jpg", 50, 40)
    ann = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 50, "height": 40},
                   {"id": 1, "file_name": "2.jpg", "width": 50, "height": 40},
                   {"id": 2, "file_name": "2.jpg", "width": 99, "height": 40},
                   {"id": 3, "file_name": "../../escape.jpg", "width": 50, "height": 40},
                   {"id": 4}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 10]},
                        {"id": 2, "image_id": 1, "category_id": 9, "bbox": [0, 0, 5, 10]},
                        {"id": 3, "image_id": 77, "category_id": 1, "bbox": [0, 0, 5, 10]},
                        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5]},
                        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [40, 30, 20, 20]},
                        {"id": 6, "image_id": 1, "category_id": 1, "bbox": [0, 0, "5", 10]}],
        "categories": [{"id": 1, "name": "sign"}],
    }
    (root / "instances_train.json").write_text(json.dumps(ann))
    ds = load_dataset(root / "instances_train.json")
    kinds = Counter(p.kind for p in ds.problems)
    assert kinds == {"duplicate_image": 1, "size_mismatch": 1, "path_escape": 1, "malformed_label": 4,
                     "degenerate_box": 1, "class_out_of_range": 1, "box_clipped": 1}
    (image_1,) = [r for r in ds.splits["train"] if r.path.name == "1.jpg"]
    np.testing.assert_allclose(image_1.boxes, [[40, 30, 50, 40]])
    with pytest.raises(DataError, match="not a COCO instances file"):
        (root / "broken.json").write_text(json.dumps({"images": []}))
        load_dataset(root / "broken.json", fmt="coco")


def test_tt100k_problems(tmp_path, data_make_image):
    root = tmp_path / "tt"
    data_make_image(root / "train" / "1.jpg", 64, 64)
    objects = [{"category": "pl40", "bbox": {"xmin": 30, "ymin": 30, "xmax": 20, "ymax": 40}},
               {"category": "pl40"},
               {"category": "zz", "bbox": {"xmin": 1, "ymin": 1, "xmax": 9, "ymax": 9}},
               {"category": "pl40", "bbox": {"xmin": 1, "ymin": 1, "xmax": 9, "ymax": 9}}]
    imgs = {"1": {"path": "train/1.jpg", "objects": objects}}
    (root / "annotations_all.json").write_text(json.dumps({"types": ["pl40"], "imgs": imgs}))
    (root / "train" / "ids.txt").write_text("1\n2\n1\n")
    ds = load_dataset(root, min_images=1)
    kinds = Counter(p.kind for p in ds.problems)
    assert kinds == {"degenerate_box": 1, "malformed_label": 1, "class_out_of_range": 1, "unannotated_image": 1,
                     "duplicate_image": 1}
    assert ds.splits["train"][0].classes.tolist() == [0]


def test_unusable_dataset_and_bad_yaml_are_one_line_errors(tmp_path, data_make_image):
    (tmp_path / "x.yaml").write_text("train: [missing.jpg]\nval: [missing.jpg]\nnames: [a]\n")
    with pytest.raises(DataError, match="no usable images"):
        load_dataset(tmp_path / "x.yaml")
    (tmp_path / "y.yaml").write_text("train: a\nnames: [a]\n")
    with pytest.raises(DataError, match="'val' is a required property"):
        load_dataset(tmp_path / "y.yaml")
    (tmp_path / "z.yaml").write_text("train: a\nval: b\nnames: {0: a, 2: b}\n")
    with pytest.raises(DataError, match="contiguous"):
        load_dataset(tmp_path / "z.yaml")


def test_image_broken_after_loading_gives_grey_image_without_targets(data_yolo_root):
    ds = load_dataset(data_yolo_root)
    record = ds.splits["train"][0]
    record.path.write_bytes(b"\xff\xd8 broken")
    for augment in (False, True):
        data = DetectionDataset(ds.splits["train"], 64, augment=augment, hyp=AugmentConfig(scale=0, translate=0))
        image, targets, index = data[0]
        assert index == 0 and targets.shape == (0, 5) and image.shape == (3, 64, 64)
        assert augment or (image == 114).all()
        assert data.failed == {record.path}
        assert len(data[1][1]) == 2  # the other images still load
