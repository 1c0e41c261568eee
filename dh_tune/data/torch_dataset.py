"""PyTorch map-style dataset: decoded, letterboxed (optionally augmented) images and targets.

Targets are [cls, cx, cy, w, h] in network-input pixels so the loss and the gate labels
(Eq. 3-7) work on the same numbers; unreadable images never crash an epoch.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..input_size import check_imgsz
from ..pipeline import AugmentConfig
from .augment import augment_hsv, flip, mosaic_canvas, random_affine
from .images import read_image
from .letterbox import (
    PAD_VALUE,
    LetterboxInfo,
    letterbox_info,
    letterbox_scale,
    pad_to_square,
    resize_to_fit,
)
from .records import ImageRecord

logger = logging.getLogger(__name__)


class DetectionDataset(torch.utils.data.Dataset):
    """Records -> (image uint8 (3, imgsz, imgsz) RGB, targets float32 (n, 5), index).

    Square letterbox (pad 114) for training and validation; with `augment`, scale/translate,
    HSV and flips (and 4-image mosaic when `hyp.mosaic`). `cache_images` keeps the resized images in
    RAM (filled up front, shared with forked loader workers). Works with any sampler; an `EpochSampler`'s
    keys (epoch, index) draw each image's augmentation from (seed, epoch, index), so a batch holds the same
    pixels whichever loader worker made it, while a bare index draws from torch's generator.
    """

    def __init__(self, records: Sequence[ImageRecord], imgsz: int, *, augment: bool,
                 hyp: AugmentConfig | None = None, cache_images: bool = False, seed: int = 0) -> None:
        self.records = list(records)
        self.imgsz = check_imgsz(imgsz)
        self.augment = augment
        self.hyp = hyp if hyp is not None else AugmentConfig()
        self.seed = int(seed)
        self.failed: set[Path] = set()
        self._cache: dict[int, np.ndarray] = {}
        if cache_images:
            for index in tqdm(range(len(self.records)), desc="caching images", disable=None, leave=False):
                self._cache[index] = self._fitted_image(index)

    def __len__(self) -> int:
        return len(self.records)

    def info(self, index: int) -> LetterboxInfo:
        """Where record `index` sits in the (unaugmented) network input; maps predictions back."""
        record = self.records[index]
        return letterbox_info(record.width, record.height, self.imgsz)

    def _fitted_image(self, index: int) -> np.ndarray:
        """Decoded image resized to longer side imgsz; grey (and recorded) when unreadable."""
        if index in self._cache:
            return self._cache[index]
        record = self.records[index]
        img = read_image(record.path)
        if img is None:
            if record.path not in self.failed:
                logger.warning("%s: image cannot be decoded; using a grey image without objects", record.path)
            self.failed.add(record.path)
            img = np.full((record.height, record.width, 3), PAD_VALUE, dtype=np.uint8)
        return resize_to_fit(img, self.imgsz)[0]

    def _fitted(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(resized image, boxes xyxy in its pixels, classes); no objects if the image failed."""
        record = self.records[index]
        img = self._fitted_image(index)
        if record.path in self.failed:
            return img, np.zeros((0, 4)), np.zeros(0, np.int64)
        scale = letterbox_scale(record.width, record.height, self.imgsz)
        return img, record.boxes.astype(np.float64) * scale, record.classes

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        picks = [index, *rng.integers(0, len(self.records), 3)]
        parts = [self._fitted(int(i)) for i in picks]
        canvas, boxes = mosaic_canvas([p[0] for p in parts], [p[1] for p in parts], self.imgsz, rng)
        classes = np.concatenate([p[2] for p in parts])
        return random_affine(canvas, boxes, classes, rng, self.imgsz, self.hyp.scale, self.hyp.translate)

    def _letterboxed(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        fitted, boxes, classes = self._fitted(index)
        record = self.records[index]
        img, info = pad_to_square(fitted, self.imgsz, letterbox_scale(record.width, record.height, self.imgsz))
        return img, boxes + [info.pad_x, info.pad_y, info.pad_x, info.pad_y], classes

    def _augmented(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.hyp.mosaic:
            img, boxes, classes = self._mosaic(index, rng)
        else:
            img, boxes, classes = self._letterboxed(index)
            if self.hyp.scale or self.hyp.translate:
                img, boxes, classes = random_affine(img, boxes, classes, rng, self.imgsz, self.hyp.scale,
                                                    self.hyp.translate)
        img = augment_hsv(img, rng, self.hyp.hsv_h, self.hyp.hsv_s, self.hyp.hsv_v)
        if rng.random() < self.hyp.fliplr:
            img, boxes = flip(img, boxes, horizontal=True)
        if rng.random() < self.hyp.flipud:
            img, boxes = flip(img, boxes, horizontal=False)
        return img, boxes, classes

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (None, key)
        if self.augment:
            # A key's own stream, or torch's generator (seeded per loader worker, reproducible under manual_seed).
            entropy = (self.seed, epoch, index) if epoch is not None else int(torch.randint(0, 2**62, (1,)))
            img, boxes, classes = self._augmented(index, np.random.default_rng(entropy))
        else:
            img, boxes, classes = self._letterboxed(index)
        targets = np.zeros((len(boxes), 5), dtype=np.float32)
        if len(boxes):
            targets[:, 0] = classes
            targets[:, 1:3] = (boxes[:, :2] + boxes[:, 2:]) / 2
            targets[:, 3:5] = boxes[:, 2:] - boxes[:, :2]
        image = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)))
        return image, torch.from_numpy(targets), index


class EpochSampler(torch.utils.data.Sampler[tuple[int, int]]):
    """Keys (epoch, index) in the order of a sampler of indices (a DistributedSampler's share of the epoch).

    `set_epoch` moves both on; with the epoch in every key, persistent loader workers need no message.
    """

    def __init__(self, indices: torch.utils.data.DistributedSampler) -> None:
        self.indices = indices
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.indices.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, int(i)) for i in self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def collate(batch: list[tuple[torch.Tensor, torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack a batch: images (B, 3, H, W) uint8, targets (N, 6) [image, cls, cx, cy, w, h], indices (B,).

    Column 0 of the targets is the image's position in the batch (for gate_targets' image_index).
    """
    images = torch.stack([item[0] for item in batch])
    targets = torch.cat([torch.cat([torch.full((len(t), 1), float(i)), t], dim=1) for i, (_, t, _) in enumerate(batch)])
    indices = torch.tensor([item[2] for item in batch], dtype=torch.long)
    return images, targets.reshape(-1, 6), indices
