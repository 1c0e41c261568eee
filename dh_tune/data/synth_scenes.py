"""Procedural scenery for the synthetic sign dataset: backgrounds, clutter and camera effects.

One small function per background kind; clutter adds poles, boxes, lights and sign-like
look-alikes so the detector must learn the signs rather than "anything coloured".
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .synth_signs import sign_back

AA = cv2.LINE_AA
NOISE_MARGIN = 64


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    red, green, blue = (int(v) for v in rng.integers(low, high, 3))
    return red, green, blue


def _vertical_gradient(size: int, top: tuple, bottom: tuple, rows: int) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None, None]
    band = np.array(top, np.float32) * (1 - ramp) + np.array(bottom, np.float32) * ramp
    return np.broadcast_to(band, (rows, size, 3)).astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, base: tuple, spread: int) -> np.ndarray:
    """Low-frequency texture around a base colour: mostly brightness, a little hue, bicubic-upsampled."""
    shade = rng.normal(0, spread, (cells, cells, 1))
    tint = rng.normal(0, spread / 3, (cells, cells, 3))
    grid = (np.array(base, np.float32) + shade + tint).astype(np.float32)
    return np.clip(cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def street_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sky over a grey road with lane markings converging to the horizon."""
    horizon = int(size * rng.uniform(0.3, 0.6))
    sky = _vertical_gradient(size, _colour(rng, 170, 250), (235, 225, 215), horizon)
    road = _vertical_gradient(size, _colour(rng, 90, 140), _colour(rng, 50, 100), size - horizon)
    img = np.ascontiguousarray(np.concatenate([sky, road]))
    vanish = int(size * rng.uniform(0.3, 0.7))
    for offset in (-0.45, 0.0, 0.45):
        cv2.line(img, (vanish, horizon), (int(vanish + offset * size * 2), size), (225, 225, 225),
                 max(1, size // 120), AA)
    return img


def building_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Building facades with rows of windows under a strip of sky."""
    img = _vertical_gradient(size, _colour(rng, 180, 250), (230, 220, 210), size).copy()
    x = 0
    while x < size:
        width = int(rng.integers(size // 6, size // 2))
        top = int(rng.integers(0, size // 3))
        facade = _colour(rng, 60, 200)
        cv2.rectangle(img, (x, top), (x + width, size), facade, -1)
        window = _colour(rng, 20, 120)
        step = max(6, size // 20)
        for wy in range(top + step // 2, size - step, step):
            for wx in range(x + step // 3, x + width - step // 2, step):
                cv2.rectangle(img, (wx, wy), (wx + step // 2, wy + step // 2), window, -1)
        x += width
    return img


def foliage_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Trees and hedges: green-brown smooth texture with a few dark trunks."""
    img = _smooth_noise(rng, size, int(rng.integers(6, 14)), (40, 110, 60), 35)
    for _ in range(int(rng.integers(1, 4))):
        x = int(rng.integers(0, size))
        cv2.rectangle(img, (x, int(size * rng.uniform(0.3, 0.8))), (x + size // 40 + 2, size), (30, 45, 60), -1)
    return img


def abstract_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Soft colour field with large blurred blobs (parks, walls, out-of-focus scenes).

    Drawn and blurred at a quarter of the size, then enlarged: the same look for a tenth of the cost.
    """
    small = max(8, size // 4)
    img = _smooth_noise(rng, small, 3, _colour(rng, 60, 200), 40)
    for _ in range(int(rng.integers(2, 6))):
        centre = (int(rng.integers(0, small)), int(rng.integers(0, small)))
        axes = (int(rng.integers(small // 10 + 1, small // 3 + 2)), int(rng.integers(small // 10 + 1, small // 3 + 2)))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, _colour(rng, 40, 220), -1, AA)
    img = cv2.GaussianBlur(img, (0, 0), small / 60)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)


BACKGROUNDS = (street_background, building_background, foliage_background, abstract_background)


def draw_pole(img: np.ndarray, x: int, y: int, width: int, rng: np.random.Generator) -> None:
    """A grey pole from (x, y) down towards the ground, as signs are mounted."""
    size = img.shape[0]
    thickness = max(1, width // 10)
    bottom = min(size, y + int(rng.uniform(1.0, 4.0) * width) + 4)
    shade = int(rng.integers(90, 170))
    cv2.rectangle(img, (x - thickness // 2, y), (x + (thickness - 1) // 2, bottom), (shade, shade, shade), -1)


def _paste(img: np.ndarray, patch: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    h, w = alpha.shape
    region = img[y:y + h, x:x + w]
    a = alpha[: region.shape[0], : region.shape[1], None]
    blended = patch[: region.shape[0], : region.shape[1]] * a + region * (1.0 - a)
    region[...] = blended.astype(np.uint8)


def add_clutter(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Distractors: billboards, wires, traffic lights, cars, and grey sign backs (look-alikes)."""
    size = img.shape[0]
    for _ in range(count):
        kind = int(rng.integers(0, 5))
        x, y = int(rng.integers(0, size)), int(rng.integers(0, size))
        extent = int(rng.integers(size // 30 + 4, size // 6 + 8))
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + extent * 2, y + extent), _colour(rng, 30, 230), -1)
            cv2.putText(img, "SALE" if rng.random() < 0.5 else "CAFE", (x + 2, y + extent - 3),
                        cv2.FONT_HERSHEY_SIMPLEX, extent / 40, _colour(rng), 1, AA)
        elif kind == 1:
            cv2.line(img, (0, y), (size, int(y + rng.integers(-size // 4, size // 4))), (40, 40, 40), 1, AA)
        elif kind == 2:
            cv2.rectangle(img, (x, y), (x + extent // 3 + 2, y + extent), (30, 30, 30), -1)
            lit = int(rng.integers(0, 3))
            for i, colour in enumerate(((40, 40, 220), (40, 200, 230), (80, 200, 60))):
                centre = (x + extent // 6 + 1, y + (2 * i + 1) * extent // 6)
                cv2.circle(img, centre, max(1, extent // 9), colour if i == lit else (60, 60, 60), -1, AA)
        elif kind == 3:
            cv2.rectangle(img, (x, y), (x + extent * 2, y + extent), _colour(rng, 20, 240), -1)
            cv2.rectangle(img, (x + extent // 4, y - extent // 3), (x + 3 * extent // 2, y), (70, 60, 60), -1)
        else:
            back, alpha = sign_back(extent, extent)
            _paste(img, back, alpha, min(x, size - extent), min(y, size - extent))


def occlude(img: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    """Cover up to about a third of a sign with a branch-like blob or a pole."""
    x, y, w, h = box
    colour = (30, int(rng.integers(70, 130)), 40) if rng.random() < 0.6 else _colour(rng, 60, 160)
    side = int(rng.integers(0, 4))
    depth = rng.uniform(0.15, 0.35)
    if side == 0:
        cv2.rectangle(img, (x, y), (x + int(w * depth), y + h), colour, -1)
    elif side == 1:
        cv2.rectangle(img, (x + w - int(w * depth), y), (x + w, y + h), colour, -1)
    else:
        centre = (x + int(rng.uniform(0.2, 0.8) * w), y + (h if side == 2 else 0))
        cv2.ellipse(img, centre, (max(1, int(w * 0.4)), max(1, int(h * depth * 1.6))), 0, 0, 360, colour, -1, AA)


@lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    """Fixed Gaussian noise (sigma 8, scaled down per image) cropped at random offsets; same in every process."""
    rng = np.random.default_rng(20240501)
    return np.round(rng.normal(0, 8, (size + NOISE_MARGIN, size + NOISE_MARGIN, 3))).astype(np.int16)


def camera_effects(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure and a soft shadow, sometimes blur, then sensor noise of random strength."""
    size = img.shape[0]
    img = cv2.convertScaleAbs(img, alpha=float(rng.uniform(0.65, 1.25)), beta=float(rng.uniform(-20, 20)))
    if rng.random() < 0.3:
        ramp = np.linspace(float(rng.uniform(0.55, 0.9)), 1.0, size, dtype=np.float32)
        ramp = ramp[:, None] if rng.random() < 0.5 else ramp[None, :]
        img = (img * np.broadcast_to(ramp, (size, size))[..., None]).astype(np.uint8)
    if rng.random() < 0.2:
        img = cv2.GaussianBlur(img, (3, 3), float(rng.uniform(0.5, 0.9)))
    strength = int(rng.integers(0, 7))
    if strength:
        dx, dy = (int(v) for v in rng.integers(0, NOISE_MARGIN, 2))
        noise = _noise_bank(size)[dy:dy + size, dx:dx + size]
        img = np.clip(img.astype(np.int16) + ((noise * strength) >> 3), 0, 255).astype(np.uint8)
    return img
