"""Applying a profile: `dh_tune.detect` and the Predictor API, and refusal of a foreign checkpoint."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from dh_tune.data import load_dataset
from dh_tune.detect import main as detect_main
from dh_tune.model.checkpoint import file_sha256
from dh_tune.predict import Predictor
from dh_tune.search.records import FrontPoint
from dh_tune.threshold_profiles import ProfileError, make_profile, save_profile

TORCH = {"name": "torch", "version": "2.13.0"}


def _profile_for(checkpoint: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(checkpoint, folder / "model.pt")
    cand = {"imgsz": 128, "t1": 0.5, "t2": 0.5, "ap50": 0.9, "ap50_95": 0.7, "latency_ms": 5.0, "latency_p90_ms": 6.0,
            "exit_shares": (0.3, 0.3, 0.4), "gate_accuracy": (1.0, 1.0), "gate_recall": (1.0, 1.0), "mean_gmacs": 0.05}
    doc = make_profile(device_name="Test CPU", table_digest="e" * 64, runtime=TORCH,
                       budget_ms=10, feasible=True, candidate=FrontPoint.from_dict(cand),
                       metric="ap50", hyperparameters={}, checkpoint_rel="model.pt",
                       checkpoint_sha256=file_sha256(checkpoint), model={"scale": [0.33, 0.25], "nc": 11})
    return save_profile(doc, folder / "budget-10ms.json")


def test_profile_predictor_matches_the_dynamic_model(trained_tiny, tiny_dataset, tmp_path) -> None:
    profile = _profile_for(trained_tiny, tmp_path / "profiles")
    predictor = Predictor.from_profile(profile)
    assert predictor.thresholds == (0.5, 0.5) and predictor.imgsz == 128
    import cv2

    record = load_dataset(tiny_dataset).splits["val"][0]
    img = cv2.imread(str(record.path))
    pred = predictor(img)
    x = torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    assert pred.exit_level == int(predictor.model.forward_dynamic(x, (0.5, 0.5)).exit_level[0])
    assert len(pred.detections) > 0 and pred.detections.scores.min() >= 0.25


def test_foreign_checkpoint_is_refused(trained_tiny, tiny_dataset, tmp_path, capsys) -> None:
    profile = _profile_for(trained_tiny, tmp_path / "profiles")
    other = tmp_path / "other.pt"
    ckpt = torch.load(trained_tiny, map_location="cpu", weights_only=True)
    ckpt["epoch"] = ckpt["epoch"] + 1  # any change of content is another checkpoint
    torch.save(ckpt, other)
    with pytest.raises(ProfileError, match="made for checkpoint"):
        Predictor.from_profile(profile, other)
    image = Path(tiny_dataset).parent / "images" / "val"
    assert detect_main([str(image), "--profile", str(profile), "--checkpoint", str(other),
                        "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {profile}: made for checkpoint")


def test_detect_command_writes_images_and_json(trained_tiny, tiny_dataset, tmp_path, capsys) -> None:
    profile = _profile_for(trained_tiny, tmp_path / "profiles")
    images = Path(tiny_dataset).parent / "images" / "val"
    assert detect_main([str(images), "--profile", str(profile), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert len(results) == 8 and all(r["exit_level"] in (1, 2, 3) for r in results)
    assert sum(len(r["detections"]) for r in results) > 0
    assert len(list((tmp_path / "out").glob("*.jpg"))) == 8
    assert "exit after head" in capsys.readouterr().out
