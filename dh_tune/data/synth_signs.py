"""Traffic-sign templates of the synthetic dataset: one drawing function per sign family.

Classes differ the way real signs do (outline shape, colours, inner glyph); each is drawn once
as a large anti-aliased template with an alpha mask and resized to the size a scene asks for.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

TEMPLATE_PX = 128
AA = cv2.LINE_AA
# BGR colours of sign paint.
RED, WHITE, BLUE = (40, 35, 200), (240, 240, 240), (165, 85, 20)
YELLOW, BLACK, GREY = (25, 195, 240), (25, 25, 25), (150, 150, 150)


@dataclass(frozen=True)
class SignClass:
    """One sign class: its name, its family's drawing function and that function's options.

    `aspect` is height / width of its bounding box (0.87 for triangles, 1 for the others).
    """

    name: str
    draw: Callable[..., None]
    options: tuple = ()
    aspect: float = 1.0


def _canvas() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((TEMPLATE_PX, TEMPLATE_PX, 3), np.uint8), np.zeros((TEMPLATE_PX, TEMPLATE_PX), np.uint8)


def _fill(img: np.ndarray, alpha: np.ndarray | None, points: np.ndarray, colour: tuple) -> None:
    """Fill a polygon (float points, 4 fractional bits) in the image and, if given, the alpha mask."""
    pts = np.round(points * 16).astype(np.int32).reshape(1, -1, 2)
    # OpenCV's stubs name Sequence[...] where the function takes numpy arrays.
    cv2.fillPoly(img, pts, colour, AA, shift=4)  # type: ignore[call-overload]
    if alpha is not None:
        cv2.fillPoly(alpha, pts, 255, AA, shift=4)  # type: ignore[call-overload]


def _circle(img: np.ndarray, alpha: np.ndarray | None, radius: float, colour: tuple) -> None:
    angles = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    centre = (TEMPLATE_PX - 1) / 2
    _fill(img, alpha, centre + radius * np.stack([np.cos(angles), np.sin(angles)], 1), colour)


def _regular(sides: int, radius: float, rotation: float) -> np.ndarray:
    angles = rotation + np.arange(sides) * 2 * np.pi / sides
    return (TEMPLATE_PX - 1) / 2 + radius * np.stack([np.cos(angles), np.sin(angles)], 1)


def _text(img: np.ndarray, text: str, colour: tuple, width_frac: float, thickness_frac: float) -> None:
    """Centre `text` in the template, scaled to width_frac of its width."""
    font = cv2.FONT_HERSHEY_DUPLEX
    thickness = max(1, round(thickness_frac * TEMPLATE_PX))
    (w, h), _ = cv2.getTextSize(text, font, 1.0, thickness)
    scale = width_frac * TEMPLATE_PX / w
    (w, h), _ = cv2.getTextSize(text, font, scale, thickness)
    origin = ((TEMPLATE_PX - w) // 2, (TEMPLATE_PX + h) // 2)
    cv2.putText(img, text, origin, font, scale, colour, thickness, AA)


def _glyph(img: np.ndarray, glyph: str, colour: tuple) -> None:
    """Inner symbols shared by several families: bar, up arrow, cross, exclamation mark, text."""
    c, t = (TEMPLATE_PX - 1) / 2, TEMPLATE_PX
    if glyph == "bar":
        _fill(img, None, np.array([[0.15 * t, c - 0.1 * t], [0.85 * t, c - 0.1 * t], [0.85 * t, c + 0.1 * t],
                                   [0.15 * t, c + 0.1 * t]]), colour)
    elif glyph == "arrow":
        _fill(img, None, np.array([[c - 0.08 * t, 0.82 * t], [c + 0.08 * t, 0.82 * t], [c + 0.08 * t, 0.45 * t],
                                   [c + 0.25 * t, 0.45 * t], [c, 0.15 * t], [c - 0.25 * t, 0.45 * t],
                                   [c - 0.08 * t, 0.45 * t]]), colour)
    elif glyph == "cross":
        for sign in (1, -1):
            cv2.line(img, (round(0.2 * t), round(c - sign * 0.3 * t)), (round(0.8 * t), round(c + sign * 0.3 * t)),
                     colour, round(0.1 * t), AA)
    elif glyph == "exclaim":
        _fill(img, None, np.array([[c - 0.05 * t, 0.38 * t], [c + 0.05 * t, 0.38 * t], [c + 0.035 * t, 0.7 * t],
                                   [c - 0.035 * t, 0.7 * t]]), colour)
        cv2.circle(img, (round(c), round(0.8 * t)), round(0.055 * t), colour, -1, AA)
    else:
        _text(img, glyph, colour, 0.55 if len(glyph) <= 2 else 0.7, 0.06 if len(glyph) <= 2 else 0.045)


def ring_sign(img: np.ndarray, alpha: np.ndarray, text: str) -> None:
    """Prohibitory sign: red ring on white with black digits (speed limits)."""
    _circle(img, alpha, TEMPLATE_PX / 2, RED)
    _circle(img, None, 0.36 * TEMPLATE_PX, WHITE)
    _glyph(img, text, BLACK)


def disc_sign(img: np.ndarray, alpha: np.ndarray, fill: tuple, glyph: str, glyph_colour: tuple,
              ring: tuple | None = None) -> None:
    """Round sign: a coloured disc (optionally ringed) with a symbol (no entry, ahead only...)."""
    _circle(img, alpha, TEMPLATE_PX / 2, ring if ring is not None else fill)
    if ring is not None:
        _circle(img, None, 0.4 * TEMPLATE_PX, fill)
    _glyph(img, glyph, glyph_colour)


def triangle_sign(img: np.ndarray, alpha: np.ndarray, fill: tuple, border: tuple, glyph: str | None,
                  inverted: bool) -> None:
    """Triangular sign (warning, give way): border colour, inner fill, optional symbol."""
    t = TEMPLATE_PX - 1
    outer = np.array([[0, t], [t, t], [t / 2, 0]], dtype=np.float64)
    centroid = outer.mean(0)
    inner = centroid + 0.62 * (outer - centroid)
    if inverted:
        outer[:, 1], inner[:, 1] = t - outer[:, 1], t - inner[:, 1]
    _fill(img, alpha, outer, border)
    _fill(img, None, inner, fill)
    if glyph is not None:
        _glyph(img, glyph, BLACK)


def polygon_sign(img: np.ndarray, alpha: np.ndarray, sides: int, fill: tuple, band: tuple, glyph: str | None) -> None:
    """Regular-polygon sign (octagon stop, diamond priority road) with an inner band and symbol."""
    rotation = np.pi / sides if sides == 8 else 0.0
    radius = TEMPLATE_PX / 2 / (np.cos(np.pi / sides) if sides == 8 else 1.0)
    _fill(img, alpha, _regular(sides, radius, rotation), band)
    _fill(img, None, _regular(sides, radius * (0.88 if sides == 8 else 0.62), rotation), fill)
    if glyph is not None:
        _glyph(img, glyph, band)


def square_sign(img: np.ndarray, alpha: np.ndarray, fill: tuple, glyph: str, glyph_colour: tuple) -> None:
    """Rectangular information sign (parking) with a white rim and a symbol."""
    t = TEMPLATE_PX - 1
    _fill(img, alpha, np.array([[0, 0], [t, 0], [t, t], [0, t]], dtype=np.float64), WHITE)
    m = 0.07 * t
    _fill(img, None, np.array([[m, m], [t - m, m], [t - m, t - m], [m, t - m]]), fill)
    _glyph(img, glyph, glyph_colour)


SIGN_CLASSES: tuple[SignClass, ...] = (
    SignClass("limit_30", ring_sign, ("30",)),
    SignClass("limit_60", ring_sign, ("60",)),
    SignClass("no_entry", disc_sign, (RED, "bar", WHITE)),
    SignClass("ahead_only", disc_sign, (BLUE, "arrow", WHITE)),
    SignClass("no_parking", disc_sign, (BLUE, "cross", RED, RED)),
    SignClass("stop", polygon_sign, (8, RED, WHITE, "STOP")),
    SignClass("priority_road", polygon_sign, (4, YELLOW, WHITE, None)),
    SignClass("give_way", triangle_sign, (WHITE, RED, None, True), aspect=0.87),
    SignClass("warning", triangle_sign, (WHITE, RED, "exclaim", False), aspect=0.87),
    SignClass("caution_yellow", triangle_sign, (YELLOW, BLACK, "exclaim", False), aspect=0.87),
    SignClass("parking", square_sign, (BLUE, "P", WHITE)),
)
SIGN_NAMES = [c.name for c in SIGN_CLASSES]


@cache
def template(class_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(BGR, alpha) template of a class at TEMPLATE_PX, drawn once per process."""
    spec = SIGN_CLASSES[class_id]
    img, alpha = _canvas()
    spec.draw(img, alpha, *spec.options)
    return img, alpha


def sign_back(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The grey back of a round sign, a look-alike without a class: (BGR uint8, alpha float32 0-1)."""
    img, alpha = _canvas()
    _circle(img, alpha, TEMPLATE_PX / 2, GREY)
    return _resize(img, width, height), _resize(alpha, width, height).astype(np.float32) / 255.0


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = width < TEMPLATE_PX or height < TEMPLATE_PX
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def render_sign(class_id: int, width: int, height: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A sign patch (BGR uint8, alpha float32 0-1) of exactly width x height, with faded paint.

    The shape touches all four sides of the patch, so the patch rectangle is the label box.
    """
    img, alpha = template(class_id)
    patch = _resize(img, width, height).astype(np.float32)
    patch = patch * rng.uniform(0.75, 1.05) + rng.uniform(-15, 15)
    return np.clip(patch, 0, 255).astype(np.uint8), _resize(alpha, width, height).astype(np.float32) / 255.0
