"""The gate loss and the detector: how much of the trunk's gradient the gates may send (paper Eq. 15 with
a stopped or scaled gradient), and that gates on detached features leave the detector a plain YOLOv5."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dh_tune.data.synth import generate
from dh_tune.loss import DHLoss
from dh_tune.model import DHNet
from dh_tune.model.checkpoint import load_checkpoint
from dh_tune.pipeline import LossConfig, Pipeline
from dh_tune.train.gradients import gate_gradient_share
from dh_tune.train.run import TrainOptions, run_training

SCALE = (0.33, 0.125)


def _batch():
    torch.manual_seed(0)
    images = torch.rand(4, 3, 64, 64)
    targets = torch.tensor([[0, 1, 20, 20, 10, 12], [1, 0, 30, 30, 40, 40], [2, 2, 32, 32, 60, 50],
                            [3, 1, 10, 50, 8, 8]], dtype=torch.float32)
    labels = torch.tensor([[1, 0], [1, 1], [1, 1], [0, 0]], dtype=torch.float32)
    return images, targets, labels


@pytest.mark.parametrize("gate_lambda", [0.2, 5.0])
def test_gate_share_of_the_trunk_gradient_is_bounded_by_the_trunk_grad_setting(gate_lambda: float) -> None:
    """The bound: share(g) = g * share(end to end). With the default g = 0 the gate term sends nothing into the
    detector, whatever lambda is, so the detector's gradient is exactly a plain YOLOv5's."""
    model = DHNet(SCALE, nc=3)
    crit = DHLoss(3, model.anchors_px.detach(), model.strides, 64, LossConfig(gate_lambda=gate_lambda))
    images, targets, labels = _batch()
    end_to_end = gate_gradient_share(model, crit, images, targets, labels, 1.0)
    assert end_to_end > 0.0
    assert gate_gradient_share(model, crit, images, targets, labels, 0.0) == 0.0
    for g in (0.05, 0.5):
        assert gate_gradient_share(model, crit, images, targets, labels, g) == pytest.approx(g * end_to_end, rel=1e-4)


def test_detached_gates_still_learn() -> None:
    model = DHNet(SCALE, nc=3)
    images, targets, labels = _batch()
    maps, logits = model(images, gate_trunk_grad=0.0)
    crit = DHLoss(3, model.anchors_px.detach(), model.strides, 64, LossConfig(gate_lambda=0.2))
    loss, _ = crit(maps, logits, targets, labels)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.gates[0].parameters() if p.ndim > 1)


@pytest.fixture(scope="module")
def signs(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("parity")
    generate(root / "signs", train=16, val=8, imgsz=96, seed=4, workers=1)
    return str(root / "signs" / "data.yaml")


def _train(data: str, run: Path, **loss) -> dict[str, torch.Tensor]:
    p = Pipeline.model_validate({
        "name": "parity", "data": {"dataset": data, "imgsz": 96, "cache_images": True}, "model": {"scale": list(SCALE)},
        "train": {"epochs": 2, "batch_size": 8, "warmup_epochs": 0.5, "threads": 1, "loss": loss},
        "ray": {"workers": 1, "cpus_per_worker": 1}})
    outcome = run_training(p, TrainOptions(run_dir=run, use_ray=False, track=False))
    return load_checkpoint(outcome.last)["model"]


def test_gates_on_detached_features_leave_the_detector_exactly_as_yolov5_without_gates(signs, tmp_path) -> None:
    plain = _train(signs, tmp_path / "plain", gate_lambda=0.0)
    detached = _train(signs, tmp_path / "detached", gate_lambda=0.5, gate_trunk_grad=0.0)
    end_to_end = _train(signs, tmp_path / "e2e", gate_lambda=0.5, gate_trunk_grad=1.0)
    detector = [k for k in plain if not k.startswith("gates.")]
    for k in detector:
        torch.testing.assert_close(detached[k], plain[k], rtol=0, atol=1e-6, msg=k)
    assert any(not torch.equal(detached[k], plain[k]) for k in plain if k.startswith("gates."))  # gates trained
    # End to end, the same lambda changes the detector itself: that is what costs accuracy.
    assert max(float((end_to_end[k].float() - plain[k].float()).abs().max()) for k in detector) > 1e-4
