"""Gates-only training on a frozen detector (train.freeze: detector): the detector stays bit for bit as it
starts, the gates learn, kept features equal recomputed ones, resume equals an uninterrupted run."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pydantic import ValidationError
from train_hooks import InjectedFailure

from dh_tune.model import DHNet
from dh_tune.model.checkpoint import load_checkpoint, model_args, save_checkpoint
from dh_tune.pipeline import Pipeline, PipelineError, load_pipeline
from dh_tune.train.run import TrainOptions, run_training

SOURCE = {"format": "yolov5", "file": "best.pt", "sha256": "0" * 64, "weights": "ema"}
METRIC_KEYS = {"ap50", "ap50_95", "gate1_acc", "gate2_acc", "fitness", "epoch_time_s", "train_time_s", "images_per_s",
               "box", "obj", "cls", "gate", "loss", "lr"}


@pytest.fixture(scope="module")
def separable(tmp_path_factory) -> str:
    """8 images at 128 px, val a copy of train: a large square (needs heads 2 and 3) or a small one (head 1 only)."""
    root = tmp_path_factory.mktemp("separable")
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            (root / kind / split).mkdir(parents=True)
        for i in range(8):
            big = i % 2 == 0
            side, cx = 64 if big else 10, 60 + i
            img = np.full((128, 128, 3), 90, np.uint8)
            img[64 - side // 2: 64 + side // 2, cx - side // 2: cx + side // 2] = (40, 40, 220)
            assert cv2.imwrite(str(root / "images" / split / f"{i}.png"), img)
            (root / "labels" / split / f"{i}.txt").write_text(f"{int(big)} {cx / 128} 0.5 {side / 128} {side / 128}\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: small, 1: big}\n")
    return str(root / "data.yaml")


@pytest.fixture(scope="module")
def detector(separable, tmp_path_factory) -> Path:
    """An untrained tiny DH-Net whose BatchNorm statistics were averaged over the images (features of unit scale,
    non-trivial buffers), saved as EMA weights beside different raw ones, with an imported detector's `source`."""
    from dh_tune.train.validate import cumulative_bn

    torch.manual_seed(0)
    raw = DHNet((0.33, 0.125), nc=2)
    calibrated = DHNet((0.33, 0.125), nc=2)
    calibrated.load_state_dict(raw.state_dict())
    images = sorted((Path(separable).parent / "images" / "train").glob("*.png"))
    x = torch.stack([torch.from_numpy(cv2.imread(str(p))[:, :, ::-1].copy()).permute(2, 0, 1) for p in images])
    with torch.no_grad(), cumulative_bn(calibrated):
        calibrated(x.float() / 255)
    return save_checkpoint(tmp_path_factory.mktemp("detector") / "detector.pt", {
        "model": raw.state_dict(), "ema": calibrated.state_dict(), "model_args": model_args(raw),
        "names": ["small", "big"], "epoch": -1, "config": {}, "source": SOURCE})


@pytest.fixture
def frozen(tiny_pipeline_doc) -> Callable[..., Pipeline]:
    def build(data: str, **train) -> Pipeline:
        settings = {"freeze": "detector", "epochs": 3, "batch_size": 4, "warmup_epochs": 0, "precise_bn_batches": 2,
                    "threads": 1, **train}
        return Pipeline.model_validate(tiny_pipeline_doc(data, imgsz=128, width=0.125, **settings))

    return build


@pytest.fixture(scope="module")
def trained(separable, detector, tiny_pipeline_doc, tmp_path_factory) -> Path:
    """Gates trained for 12 epochs on the frozen detector (EMA and PreciseBN on): the run folder."""
    doc = tiny_pipeline_doc(separable, imgsz=128, width=0.125, freeze="detector", epochs=12, batch_size=4,
                            warmup_epochs=0, precise_bn_batches=2, threads=1)
    run = tmp_path_factory.mktemp("gates") / "run"
    run_training(Pipeline.model_validate(doc),
                 TrainOptions(run_dir=run, use_ray=False, track=False, init_checkpoint=str(detector)))
    return run


def _split(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    detector = {k: v for k, v in state.items() if not k.startswith("gates.")}
    return detector, {k: v for k, v in state.items() if k.startswith("gates.")}


def test_freeze_detector_leaves_every_detector_tensor_as_it_was(trained: Path, detector: Path) -> None:
    init_detector, init_gates = _split(load_checkpoint(detector)["ema"])  # a run starts from the EMA weights
    assert any(k.endswith("running_var") for k in init_detector) and any(
        k.endswith("num_batches_tracked") for k in init_detector)
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(trained / "weights" / name)
        assert ckpt["source"] == SOURCE
        for which in ("model", "ema"):
            det, gates = _split(ckpt[which])
            assert det.keys() == init_detector.keys()
            changed = [k for k in det if not torch.equal(det[k], init_detector[k])]
            assert changed == [], f"{name} {which}: {changed[:3]}"
            assert any(not torch.equal(gates[k], init_gates[k]) for k in gates if k.endswith(".weight"))
    ckpt = load_checkpoint(trained / "weights" / "last.pt")
    gate_params = sum(1 for k in init_gates if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert len(ckpt["optimizer"]["state"]) == gate_params  # the optimizer holds the gates alone
    assert METRIC_KEYS <= ckpt["metrics"].keys()


def test_gate_accuracy_improves_and_picks_best(trained: Path) -> None:
    history = load_checkpoint(trained / "weights" / "last.pt")["history"]
    first, last = history[0], history[-1]
    assert last["gate1_acc"] >= 0.875 and last["gate2_acc"] >= 0.875
    assert last["fitness"] > first["fitness"] == pytest.approx((first["gate1_acc"] + first["gate2_acc"]) / 2)
    assert {h["ap50_95"] for h in history} == {first["ap50_95"]}  # the detector's AP, computed once
    assert all(h["box"] == h["obj"] == h["cls"] == 0.0 for h in history)
    best = load_checkpoint(trained / "weights" / "best.pt")
    assert best["metrics"]["fitness"] == max(h["fitness"] for h in history)


def test_kept_features_equal_recomputed_ones(separable: str, detector: Path) -> None:
    from dh_tune.data import DetectionDataset, load_dataset
    from dh_tune.model.checkpoint import build_model
    from dh_tune.train.gates_only import FeatureSpec, GateFeatures, epoch_order

    model = build_model(load_checkpoint(detector))
    ds = DetectionDataset(load_dataset(separable).splits["train"], 128, augment=False)
    spec = FeatureSpec(torch.device("cpu"), False, 4.0, model.anchors_px.detach())
    kept, computed = (GateFeatures(ds, [5, 1, 2, 7, 0, 3, 6], 3, spec, keep) for keep in (True, False))
    for epoch in (0, 1):
        order = epoch_order(7, 3, seed=0, epoch=epoch)
        pairs = list(zip(kept.batches(model, order), computed.batches(model, order)))
        assert len(pairs) == 3 and [len(a[0]) for a, _ in pairs] == [3, 3, 1]
        for a, b in pairs:
            torch.testing.assert_close(a[0], b[0], rtol=1e-4, atol=1e-4)  # batch composition: float rounding
            torch.testing.assert_close(a[1], b[1], rtol=1e-4, atol=1e-4)
            assert torch.equal(a[2], b[2])
    assert kept.cache is not None and computed.cache is None


def test_features_kept_or_recomputed_train_the_same_gates(separable: str, detector: Path, frozen,
                                                          monkeypatch, tmp_path: Path) -> None:
    calls = {"stage1": 0, "stage3": 0}
    for stage in calls:
        original = getattr(DHNet, stage)

        def counted(self, x, *rest, _stage=stage, _original=original):
            calls[_stage] += x.shape[0]
            return _original(self, x, *rest)

        monkeypatch.setattr(DHNet, stage, counted)
    runs = {}
    for mib in (2048, 0):
        calls.update(stage1=0, stage3=0)
        out = run_training(frozen(separable, gate_cache_mib=mib),
                           TrainOptions(run_dir=tmp_path / str(mib), use_ray=False, track=False,
                                        init_checkpoint=str(detector)))
        runs[mib] = (load_checkpoint(out.last), dict(calls))
    (kept, kept_calls), (recomputed, recomputed_calls) = runs[2048], runs[0]
    # Kept: the detector runs once per image (8 training, 8 val for the gates, 8 for the AP); never stage 3 but for AP.
    assert kept_calls == {"stage1": 24, "stage3": 8}
    assert recomputed_calls["stage1"] > kept_calls["stage1"] and recomputed_calls["stage3"] == 8
    for k, v in kept["model"].items():
        torch.testing.assert_close(v, recomputed["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    for a, b in zip(kept["history"], recomputed["history"]):
        assert (a["gate1_acc"], a["gate2_acc"]) == (b["gate1_acc"], b["gate2_acc"])


def test_resumed_gates_only_run_equals_an_uninterrupted_one(separable: str, detector: Path, frozen, epoch_hooks,
                                                             tmp_path: Path) -> None:
    p = frozen(separable)
    straight = run_training(p, TrainOptions(run_dir=tmp_path / "straight", use_ray=False, track=False,
                                            init_checkpoint=str(detector)))
    epoch_hooks("crash_once_after_first_epoch")
    with pytest.raises(InjectedFailure):
        run_training(p, TrainOptions(run_dir=tmp_path / "stopped", use_ray=False, track=False,
                                     init_checkpoint=str(detector)))
    epoch_hooks()
    resumed = run_training(p, TrainOptions(resume=tmp_path / "stopped", use_ray=False, track=False,
                                           init_checkpoint=str(detector)))
    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    assert b["epoch"] == 2 and len(b["history"]) == 3 and b["source"] == SOURCE
    for which in ("model", "ema"):
        for k in a[which]:
            torch.testing.assert_close(a[which][k], b[which][k], rtol=0, atol=1e-6, msg=f"{which} {k}")
    keys = ("gate", "gate1_acc", "gate2_acc", "ap50_95", "fitness", "lr")
    assert [h[k] for h in a["history"] for k in keys] == pytest.approx([h[k] for h in b["history"] for k in keys])


def test_freeze_takes_none_or_detector(tmp_path: Path) -> None:
    assert Pipeline().train.freeze == "none"
    with pytest.raises(ValidationError):
        Pipeline.model_validate({"train": {"freeze": "backbone"}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  freeze: all\n")
    with pytest.raises(PipelineError, match=r"train.freeze: Input should be 'none' or 'detector'"):
        load_pipeline(bad)


def test_rank_shards_cover_every_image_in_equal_shares() -> None:
    from dh_tune.train.gates_only import epoch_order, rank_shard

    shards = [rank_shard(10, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4] and set().union(*shards) == set(range(10))
    assert rank_shard(1, 1, 2) == [0]
    order = epoch_order(10, 4, seed=3, epoch=2)
    assert [len(b) for b in order] == [4, 4, 2] and sorted(torch.cat(order).tolist()) == list(range(10))
    assert all(torch.equal(x, y) for x, y in zip(order, epoch_order(10, 4, seed=3, epoch=2)))
    assert not torch.equal(torch.cat(order), torch.cat(epoch_order(10, 4, seed=3, epoch=3)))


@pytest.mark.slow
def test_two_ray_workers_train_the_same_gates_on_a_frozen_detector(separable: str, detector: Path, frozen, epoch_hooks,
                                                                   tmp_path: Path) -> None:
    epoch_hooks("write_rank_checksum")
    p = frozen(separable, epochs=1).with_overrides(ray={"workers": 2, "cpus_per_worker": 1})
    outcome = run_training(p, TrainOptions(run_dir=tmp_path / "ddp", track=False, init_checkpoint=str(detector)))
    ranks = [json.loads((tmp_path / "ddp" / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    ckpt = load_checkpoint(outcome.last)
    init_detector, init_gates = _split(load_checkpoint(detector)["ema"])
    det, gates = _split(ckpt["model"])
    assert all(torch.equal(det[k], init_detector[k]) for k in det)
    assert any(not torch.equal(gates[k], init_gates[k]) for k in gates)
