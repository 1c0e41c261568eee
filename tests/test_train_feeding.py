"""What the loader settings must not change: the batches a training step sees, and the loss of a step."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from dh_tune.data import DetectionDataset, EpochSampler, collate, load_dataset
from dh_tune.pipeline import AugmentConfig, Pipeline
from dh_tune.train.data_setup import loader_workers

AUGMENT = AugmentConfig(hsv_h=0.015, hsv_s=0.4, hsv_v=0.3, fliplr=0.5, scale=0.3, translate=0.1)


def epochs_of_batches(records, *, workers: int, cache: bool, epochs: int = 2) -> list[list[tuple]]:
    """Every batch of `epochs` epochs as (images, targets, indices) from one loader."""
    data = DetectionDataset(records, 64, augment=True, hyp=AUGMENT, cache_images=cache, seed=3)
    sampler = EpochSampler(DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3))
    loader = DataLoader(data, batch_size=2, sampler=sampler, collate_fn=collate, num_workers=workers,
                        persistent_workers=workers > 0)
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        torch.manual_seed(100 + epoch)  # the loop reseeds per epoch; workers' own seeds then differ per setting
        out.append([tuple(t.clone() for t in batch) for batch in loader])
    return out


def test_loader_workers_and_the_cache_give_the_same_batches(data_yolo_root) -> None:
    records = load_dataset(data_yolo_root).splits["train"]
    plain = epochs_of_batches(records, workers=0, cache=False)
    for workers, cache in ((2, False), (0, True), (2, True)):
        other = epochs_of_batches(records, workers=workers, cache=cache)
        for a, b in zip(plain, other, strict=True):
            for x, y in zip(a, b, strict=True):
                assert all(torch.equal(u, v) for u, v in zip(x, y)), (workers, cache)
    first, second = ({int(i): img for images, _, idx in epoch for i, img in zip(idx, images)} for epoch in plain)
    assert not all(torch.equal(first[i], second[i]) for i in first)  # each epoch draws new augmentations


@pytest.mark.parametrize(("cpus", "threads", "gpu", "workers"), [
    (2, None, False, 0),  # a 2-core worker's threads take both CPUs: batches are made between the steps
    (2, 1, False, 1),
    (8, 6, False, 2),
    (8, None, True, 7),  # one thread feeds the GPU, the other CPUs make batches
])
def test_auto_loader_workers_use_the_cpus_the_compute_threads_leave(cpus, threads, gpu, workers) -> None:
    p = Pipeline.model_validate({"train": {"threads": threads}, "ray": {"cpus_per_worker": cpus, "gpu": gpu}})
    assert loader_workers(p) == workers
    assert loader_workers(p.with_overrides(data={"loader_workers": 3})) == 3
    with pytest.raises(ValueError, match="loader_workers"):
        Pipeline.model_validate({"data": {"loader_workers": -1}})


def test_channels_last_gives_the_same_step() -> None:
    """NHWC changes the convolutions' summation order, not what a training step computes."""
    import copy

    from dh_tune.model import DHNet

    torch.manual_seed(0)
    plain = DHNet((0.33, 0.125), nc=2).train()
    nhwc = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 64, 64)
    outputs = []
    for model, inp in ((plain, x), (nhwc, x.contiguous(memory_format=torch.channels_last))):
        maps, logits = model(inp, gate_trunk_grad=1.0)
        (sum(m.square().mean() for m in maps) + logits.square().mean()).backward()
        outputs.append((maps, logits, [p.grad for p in model.parameters()]))
    (maps_a, logits_a, grads_a), (maps_b, logits_b, grads_b) = outputs
    assert nhwc.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip([*maps_a, logits_a], [*maps_b, logits_b]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)  # fp32 sums in another order, through BN
    for a, b in zip(grads_a, grads_b):  # each parameter's gradient, within 0.5% of its norm
        assert float((a - b).norm()) <= 5e-3 * float(a.norm()) + 1e-7
