"""Synthetic traffic-sign scenes: the default dataset when the user brings none.

Object sizes are chosen per image from the gate labels (Eq. 3-7) so that about a third of the
images need only head 1, a third head 2 at most and a third head 3. Each image is drawn from
its own seed, so the bytes are the same for a seed whatever the number of worker processes.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from dh_tune import fsio
from dh_tune.input_size import check_imgsz
from dh_tune.model.config import DEFAULT_ANCHORS_PX

from .gate_labels import deepest_head
from .records import DataError, ImageRecord
from .stats import head_shares, split_stats
from .synth_render import ScenePlan, Sign, write_scene
from .synth_signs import SIGN_CLASSES, SIGN_NAMES

GENERATOR_VERSION = 2
EPS = 4.0
SIZE_MARGIN = 1.1          # sizes stay 10 % away from a head boundary, so the gates are learnable
SMALLEST_SIGN_PX = 10.0    # smaller signs are hardly recognisable
LARGEST_SIGN_FRAC = 0.4    # of the image side
EMPTY_SHARE = 0.5          # of the 'head 1 only' images: no sign at all
SPLIT_IDS = {"train": 0, "val": 1}
MIN_IMAGES_PER_WORKER = 16  # a worker process takes a few tenths of a second to start


@dataclass
class SynthReport:
    """What `generate` wrote: images per split, time taken and the measured head shares."""

    out: Path
    imgsz: int
    images: dict[str, int]
    seconds: float
    shares: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        """Generation speed over all splits."""
        return sum(self.images.values()) / max(self.seconds, 1e-9)


def sign_widths(imgsz: int, aspect: float, eps: float = EPS) -> list[np.ndarray]:
    """Integer sign widths that need exactly heads 1, 1-2 and 1-3 at this image size.

    Height is round(aspect * width). A width is kept only when the object stays in its head
    class after growing or shrinking by SIZE_MARGIN, and lies within the sign size limits.
    """
    widths = np.arange(1, imgsz + 1)
    wh = np.stack([widths, np.round(widths * aspect)], 1).astype(np.float64)
    factors = (1.0, SIZE_MARGIN, 1 / SIZE_MARGIN)
    level, bigger, smaller = (deepest_head(wh * f, DEFAULT_ANCHORS_PX, eps).numpy() for f in factors)
    clear = (level == bigger) & (level == smaller)
    clear &= (widths >= SMALLEST_SIGN_PX) & (widths <= LARGEST_SIGN_FRAC * imgsz)
    choices = [widths[clear & (level == head)] for head in (1, 2, 3)]
    for head, options in enumerate(choices, 1):
        if not len(options):
            raise DataError(f"image size {imgsz} is too small for signs that need head {head}")
    return choices


def _place(rng: np.random.Generator, imgsz: int, w: int, h: int, taken: list[Sign]) -> tuple[int, int] | None:
    for _ in range(30):
        x, y = int(rng.integers(0, imgsz - w + 1)), int(rng.integers(0, imgsz - h + 1))
        if all(x + w + 2 <= s.x or s.x + s.w + 2 <= x or y + h + 2 <= s.y or s.y + s.h + 2 <= y for s in taken):
            return x, y
    return None


def plan_scene(rng: np.random.Generator, imgsz: int, widths: dict[float, list[np.ndarray]]) -> list[Sign]:
    """Pick the deepest head this image needs (1, 2 or 3 with equal odds), then signs to match.

    Head 1 only: no sign (EMPTY_SHARE) or 1-3 small signs; head 2: 1-2 medium and 0-1 small;
    head 3: 1-2 large and 0-1 smaller one. Widths are drawn log-uniformly from `sign_widths`.
    """
    deepest = int(rng.integers(0, 3))
    if deepest == 0:
        levels = [] if rng.random() < EMPTY_SHARE else [0] * int(rng.integers(1, 4))
    elif deepest == 1:
        levels = [1] * int(rng.integers(1, 3)) + [0] * int(rng.integers(0, 2))
    else:
        levels = [2] * int(rng.integers(1, 3)) + [int(v) for v in rng.integers(0, 2, int(rng.integers(0, 2)))]
    signs: list[Sign] = []
    for level in levels:
        cls = int(rng.integers(0, len(SIGN_CLASSES)))
        aspect = SIGN_CLASSES[cls].aspect
        options = widths[aspect][level]
        w = int(rng.choice(options, p=(1.0 / options) / (1.0 / options).sum()))
        h = int(round(w * aspect))
        spot = _place(rng, imgsz, w, h, signs)
        if spot is not None:
            signs.append(Sign(cls, spot[0], spot[1], w, h))
    return signs


def _draw_in_workers(plans: list[ScenePlan], workers: int, out: Path, progress: tqdm) -> None:
    """Draw plans in fresh `python -m dh_tune.data.synth_render` processes (never forked copies
    of this one, whose OpenCV and torch thread pools a fork can leave locked)."""
    package_root = str(Path(__file__).parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
           # each worker draws on one core; idle OpenMP/BLAS threads would only spin
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    chunk = -(-len(plans) // workers)
    with tempfile.TemporaryDirectory(dir=out, prefix=".plans-") as folder:
        procs = []
        for index in range(workers):
            plan_file = Path(folder) / f"{index}.jsonl"
            plan_file.write_text("".join(p.to_json() + "\n" for p in plans[index * chunk:(index + 1) * chunk]))
            log = (Path(folder) / f"{index}.log").open("w")
            procs.append(subprocess.Popen([sys.executable, "-m", "dh_tune.data.synth_render", str(plan_file)],
                                          stdout=subprocess.PIPE, stderr=log, text=True, env=env))
            log.close()
        lock = threading.Lock()

        def _follow(proc: subprocess.Popen) -> None:
            assert proc.stdout is not None  # started with stdout=PIPE
            for _ in proc.stdout:
                with lock:
                    progress.update()

        readers = [threading.Thread(target=_follow, args=(p,), daemon=True) for p in procs]
        try:
            for reader in readers:
                reader.start()
            for proc, reader in zip(procs, readers):
                proc.wait()
                reader.join()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for index, proc in enumerate(procs):
            if proc.returncode:
                lines = (Path(folder) / f"{index}.log").read_text().strip().splitlines()
                raise DataError(f"{out}: a drawing worker failed ({lines[-1] if lines else 'no message'})")


def make_plans(out: Path, counts: dict[str, int], imgsz: int, seed: int) -> dict[str, list[ScenePlan]]:
    """Plans of all images; image i of a split uses the seed (seed, split, i) only."""
    widths = {c.aspect: sign_widths(imgsz, c.aspect) for c in SIGN_CLASSES}
    plans: dict[str, list[ScenePlan]] = {}
    for split, count in counts.items():
        plans[split] = []
        for i in range(count):
            key = (seed, SPLIT_IDS[split], i)
            signs = plan_scene(np.random.default_rng([*key, 0]), imgsz, widths)
            plans[split].append(ScenePlan(out / "images" / split / f"{i:06d}.jpg",
                                          out / "labels" / split / f"{i:06d}.txt", imgsz, key, tuple(signs)))
    return plans


def _prepare(out: Path, overwrite: bool) -> None:
    parts = [out / "images", out / "labels", out / "data.yaml", out / "synth.json"]
    if any(p.exists() for p in parts):
        if not overwrite:
            raise DataError(f"{out}: already holds a dataset (pass overwrite to replace it)")
        for p in parts:
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def generate(out: str | Path, *, train: int = 2000, val: int = 500, imgsz: int = 416, seed: int = 0,
             workers: int | None = None, overwrite: bool = False) -> SynthReport:
    """Write a YOLO dataset of synthetic sign scenes (images/, labels/, data.yaml, synth.json).

    Images are imgsz x imgsz JPEGs; `workers` processes (default: all cores) draw them. With
    val=0 the YAML's val entry points at the training images. Returns the speed and the measured
    head shares per split (at imgsz, eps 4).
    """
    check_imgsz(imgsz)
    if train < 1 or val < 0:
        raise DataError(f"{out}: need at least one training image and no negative counts (train={train}, val={val})")
    out = Path(out).absolute()
    _prepare(out, overwrite)
    counts = {split: n for split, n in (("train", train), ("val", val)) if n > 0}
    start = time.perf_counter()
    plans = make_plans(out, counts, imgsz, seed)
    for split in counts:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    every = [p for split in counts for p in plans[split]]
    workers = max(1, min(workers or os.cpu_count() or 1, len(every) // MIN_IMAGES_PER_WORKER or 1))
    with tqdm(total=len(every), desc="drawing signs", disable=None, leave=False) as progress:
        if workers == 1:
            for plan in every:
                write_scene(plan)
                progress.update()
        else:
            _draw_in_workers(every, workers, out, progress)
    seconds = time.perf_counter() - start
    shares = {}
    for split in counts:
        records = [ImageRecord(p.image, imgsz, imgsz, np.array([[s.x, s.y, s.x + s.w, s.y + s.h] for s in p.signs]),
                               np.array([s.cls for s in p.signs])) for p in plans[split]]
        shares[split] = head_shares(split_stats(records, len(SIGN_NAMES), imgsz, EPS))
    data = {"path": ".", "train": "images/train", "val": "images/val" if "val" in counts else "images/train",
            "names": SIGN_NAMES}
    fsio.write_text(out / "data.yaml", yaml.safe_dump(data, sort_keys=False))
    meta = {"generator_version": GENERATOR_VERSION, "seed": seed, "imgsz": imgsz, "images": counts,
            "eps": EPS, "head_shares": shares}
    fsio.write_json(out / "synth.json", meta)
    return SynthReport(out, imgsz, counts, seconds, shares)
