"""Letterbox geometry, box mappings, the torch dataset, collate and loader compatibility."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from dh_tune.data import (
    DetectionDataset,
    ImageRecord,
    boxes_from_network,
    boxes_to_network,
    collate,
    gate_targets,
    letterbox,
    letterbox_info,
    load_dataset,
)
from dh_tune.pipeline import AugmentConfig


@pytest.mark.parametrize("shape", [(48, 64), (64, 48), (100, 37), (300, 300), (20, 700)])
def test_letterbox_shape_padding_and_round_trip(shape):
    height, width = shape
    img = np.full((height, width, 3), 200, np.uint8)
    out, info = letterbox(img, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert info == letterbox_info(width, height, 64)
    assert info.scale == pytest.approx(64 / max(width, height))
    # The content sits inside the padding, centred, and the padding is grey 114.
    content = np.argwhere((out != 114).any(axis=2))
    assert content[:, 1].min() == info.pad_x and content[:, 0].min() == info.pad_y
    assert abs(info.pad_x - (64 - (content[:, 1].max() + 1))) <= 1
    boxes = np.array([[0, 0, width, height], [width * 0.3, height * 0.2, width * 0.5, height * 0.9]])
    net = boxes_to_network(boxes, info)
    assert (net[0] >= -0.5).all() and (net[0] <= 64.5).all()
    np.testing.assert_allclose(boxes_from_network(net, info), boxes, atol=1e-9)
    tensor = torch.tensor(boxes, dtype=torch.float32)
    back = boxes_from_network(boxes_to_network(tensor, info), info)
    assert isinstance(back, torch.Tensor) and torch.allclose(back, tensor, atol=1e-3)


def test_letterbox_rejects_sizes_off_the_stride():
    with pytest.raises(ValueError, match="multiple of 32"):
        letterbox(np.zeros((10, 10, 3), np.uint8), 100)
    with pytest.raises(ValueError):
        DetectionDataset([], 100, augment=False)


def test_dataset_targets_are_letterboxed_boxes_in_network_pixels(data_yolo_root):
    ds = load_dataset(data_yolo_root)
    data = DetectionDataset(ds.splits["train"], 96, augment=False)
    for index, record in enumerate(ds.splits["train"]):
        image, targets, got_index = data[index]
        assert got_index == index and image.shape == (3, 96, 96) and image.dtype == torch.uint8
        assert targets.dtype == torch.float32 and targets.shape == (len(record.boxes), 5)
        expected = boxes_to_network(record.boxes, data.info(index))
        centre = (expected[:, :2] + expected[:, 2:]) / 2
        np.testing.assert_allclose(targets[:, 1:3].numpy(), centre, atol=1e-4)
        np.testing.assert_allclose(targets[:, 3:5].numpy(), expected[:, 2:] - expected[:, :2], atol=1e-4)
        np.testing.assert_array_equal(targets[:, 0].numpy(), record.classes)
    # The red square of the test image (BGR (30, 60, 200)) arrives as RGB.
    image = data[0][0]
    info = data.info(0)
    y, x = int(info.pad_y + 12 * info.scale + 2), int(info.pad_x + 16 * info.scale + 2)
    assert image[:, y, x].tolist() == pytest.approx([200, 60, 30], abs=3)


def test_augmented_targets_stay_inside_and_follow_the_pixels(tmp_path, data_make_image):
    path = data_make_image(tmp_path / "a.png", 64, 64, value=0)
    # The test image has a coloured square at [16, 16, 32, 32]: label it and check the pixels move with it.
    record = ImageRecord(path, 64, 64, [[16, 16, 32, 32]], [0])
    torch.manual_seed(0)
    for mosaic in (False, True):
        hyp = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, fliplr=0.5, scale=0.3, translate=0.1, mosaic=mosaic)
        data = DetectionDataset([record] * 4, 64, augment=True, hyp=hyp)
        for _ in range(10):
            image, targets, _ = data[0]
            assert len(targets) >= 1
            cx, cy, w, h = targets[:, 1:].T
            assert ((cx - w / 2 >= 0) & (cy - h / 2 >= 0) & (cx + w / 2 <= 64) & (cy + h / 2 <= 64)).all()
            for box in targets:
                px, py = int(box[1]), int(box[2])
                assert image[0, py, px] > 150  # red channel of the square at the box centre


def test_cache_gives_the_same_images(data_yolo_root):
    records = load_dataset(data_yolo_root).splits["val"]
    plain = DetectionDataset(records, 64, augment=False)
    cached = DetectionDataset(records, 64, augment=False, cache_images=True)
    for i in range(len(records)):
        assert torch.equal(plain[i][0], cached[i][0]) and torch.equal(plain[i][1], cached[i][1])


def test_collate_and_distributed_loader_with_workers(data_yolo_root):
    records = load_dataset(data_yolo_root).splits["train"]
    data = DetectionDataset(records, 64, augment=True)
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=False)
        loader = DataLoader(data, batch_size=2, sampler=sampler, num_workers=2, collate_fn=collate)
        for images, targets, indices in loader:
            assert images.shape[1:] == (3, 64, 64) and images.dtype == torch.uint8
            assert targets.shape[1] == 6 and indices.dtype == torch.long
            assert set(targets[:, 0].long().tolist()) <= set(range(len(images)))
            gates = gate_targets(targets[:, 4:6], targets[:, 0].long(), len(images))
            assert gates.shape == (len(images), 2)
            seen += indices.tolist()
    # Two replicas cover all three images (one index repeated to even out the shards).
    assert sorted(set(seen)) == [0, 1, 2] and len(seen) == 4
    images, targets, indices = collate([data[2], data[0]])
    assert indices.tolist() == [2, 0]
    assert (targets[:, 0] == 1).sum() == 2 and (targets[:, 0] == 0).sum() == 0  # image 2 has no labels
