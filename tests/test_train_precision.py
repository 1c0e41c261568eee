"""Training precision: bf16 autocast where the CPU has native bf16, fp32 gate scores and loss, the fused step."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from dh_tune.model import DHNet
from dh_tune.pipeline import Pipeline, TrainConfig
from dh_tune.train import precision
from dh_tune.train.precision import autocast_dtype
from dh_tune.train.schedule import make_optimizer


@pytest.mark.parametrize("native, setting, device, amp, expected", [
    (True, "auto", "cpu", True, torch.bfloat16),
    (False, "auto", "cpu", True, None),
    (False, True, "cpu", True, torch.bfloat16),
    (True, False, "cpu", True, None),
    (True, "auto", "cuda", True, torch.float16),
    (True, True, "cuda", False, None),
])
def test_autocast_dtype_follows_the_setting_and_the_cpu(monkeypatch, native, setting, device, amp, expected) -> None:
    """`auto` uses bf16 only on a CPU with native bf16; CUDA keeps fp16 AMP (`train.amp`) and never bf16."""
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    tc = TrainConfig(bf16=setting, amp=amp)
    assert autocast_dtype(tc, torch.device(device)) is expected


def test_bf16_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="bf16"):
        Pipeline.model_validate({"train": {"bf16": "fast"}})


def test_gate_scores_stay_fp32_under_bf16_autocast() -> None:
    """Under bf16 autocast the detector's maps are bf16 but both gate logits are computed in fp32 from the
    (bf16) features: equal to the fp32 gates applied to the same features, to fp32 rounding."""
    torch.manual_seed(0)
    model = DHNet((0.33, 0.125), nc=2).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        s1 = model.stage1(x)
        p4, _ = model.stage2(s1.p3, s1.lateral14)
        maps, logits = model(x)
    assert maps[0].dtype == torch.bfloat16 and s1.p3.dtype == torch.bfloat16
    assert logits.dtype == torch.float32
    with torch.no_grad():
        reference = torch.stack([model.gates[0](s1.p3.float()), model.gates[1](p4.float())], 1)
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-6)


def test_the_loss_is_computed_in_fp32_outside_autocast(tiny_pipeline_doc, tiny_dataset, monkeypatch) -> None:
    """A bf16 training step hands the loss fp32 maps and logits, with autocast off, and the step still trains."""
    from dh_tune.train import full_run
    from dh_tune.train.data_setup import load_splits
    from dh_tune.train.loop import RunContext, init_model

    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    pipeline = Pipeline.model_validate(tiny_pipeline_doc(tiny_dataset, bf16="auto"))
    ctx = RunContext(run_dir=Path("unused"))
    splits = load_splits(pipeline)
    model = init_model(pipeline, ctx, len(splits.names))
    run = full_run.assemble(pipeline, model, full_run.updates(pipeline.train, model, ctx.device),
                            full_run.batches(pipeline, ctx, splits), ctx)
    assert run.updates.autocast is torch.bfloat16
    seen = []
    criterion = run.criterion

    def spy(maps, logits, targets, labels):
        seen.append(([m.dtype for m in maps], logits.dtype, torch.is_autocast_enabled("cpu")))
        return criterion(maps, logits, targets, labels)

    run.criterion = spy
    before = copy.deepcopy(model.state_dict())
    images, targets, _ = next(iter(run.batches.train))
    items = full_run._step(run, images, targets, pipeline.train.loss, "test")
    assert seen == [([torch.float32] * 3, torch.float32, False)]
    assert items["total"].dtype == torch.float32 and torch.isfinite(items["total"])
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_fused_optimizer_step_equals_the_per_tensor_one(name) -> None:
    """Given the same gradients, the fused step makes the per-tensor step's update over several steps (to fp32
    rounding): weight decay on weights only, momentum and Adam's moments included."""
    torch.manual_seed(0)
    plain = DHNet((0.33, 0.125), nc=2).train()
    fused = copy.deepcopy(plain)
    opts = [make_optimizer(m, name, 0.01, 0.9, 5e-4, fused=f) for m, f in ((plain, False), (fused, True))]
    assert opts[1].param_groups[0]["fused"] and not opts[0].param_groups[0].get("fused")
    for step in range(3):
        x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(step))
        maps, logits = plain(x)
        opts[0].zero_grad()
        (sum(m.square().mean() for m in maps) + logits.square().mean()).backward()
        for a, b in zip(plain.parameters(), fused.parameters()):
            b.grad = None if a.grad is None else a.grad.clone()
        for opt in opts:
            opt.step()
    for a, b in zip(plain.parameters(), fused.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("text, expected", [
    ("flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n", True),
    ("flags\t\t: fpu avx2 amx_bf16 amx_tile\n", True),
    ("Features\t: fp asimd bf16 i8mm\n", True),
    ("flags\t\t: fpu avx2 avx512f avx512bw\n", False),
])
def test_native_bf16_reads_the_cpu_flags(monkeypatch, tmp_path, text, expected) -> None:
    """Only a CPU that lists native bf16 arithmetic counts; AVX512 alone would emulate it."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\n" + text)
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    monkeypatch.setattr(precision.platform, "system", lambda: "Linux")
    monkeypatch.setattr(precision, "_onednn_bf16", lambda: True)
    precision.native_bf16.cache_clear()
    try:
        assert precision.native_bf16() is expected
    finally:
        precision.native_bf16.cache_clear()
