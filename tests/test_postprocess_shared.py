"""dh-tune's torch inference and a deployment folder share one pre-processing, decode and NMS.

The torch edge (model.postprocess, data.preprocess) must give what the deployment module gives, and
both must match YOLOv5's decode written in torch, on random maps of a few sizes and class counts.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dh_tune.data.letterbox import letterbox
from dh_tune.data.preprocess import preprocess as torch_preprocess
from dh_tune.export import dhnet_runtime as rt
from dh_tune.model import DEFAULT_ANCHORS_PX, DEPLOY_NMS, STRIDES, VAL_NMS, NMSConfig, decode, postprocess
from dh_tune.model.postprocess import nms_image

ANCHORS = torch.tensor(DEFAULT_ANCHORS_PX, dtype=torch.float32)
STRIDE_LIST = [float(s) for s in STRIDES]


def _torch_decode_level(raw: torch.Tensor, anchors_px: torch.Tensor, stride: float) -> torch.Tensor:
    """YOLOv5's decode in torch: (B, na*(nc+5), h, w) -> (B, na*h*w, nc+5)."""
    b, _, h, w = raw.shape
    na = anchors_px.shape[0]
    p = raw.view(b, na, -1, h, w).permute(0, 1, 3, 4, 2).float().sigmoid()
    gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    grid = torch.stack((gx, gy), -1).view(1, 1, h, w, 2).float()
    xy = (p[..., :2] * 2 - 0.5 + grid) * stride
    wh = (p[..., 2:4] * 2) ** 2 * anchors_px.view(1, na, 1, 1, 2)
    return torch.cat((xy, wh, p[..., 4:]), -1).view(b, -1, p.shape[-1])


def _maps(imgsz: int, nc: int, batch: int, heads: int, seed: int) -> list[torch.Tensor]:
    """Random raw head outputs, objectness mostly low as a trained detector's, some cells confident."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3 * (nc + 5), imgsz // s, imgsz // s, generator=g) * 2.5 - 2
            for s in STRIDES[:heads]]


CASES = [(64, 1, 1), (96, 4, 2), (160, 7, 3)]


@pytest.mark.parametrize("imgsz,nc,heads", CASES)
def test_decode_equals_yolov5_torch_formula(imgsz: int, nc: int, heads: int) -> None:
    maps = _maps(imgsz, nc, 2, heads, seed=imgsz)
    ref = torch.cat([_torch_decode_level(m, ANCHORS[i], STRIDE_LIST[i]) for i, m in enumerate(maps)], 1)
    shared = rt.decode_batch([m.numpy() for m in maps], ANCHORS.numpy(), STRIDE_LIST)
    assert shared.dtype == np.float32 and shared.shape == tuple(ref.shape)
    np.testing.assert_allclose(shared, ref.numpy(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(decode(maps, ANCHORS, STRIDE_LIST), torch.from_numpy(shared), rtol=0, atol=0)
    for i in range(2):  # the deployment decodes one image at a time
        one = rt.decode([m[i:i + 1].numpy() for m in maps], ANCHORS.numpy(), STRIDE_LIST)
        np.testing.assert_array_equal(one, shared[i])


@pytest.mark.parametrize("cfg", [VAL_NMS, DEPLOY_NMS, NMSConfig(conf=0.01, iou=0.5, max_det=20, max_candidates=50)])
@pytest.mark.parametrize("imgsz,nc,heads", CASES)
def test_torch_postprocess_equals_deployment_nms(imgsz: int, nc: int, heads: int, cfg: NMSConfig) -> None:
    maps = _maps(imgsz, nc, 2, heads, seed=imgsz + nc)
    dets = postprocess(maps, ANCHORS, STRIDES[:heads], cfg)
    found = 0
    for i, det in enumerate(dets):
        pred = rt.decode([m[i:i + 1].numpy() for m in maps], ANCHORS.numpy(), STRIDE_LIST)
        boxes, scores, classes = rt.nms(pred, cfg.conf, cfg.iou, cfg.max_det, cfg.multi_label, cfg.max_candidates)
        np.testing.assert_array_equal(det.boxes, boxes)
        np.testing.assert_array_equal(det.scores, scores)
        np.testing.assert_array_equal(det.classes, classes)
        assert det.boxes.dtype == np.float32 and det.classes.dtype == np.int64
        found += len(det)
    assert found > 0


@pytest.mark.parametrize("imgsz,nc,heads", CASES)
def test_nms_of_torch_decoded_rows_matches(imgsz: int, nc: int, heads: int) -> None:
    """NMS of YOLOv5's torch decode and of the shared decode keep the same boxes (float32 sigmoid rounding aside)."""
    maps = _maps(imgsz, nc, 1, heads, seed=3 * imgsz)
    ref_pred = torch.cat([_torch_decode_level(m, ANCHORS[i], STRIDE_LIST[i]) for i, m in enumerate(maps)], 1)[0]
    ref = nms_image(ref_pred, VAL_NMS)
    det = postprocess(maps, ANCHORS, STRIDES[:heads], VAL_NMS)[0]
    assert len(det) > 0
    np.testing.assert_array_equal(det.classes, ref.classes)
    np.testing.assert_allclose(det.boxes, ref.boxes, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(det.scores, ref.scores, rtol=1e-5, atol=1e-7)


def test_nms_takes_tensors_and_arrays_alike() -> None:
    pred = rt.decode([m.numpy() for m in _maps(64, 2, 1, 3, seed=5)], ANCHORS.numpy(), STRIDE_LIST)
    a, b = nms_image(pred, VAL_NMS), nms_image(torch.from_numpy(pred), VAL_NMS)
    assert len(a) > 0 and np.array_equal(a.boxes, b.boxes) and np.array_equal(a.classes, b.classes)
    none = rt.nms(pred[:0], 0.25, 0.45, 300, False)
    assert [x.shape for x in none] == [(0, 4), (0,), (0,)]


def test_decode_refuses_a_batch() -> None:
    with pytest.raises(ValueError, match="one image"):
        rt.decode([m.numpy() for m in _maps(64, 1, 2, 1, seed=0)], ANCHORS.numpy(), STRIDE_LIST)


@pytest.mark.parametrize("shape", [(77, 131, 3), (131, 77, 3), (300, 301, 3), (32, 32, 3)])
def test_preprocess_is_one_letterbox(shape: tuple[int, int, int]) -> None:
    img = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    x, (scale, pad_x, pad_y) = rt.preprocess(img, 96)
    assert x.shape == (1, 3, 96, 96) and x.dtype == np.float32
    np.testing.assert_array_equal(torch_preprocess(img, 96, torch.device("cpu")).numpy(), x)
    boxed, info = letterbox(img, 96)
    assert (info.scale, info.pad_x, info.pad_y) == (scale, pad_x, pad_y)
    as_before = torch.from_numpy(np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1))).float().div_(255)
    np.testing.assert_array_equal(as_before.unsqueeze(0).numpy(), x)


def test_torch_preprocess_refuses_a_size_off_the_stride() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        torch_preprocess(np.zeros((10, 10, 3), np.uint8), 100, torch.device("cpu"))
