"""Synthetic sign scenes: same seed same bytes, the planned head mix, valid images and labels."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from dh_tune.data import load_dataset
from dh_tune.data.__main__ import main
from dh_tune.data.gate_labels import deepest_head
from dh_tune.data.records import ImageRecord
from dh_tune.data.stats import head_shares, split_stats
from dh_tune.data.synth import SIZE_MARGIN, generate, make_plans
from dh_tune.data.synth_signs import SIGN_NAMES


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    one = generate(tmp_path / "a", train=32, val=8, imgsz=128, seed=5, workers=1)
    two = generate(tmp_path / "b", train=32, val=8, imgsz=128, seed=5, workers=2)
    generate(tmp_path / "c", train=32, val=8, imgsz=128, seed=6, workers=2)
    assert one.images == {"train": 32, "val": 8}
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    assert one.shares == two.shares


def test_images_decode_and_labels_lie_inside(tmp_path):
    report = generate(tmp_path / "s", train=24, val=6, imgsz=160, seed=2)
    ds = load_dataset(tmp_path / "s" / "data.yaml", strict=True)
    assert ds.names == SIGN_NAMES and 10 <= ds.nc <= 12
    for records in ds.splits.values():
        for record in records:
            img = cv2.imread(str(record.path))
            assert img is not None and img.shape == (160, 160, 3)
            assert ((record.boxes >= 0) & (record.boxes <= 160)).all()
    # The shares reported by the generator are those of the labels written to disk.
    for split, records in ds.splits.items():
        assert head_shares(split_stats(records, ds.nc, 160)) == pytest.approx(report.shares[split])
    with pytest.raises(Exception, match="already holds a dataset"):
        generate(tmp_path / "s", train=2, val=0, imgsz=160)


@pytest.mark.parametrize("imgsz", [256, 320, 416])
def test_head_mix_is_about_a_third_each(tmp_path, imgsz):
    plans = make_plans(tmp_path, {"train": 1200}, imgsz, seed=0)["train"]
    records = [ImageRecord(p.image, imgsz, imgsz, [[s.x, s.y, s.x + s.w, s.y + s.h] for s in p.signs],
                           [s.cls for s in p.signs]) for p in plans]
    shares = head_shares(split_stats(records, len(SIGN_NAMES), imgsz))
    for key in ("head1_only", "up_to_head2", "head3"):
        assert 0.28 <= shares[key] <= 0.39, shares
    assert 0.12 <= shares["no_object"] <= 0.21, shares
    # Every sign keeps a 10 % margin from a head boundary, so the gate labels are not ambiguous.
    wh = np.array([[s.w, s.h] for p in plans for s in p.signs], dtype=np.float64)
    levels = [deepest_head(wh * f).numpy() for f in (1 / SIZE_MARGIN, 1.0, SIZE_MARGIN)]
    assert (levels[0] == levels[1]).all() and (levels[1] == levels[2]).all() and (levels[1] > 0).all()
    classes = np.bincount([s.cls for p in plans for s in p.signs], minlength=len(SIGN_NAMES))
    assert classes.min() > 0.6 * classes.mean()


def test_synth_and_stats_commands(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["synth", "--out", str(out), "--train", "8", "--val", "4", "--imgsz", "128", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "images/s" in printed and "head 3" in printed
    assert (out / "data.yaml").is_file() and (out / "synth.json").is_file()
    assert main(["stats", "--data", str(out), "--imgsz", "128", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["train"]["images"] == 8 and stats["val"]["images"] == 4
    heads = stats["train"]["heads"]
    assert len(heads) == 3 and heads[0] >= heads[1] >= heads[2]
    assert sum(stats["train"]["classes"].values()) == sum(stats["train"]["instances"])
    assert main(["stats", "--data", str(out), "--imgsz", "128"]) == 0
    table = capsys.readouterr().out
    assert "small" in table and "limit_30" in table
