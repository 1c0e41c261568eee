"""Exit-level cache on a trained model: AP equals the reference evaluator on what the dynamic model
outputs, exit levels agree with the model's, and the cache is reused only when nothing changed."""
from __future__ import annotations

import re

import numpy as np
import pytest
from reference import coco_reference

from dh_tune.data import DetectionDataset, collate, load_dataset
from dh_tune.evaluate.exit_cache import cache_key, cached_exit_table
from dh_tune.model import VAL_NMS, postprocess
from dh_tune.model.checkpoint import file_sha256, load_model


@pytest.mark.parametrize("t1, t2", [(0.0, 0.0), (0.5, 0.5), (0.3, 0.7), (1.0, 1.0)])
def test_cache_equals_dynamic_model_and_reference_evaluator(trained_tiny, tiny_dataset, exit_tables, t1, t2) -> None:
    model, _ = load_model(trained_tiny)
    val = load_dataset(tiny_dataset).splits["val"]
    table = exit_tables[128]
    ds = DetectionDataset(val, 128, augment=False)
    gts, dets, levels = [], [], []
    for i in range(len(ds)):
        images, targets, _ = collate([ds[i]])
        out = model.forward_dynamic(images.float() / 255, (t1, t2))
        d = postprocess(out.maps, model.anchors_px, model.strides, VAL_NMS)[0]
        xywh = targets[:, 2:6].numpy().astype(np.float64)
        gts.append((np.c_[xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], targets[:, 1].long().numpy()))
        dets.append((d.boxes, d.scores, d.classes))
        levels.append(int(out.exit_level[0]))
    assert table.exit_levels(t1, t2).tolist() == levels
    ref50, ref5095, _ = coco_reference(gts, dets, model.nc)
    got = table.evaluate(t1, t2)
    assert got.ap50 == pytest.approx(ref50, abs=1e-3)
    assert got.ap50_95 == pytest.approx(ref5095, abs=1e-3)


def test_tiny_model_overfits_a_handful_of_images(exit_tables) -> None:
    """Training works end to end: 8 images learnt by heart (AP50 >= 0.9 with every head)."""
    assert exit_tables[128].evaluate(0.0, 0.0).ap50 >= 0.9


def test_cache_is_reused_only_when_its_key_matches(trained_tiny, tiny_dataset, tmp_path) -> None:
    model, _ = load_model(trained_tiny)
    val = load_dataset(tiny_dataset).splits["val"]
    sha = file_sha256(trained_tiny)
    first = cached_exit_table(model, sha, val, 96, eps=4.0, cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.glob("*.npz")
    stamp = path.stat().st_mtime_ns
    again = cached_exit_table(model, sha, val, 96, eps=4.0, cache_dir=tmp_path, progress=False)
    assert path.stat().st_mtime_ns == stamp and again.metadata == first.metadata
    other = cached_exit_table(model, sha, val[:-1], 96, eps=4.0, cache_dir=tmp_path, progress=False)
    assert other.num_images == len(val) - 1
    relabel = cached_exit_table(model, sha, val, 96, eps=3.0, cache_dir=tmp_path, progress=False)
    assert relabel.metadata["eps"] == 3.0 and relabel.metadata != first.metadata
    assert cache_key(sha, val, 96, 4.0) == first.metadata


def test_evaluate_command_prints_metrics_and_draws_plots(trained_tiny, tmp_path, capsys, monkeypatch) -> None:
    from dh_tune.evaluate.__main__ import main

    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    table = tmp_path / "dev.json"
    from dh_tune.latency.__main__ import main as profile_main

    assert profile_main(["--checkpoint", str(trained_tiny), "--imgsz", "128", "--repeats", "5", "--warmup", "1",
                         "--out", str(table)]) == 0
    assert main(["--checkpoint", str(trained_tiny), "--thresholds", "0.4", "0.6", "--device-table", str(table),
                 "--plots", str(tmp_path / "plots"), "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "gate 1: accuracy" in out and "predicted latency" in out
    assert "[95% intervals: 200 bootstrap resamples" in out and "p90" in out
    ap_line = next(line for line in out.splitlines() if line.strip().startswith("AP50 "))
    low, high = (float(v) for v in re.findall(r"AP50 [\d.]+ \[([\d.]+), ([\d.]+)\]", ap_line)[0])
    assert 0 <= low <= high <= 1
    assert (tmp_path / "plots" / "figure5_gates.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "figure7_thresholds.png").stat().st_size > 1000
    assert main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
