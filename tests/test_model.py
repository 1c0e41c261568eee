"""DH-Net model: YOLOv5 parameter counts, the paper's Table 2, gates and early exit."""
from __future__ import annotations

import pytest
import torch

from dh_tune.model import DHNet, WeightsError
from dh_tune.model.summary import summarize
from dh_tune.paper import TABLE2 as PAPER_TABLE2

TINY = (0.33, 0.125)


def calibrated(model: DHNet) -> DHNet:
    """Set BatchNorm statistics from one batch, so that features (and gate scores) differ per image."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.rand(8, 3, 64, 64) * torch.rand(8, 1, 1, 1))
    for m in norms:
        m.momentum = 0.03
    return model.eval()


@pytest.fixture(scope="module")
def tiny() -> DHNet:
    torch.manual_seed(0)
    return calibrated(DHNet(TINY, nc=3))


@pytest.mark.parametrize("scale, params", [("n", 1_808_566), ("s", 7_108_630), ("m", 21_000_630)])
def test_yolov5_parameter_counts_match_reference(scale: str, params: int) -> None:
    assert sum(p.numel() for p in DHNet(scale, nc=33, gates=False).parameters()) == params


def test_yolov5s_coco_parameters_and_macs() -> None:
    model = DHNet("s", nc=80, gates=False)
    assert sum(p.numel() for p in model.parameters()) == 7_235_389
    assert summarize(model, 640)["static"]["gmacs"] * 2 == pytest.approx(16.43, abs=0.01)


# Paper Table 2 (one head: stages 2+3 and gate 2; two heads: stage 3). The two-head savings are checked
# against the exact counts of YOLOv5's own layers at nc=33, 1024 px (the paper rounds them to 0.01M / 0.01G).
TWO_HEAD_EXACT = {"n": (0.473e6, 0.483), "s": (1.832e6, 1.872), "m": (5.550e6, 5.676)}


@pytest.mark.parametrize("scale", ["n", "s", "m"])
def test_summary_reproduces_table2(scale: str) -> None:
    doc = summarize(DHNet(scale, nc=33), 1024)
    two, one = doc["exit"]["2"], doc["exit"]["1"]
    assert two["params_saved"] == pytest.approx(TWO_HEAD_EXACT[scale][0], rel=0.005)
    assert two["gmacs_saved"] == pytest.approx(TWO_HEAD_EXACT[scale][1], rel=0.005)
    one_ref, two_ref = PAPER_TABLE2[scale]["one"], PAPER_TABLE2[scale]["two"]
    assert one["params_saved"] == pytest.approx(one_ref[0], rel=0.03)
    assert one["gmacs_saved"] == pytest.approx(one_ref[2], rel=0.03)
    assert one["params_saved_pct"] == pytest.approx(one_ref[1], abs=0.5)
    assert two["params_saved_pct"] == pytest.approx(two_ref[1], abs=0.5)
    assert two["gmacs_saved_pct"] == pytest.approx(two_ref[3], abs=0.5)
    assert doc["exit"]["3"]["params_saved"] == 0
    # exit[k] counts the stages that ran and the gates that ran.
    parts = doc["parts"]
    assert doc["exit"]["1"]["params"] == parts["stage1"]["params"] + parts["gate1"]["params"]


def test_model_summary_cli_json(capsys) -> None:
    from dh_tune.model.__main__ import main

    assert main(["--scale", "s", "--nc", "33", "--imgsz", "1024", "--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["static"]["params"] == 7_108_630
    assert set(doc["exit"]) == {"1", "2", "3"}
    saved = doc["exit"]["3"]["params"] - doc["exit"]["2"]["params"]
    assert saved == pytest.approx(1.832e6, rel=0.005)


def test_training_forward_returns_three_maps_and_two_gate_logits(tiny: DHNet) -> None:
    x = torch.rand(2, 3, 64, 96)
    maps, logits = tiny(x)
    assert [tuple(m.shape) for m in maps] == [(2, 24, 8, 12), (2, 24, 4, 6), (2, 24, 2, 3)]
    assert logits.shape == (2, 2)


def test_zero_thresholds_equal_static_output_bit_for_bit(tiny: DHNet) -> None:
    x = torch.rand(3, 3, 64, 64)
    out = tiny.forward_dynamic(x, (0.0, 0.0))
    static = tiny.forward_static(x)
    assert out.exit_level.tolist() == [3, 3, 3]
    for a, b in zip(out.maps, static):
        assert torch.equal(a, b)


def test_thresholds_above_one_run_stage1_only(tiny: DHNet, monkeypatch) -> None:
    calls = {"stage2": 0, "stage3": 0}
    for name in calls:
        original = getattr(tiny, name)

        def counted(*args, _name=name, _orig=original):
            calls[_name] += 1
            return _orig(*args)

        monkeypatch.setattr(tiny, name, counted)
    out = tiny.forward_dynamic(torch.rand(4, 3, 64, 64), (1.01, 1.01))
    assert calls == {"stage2": 0, "stage3": 0}
    assert out.exit_level.tolist() == [1, 1, 1, 1]
    assert len(out.maps) == 1 and torch.isnan(out.gate_scores[:, 1]).all()


def test_mixed_batch_matches_images_run_one_by_one(tiny: DHNet) -> None:
    torch.manual_seed(1)
    x = torch.rand(6, 3, 64, 64) * torch.linspace(0.1, 1.0, 6).view(6, 1, 1, 1)
    with torch.no_grad():
        probe = torch.sigmoid(tiny.eval()(x)[1])  # every gate's score (thresholds 0 compute none)
    t1 = float(probe[:, 0].sort().values[1]) + 1e-7  # two images stop after head 1
    t2 = float(probe[:, 1].sort().values[3]) - 1e-7
    out = tiny.forward_dynamic(x, (t1, t2))
    assert set(out.exit_level.tolist()) == {1, 2, 3}
    for b in range(6):
        single = tiny.forward_dynamic(x[b : b + 1], (t1, t2))
        assert int(single.exit_level[0]) == int(out.exit_level[b])
        batch_maps = out.image_maps(b)
        assert len(batch_maps) == int(out.exit_level[b])
        for a, s in zip(batch_maps, single.maps):
            torch.testing.assert_close(a, s, rtol=1e-4, atol=2e-4)  # batch size changes conv kernels
        torch.testing.assert_close(out.gate_scores[b], single.gate_scores[0], equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_early_exit_runs_in_half_precision_with_fp32_scores(tiny: DHNet, dtype: torch.dtype) -> None:
    """YOLOv5's --half deployment: the gates score in fp32 and decide as the fp32 model does."""
    import copy

    torch.manual_seed(2)
    x = torch.rand(6, 3, 64, 64) * torch.linspace(0.1, 1.0, 6).view(6, 1, 1, 1)
    full = tiny.forward_dynamic(x, (0.5, 0.5))
    half = copy.deepcopy(tiny).to(dtype).forward_dynamic(x.to(dtype), (0.5, 0.5))
    assert half.gate_scores.dtype == torch.float32 and half.maps[0].dtype == dtype
    assert torch.isfinite(half.gate_scores[:, 0]).all()
    torch.testing.assert_close(half.gate_scores[:, 0], full.gate_scores[:, 0], atol=2e-2, rtol=0)
    clear = (full.gate_scores[:, 0] - 0.5).abs() > 2e-2
    assert torch.equal((half.exit_level > 1)[clear], (full.exit_level > 1)[clear])


def test_static_model_has_no_gates() -> None:
    model = DHNet(TINY, nc=2, gates=False).eval()
    assert not any(k.startswith("gates") for k in model.state_dict())
    with pytest.raises(RuntimeError):
        model(torch.rand(1, 3, 64, 64))


def test_state_dict_keys_follow_yolov5_naming(tiny: DHNet) -> None:
    keys = set(tiny.state_dict())
    for key in ("model.0.conv.weight", "model.0.bn.running_mean", "model.2.m.0.cv1.conv.weight",
                "model.9.cv2.conv.weight", "model.24.m.2.bias", "model.24.anchors"):
        assert key in keys
    torch.testing.assert_close(tiny.state_dict()["model.24.anchors"][0, 0], torch.tensor([10 / 8, 13 / 8]))


def test_yolov5_state_dict_round_trip_reproduces_outputs(tiny: DHNet, tmp_path) -> None:
    yolo_sd = {k: v for k, v in tiny.state_dict().items() if k.startswith("model.")}
    path = tmp_path / "yolov5.pt"
    torch.save(yolo_sd, path)
    torch.manual_seed(123)
    fresh = DHNet(TINY, nc=3).eval()
    report = fresh.load_yolov5(path)
    assert len(report.loaded) == len(yolo_sd) and not report.skipped
    assert report.missing and all(k.startswith("gates.") for k in report.missing)
    x = torch.rand(2, 3, 64, 64)
    for a, b in zip(fresh.forward_static(x), tiny.forward_static(x)):
        assert torch.equal(a, b)


def test_loader_skips_mismatched_head_and_refuses_pickled_models(tiny: DHNet, tmp_path) -> None:
    other = DHNet(TINY, nc=5)
    report = other.load_yolov5(tiny.state_dict())
    skipped = dict(report.skipped)
    assert set(skipped) == {f"model.24.m.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    assert "shape" in skipped["model.24.m.0.weight"]
    path = tmp_path / "pickled.pt"
    torch.save({"model": tiny}, path)  # a whole module object, as YOLOv5's own .pt files hold
    with pytest.raises(WeightsError, match="weights_only"):
        other.load_yolov5(path)


def _count_gate_calls(model: DHNet) -> list[int]:
    calls = [0, 0]
    for i, gate in enumerate(model.gates):
        gate.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


@pytest.mark.parametrize("thresholds, called, levels", [
    ((0.0, 0.0), [0, 0], {3}),        # all heads: no gate decides anything
    ((1.0, 0.3), [0, 0], {1}),        # head 1 only, whatever gate 2 would say
    ((0.0, 1.0), [0, 0], {2}),        # P3 + P4, static
    ((-0.5, 0.5), [0, 1], None),      # gate 1 always continues, gate 2 decides
    ((0.5, 2.0), [1, 0], None),       # gate 1 decides, gate 2 always stops
])
def test_degenerate_gates_are_not_computed(tiny: DHNet, thresholds, called, levels) -> None:
    calls = _count_gate_calls(tiny.eval())
    out = tiny.forward_dynamic(torch.rand(3, 3, 64, 64), thresholds)
    assert calls == called
    if levels is not None:
        assert set(out.exit_level.tolist()) == levels
        assert torch.isnan(out.gate_scores).all()


@pytest.mark.parametrize("size", [64, 96])
def test_fused_model_equals_training_model(size: int) -> None:
    torch.manual_seed(0)
    model = DHNet((0.33, 0.125), nc=3)
    for m in model.modules():  # BatchNorm statistics far from the identity, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.2, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    model.eval()
    fused = model.fused()
    assert fused.is_fused and not model.is_fused
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        maps, logits = model(x)
        fmaps, flogits = fused(x)
    for a, b in zip(maps, fmaps):
        assert (a - b).abs().max() <= 1e-4
    assert (logits - flogits).abs().max() <= 1e-4
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules()) == 0
