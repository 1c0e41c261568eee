"""check_latency: a profile's promised latency against this device re-timed now, with the drift between them."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from dh_tune.evaluate import latency_check
from dh_tune.latency.measure import device_info
from dh_tune.model.checkpoint import file_sha256
from dh_tune.search.records import FrontPoint
from dh_tune.threshold_profiles import make_profile, save_profile

CANDIDATE = {"imgsz": 64, "t1": 0.5, "t2": 0.5, "ap50": 0.9, "ap50_95": 0.7, "latency_ms": 5.0, "latency_p90_ms": 6.0,
             "exit_shares": (0.3, 0.3, 0.4), "gate_accuracy": (1.0, 1.0), "gate_recall": (1.0, 1.0), "mean_gmacs": 0.05}


@pytest.fixture(scope="module")
def checkpoint(untrained_checkpoint: Path) -> Path:
    """Latency does not depend on training: the untrained tiny DH-Net."""
    return untrained_checkpoint


def profile(checkpoint: Path, folder: Path, mean_ms: float, p90_ms: float, device: str | None = None) -> Path:
    """A profile beside a copy of `checkpoint` promising `mean_ms` / `p90_ms` (on this CPU unless named)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(checkpoint, folder / "model.pt")
    name = device or device_info(torch.device("cpu"), 1)["name"]  # the checks below time with 1 thread
    doc = make_profile(device_name=name, table_digest="e" * 64, runtime={"name": "torch", "version": "2"},
                       budget_ms=10, feasible=True, metric="ap50", hyperparameters={}, checkpoint_rel="model.pt",
                       candidate=FrontPoint.from_dict({**CANDIDATE, "latency_ms": mean_ms, "latency_p90_ms": p90_ms}),
                       checkpoint_sha256=file_sha256(checkpoint), model={"scale": [0.33, 0.25], "nc": 2})
    doc["device"]["table_created_at"] = "2025-01-02T03:04:05+00:00"
    return save_profile(doc, folder / "budget-10ms.json")


def test_a_check_reports_the_drift_of_this_device_from_the_promise(checkpoint, tmp_path, monkeypatch) -> None:
    timed = []

    def keep(*args, **kwargs):
        timed.append(real(*args, **kwargs))
        return timed[-1]

    real = latency_check.latency_table
    monkeypatch.setattr(latency_check, "latency_table", keep)
    first = latency_check.check_latency(profile(checkpoint, tmp_path / "a", 5.0, 6.0), threads=1, repeats=5,
                                        max_seconds=1.0)
    assert len(timed) == 1 and first.same_device and first.runtime == "torch" and first.imgsz == 64
    numbers = (first.now_mean_ms, first.now_p90_ms, first.now_p99_ms, first.drift_mean_pct, first.drift_p90_pct)
    assert all(math.isfinite(v) for v in numbers) and 0 < first.now_mean_ms <= first.now_p90_ms <= first.now_p99_ms
    assert first.drift_mean_pct == pytest.approx(100 * (first.now_mean_ms / 5.0 - 1))
    assert first.drift_p90_pct == pytest.approx(100 * (first.now_p90_ms / 6.0 - 1))
    assert first.exit_shares == (0.3, 0.3, 0.4) and first.repeats >= 5
    assert first.profile_table_created_at == "2025-01-02T03:04:05+00:00" and first.timed_at > "2025"
    doc = first.to_dict()
    assert doc["thresholds"] == [0.5, 0.5] and doc["now_mean_ms"] == first.now_mean_ms

    # The same timing against a profile that promised exactly it, and against one that promised half its mean.
    monkeypatch.setattr(latency_check, "latency_table", lambda *args, **kwargs: timed[0])
    kept = latency_check.check_latency(profile(checkpoint, tmp_path / "b", first.now_mean_ms, first.now_p90_ms))
    assert kept.drift_mean_pct == pytest.approx(0, abs=1e-9) and kept.drift_p90_pct == pytest.approx(0, abs=1e-9)
    halved = latency_check.check_latency(profile(checkpoint, tmp_path / "c", first.now_mean_ms / 2, first.now_p90_ms))
    assert halved.drift_mean_pct == pytest.approx(100.0) and halved.drift_p90_pct == pytest.approx(0, abs=1e-9)
    text = latency_check.format_latency_check(halved)
    assert "+100.0%" in text and "the device it was made for" in text and "2025-01-02T03:04:05" in text


def test_a_profile_for_another_device_is_checked_and_says_so(checkpoint, tmp_path, monkeypatch) -> None:
    path = profile(checkpoint, tmp_path / "jetson", 5.0, 6.0, device="Jetson Orin (6 threads)")
    check = latency_check.check_latency(path, threads=1, repeats=5, max_seconds=1.0)
    assert not check.same_device and check.profile_device == "Jetson Orin (6 threads)"
    assert "NOT the device it was made for (Jetson Orin (6 threads))" in latency_check.format_latency_check(check)


def test_the_timing_frame_is_the_first_readable_of_a_splits_first_images(tmp_path) -> None:
    import cv2
    import numpy as np

    from dh_tune.latency.frame import TIMING_CANDIDATES, timing_frame

    damaged = [tmp_path / f"{i:02d}.jpg" for i in range(TIMING_CANDIDATES + 1)]
    for f in damaged:
        f.write_bytes(b"not an image")
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((8, 12, 3), np.uint8))
    assert timing_frame([*damaged[:3], good])[1] == good
    assert timing_frame([*damaged, good]) is None  # past the candidates: timed on noise
