"""Drawing and writing planned synthetic scenes; also the worker process that does it in bulk.

Kept free of torch so a worker starts in a fraction of a second: `python -m
dh_tune.data.synth_render PLANS.jsonl` draws every plan in the file and prints one line per image.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .synth_scenes import BACKGROUNDS, add_clutter, camera_effects, draw_pole, occlude
from .synth_signs import render_sign

JPEG_QUALITY = 92
POLE_SHARE, OCCLUDED_SHARE = 0.6, 0.12
MIN_OCCLUDED_PX = 12


@dataclass(frozen=True)
class Sign:
    """One planned sign: class id and its box (left, top, width, height) in integer pixels."""

    cls: int
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class ScenePlan:
    """Everything needed to draw one image: where to write it, its size, seed and signs."""

    image: Path
    label: Path
    imgsz: int
    seed: tuple[int, ...]
    signs: tuple[Sign, ...]

    def to_json(self) -> str:
        """One JSON line, read back by `from_json` in a worker process."""
        return json.dumps({"image": str(self.image), "label": str(self.label), "imgsz": self.imgsz,
                           "seed": list(self.seed), "signs": [[s.cls, s.x, s.y, s.w, s.h] for s in self.signs]})

    @staticmethod
    def from_json(line: str) -> ScenePlan:
        """Inverse of `to_json`."""
        data = json.loads(line)
        return ScenePlan(Path(data["image"]), Path(data["label"]), int(data["imgsz"]), tuple(data["seed"]),
                         tuple(Sign(*(int(v) for v in s)) for s in data["signs"]))


def render_scene(plan: ScenePlan) -> np.ndarray:
    """Draw a planned image (BGR uint8): background, clutter, poles, signs, occluders, camera.

    All randomness comes from the plan's own seed, so the pixels never depend on other images.
    """
    rng = np.random.default_rng([*plan.seed, 1])
    img = np.ascontiguousarray(BACKGROUNDS[int(rng.integers(0, len(BACKGROUNDS)))](rng, plan.imgsz))
    add_clutter(img, rng, int(rng.integers(1, 7)))
    for sign in plan.signs:
        if rng.random() < POLE_SHARE:
            draw_pole(img, sign.x + sign.w // 2, sign.y + sign.h, sign.w, rng)
    for sign in plan.signs:
        patch, alpha = render_sign(sign.cls, sign.w, sign.h, rng)
        region = img[sign.y:sign.y + sign.h, sign.x:sign.x + sign.w]
        region[...] = (patch * alpha[..., None] + region * (1.0 - alpha[..., None])).astype(np.uint8)
        if sign.w >= MIN_OCCLUDED_PX and rng.random() < OCCLUDED_SHARE:
            occlude(img, (sign.x, sign.y, sign.w, sign.h), rng)
    return camera_effects(img, rng)


def label_text(signs: tuple[Sign, ...], imgsz: int) -> str:
    """YOLO label lines 'class cx cy w h', normalised, six decimals."""
    return "".join(f"{s.cls} {(s.x + s.w / 2) / imgsz:.6f} {(s.y + s.h / 2) / imgsz:.6f} "
                   f"{s.w / imgsz:.6f} {s.h / imgsz:.6f}\n" for s in signs)


def write_scene(plan: ScenePlan) -> None:
    """Render one plan and write its JPEG (fixed quality, so fixed bytes) and label file."""
    ok, encoded = cv2.imencode(".jpg", render_scene(plan), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"{plan.image}: JPEG encoding failed")
    plan.image.write_bytes(encoded.tobytes())
    plan.label.write_text(label_text(plan.signs, plan.imgsz), encoding="utf-8")


def main(argv: list[str]) -> int:
    """Worker entry: draw every plan of a JSON-lines file, printing one line per finished image."""
    if len(argv) != 1:
        print("usage: python -m dh_tune.data.synth_render PLANS.jsonl", file=sys.stderr)
        return 2
    cv2.setNumThreads(1)
    with open(argv[0], encoding="utf-8") as lines:
        for line in lines:
            write_scene(ScenePlan.from_json(line))
            print(1, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
