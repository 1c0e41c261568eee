"""The exit-level evaluation cache: one pass over a dataset, any threshold profile scored from it.

One run of the full model stores both gate scores and, for each exit level k, the NMS output of
heads 1..k with its match flags. A profile (t1, t2) only picks one level per image, so its AP,
gate quality, head usage and MACs follow from masks and cumulative sums in milliseconds.
"""
from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dh_tune import fsio
from dh_tune.evaluate.ap import class_ap_from_tp, summarize
from dh_tune.evaluate.matching import IOU_THRESHOLDS
from dh_tune.gating import gates_computed, passes
from dh_tune.messages import InputError

FORMAT_VERSION = 2
N_EXITS = 3


class ExitTableError(InputError):
    """A cache file that cannot be read as an exit table (corrupt, wrong format or version).

    A readable cache built for another checkpoint or dataset is not an error: ``load`` returns None.
    """


@dataclass(eq=False)
class ExitDetections:
    """Detections of every image after NMS over heads 1..k, as flat arrays of equal length M.

    Each image's detections appear in the order they were matched (``match_image``'s row order).
    """

    image: np.ndarray  # (M,) image index in [0, N)
    score: np.ndarray  # (M,) confidence
    cls: np.ndarray  # (M,) class id in [0, C)
    matches: np.ndarray  # (M, 10) bool, true positive at IoU 0.50:0.05:0.95

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.int32).reshape(-1)
        self.score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        self.cls = np.asarray(self.cls, dtype=np.int32).reshape(-1)
        self.matches = np.asarray(self.matches, dtype=bool)
        if self.matches.size == 0:
            self.matches = self.matches.reshape(0, len(IOU_THRESHOLDS))
        if self.matches.ndim != 2 or self.matches.shape[1] != len(IOU_THRESHOLDS):
            raise ValueError(f"matches must be (M, {len(IOU_THRESHOLDS)}), got {self.matches.shape}")
        m = len(self.image)
        if not (len(self.score) == len(self.cls) == len(self.matches) == m):
            raise ValueError("image, score, cls and matches must have the same length")


@dataclass(eq=False)
class ProfileMetrics:
    """Everything the cache says about one threshold profile (t1, t2).

    Gate quality follows paper Eq. 16-17 with "run the next head" (score >= t) as positive.
    """

    t1: float
    t2: float
    ap50: float
    ap50_95: float
    exit_shares: np.ndarray  # (3,) share of images leaving after head 1, 2, 3
    gate_accuracy: tuple[float, float]
    gate_recall: tuple[float, float]  # NaN for a gate whose label is never positive
    mean_macs: float
    per_class: dict[int, dict[str, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists and floats) of the metrics.

        Profiles, logs and MLflow take it as is; NaN marks an undefined recall or AP.
        """
        return {
            "t1": self.t1,
            "t2": self.t2,
            "ap50": self.ap50,
            "ap50_95": self.ap50_95,
            "exit_shares": [float(x) for x in self.exit_shares],
            "gate_accuracy": list(self.gate_accuracy),
            "gate_recall": list(self.gate_recall),
            "mean_macs": self.mean_macs,
            "per_class": self.per_class,
        }


@dataclass
class _ProfileIndex:
    """All levels' detections in one COCO order (class, descending score, image, position).

    Built once per table. A profile keeps the entries of each image's chosen level; AP then needs
    only the kept true positives and how many kept detections of their class precede them.
    """

    image: np.ndarray  # (M_all,) image of each sorted detection
    level: np.ndarray  # (M_all,) int8 exit level of each sorted detection
    class_start: np.ndarray  # (C,) first sorted position of each class
    tp_pos: np.ndarray  # (E,) sorted position of each (threshold, detection) true positive
    tp_group: np.ndarray  # (E,) threshold * C + class, non-decreasing
    tp_cls: np.ndarray  # (E,) class
    gt_total: np.ndarray  # (C,) ground truths per class over all images


@dataclass(eq=False)
class ExitTable:
    """Gate scores, Eq. 3-7 gate labels, ground-truth counts and per-exit detections of N images.

    ``levels[k - 1]`` holds the detections of exit level k; ``metadata`` records what the cache
    was built from (checkpoint and dataset hashes, image size, NMS settings) to detect staleness.
    The arrays are read-only by contract: the first evaluation indexes them once for all profiles.
    """

    gate_scores: np.ndarray  # (N, 2) float32
    gate_labels: np.ndarray  # (N, 2) bool: phi^2, phi^3
    gt_counts: np.ndarray  # (N, C) int
    levels: tuple[ExitDetections, ExitDetections, ExitDetections]
    macs_per_exit: np.ndarray  # (3,) MACs of the stages an image leaving after head 1, 2, 3 runs
    gate_macs: np.ndarray = field(default_factory=lambda: np.zeros(2))  # (2,) MACs of gate 1 and gate 2
    metadata: dict[str, Any] = field(default_factory=dict)
    _index: _ProfileIndex | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.gate_scores = np.asarray(self.gate_scores, dtype=np.float32)
        self.gate_labels = np.asarray(self.gate_labels, dtype=bool)
        self.gt_counts = np.asarray(self.gt_counts, dtype=np.int32)
        self.macs_per_exit = np.asarray(self.macs_per_exit, dtype=np.float64).reshape(-1)
        self.gate_macs = np.asarray(self.gate_macs, dtype=np.float64).reshape(-1)
        self.levels = tuple(self.levels)  # type: ignore[assignment]
        n = len(self.gate_scores)
        if self.gate_scores.shape != (n, 2) or self.gate_labels.shape != (n, 2):
            raise ValueError(f"gate_scores and gate_labels must be (N, 2), got "
                             f"{self.gate_scores.shape} and {self.gate_labels.shape}")
        if self.gt_counts.ndim != 2 or len(self.gt_counts) != n or (self.gt_counts < 0).any():
            raise ValueError(f"gt_counts must be (N={n}, C) non-negative, got {self.gt_counts.shape}")
        if len(self.levels) != N_EXITS or self.macs_per_exit.shape != (N_EXITS,) or self.gate_macs.shape != (2,):
            raise ValueError("need detections and MACs for exactly 3 exit levels and 2 gates")
        if not np.isfinite(self.gate_scores).all():
            raise ValueError("gate_scores contain NaN or infinite values")
        n_cls = self.gt_counts.shape[1]
        for k, det in enumerate(self.levels, start=1):
            if len(det.image) and (det.image.min() < 0 or det.image.max() >= n):
                raise ValueError(f"level {k}: image index outside [0, {n})")
            if len(det.cls) and (det.cls.min() < 0 or det.cls.max() >= n_cls):
                raise ValueError(f"level {k}: class id outside [0, {n_cls})")
            if np.isnan(det.score).any():
                raise ValueError(f"level {k}: scores contain NaN")

    @property
    def num_images(self) -> int:
        """Number of images the table was built from.

        Shares and means are over these images.
        """
        return len(self.gate_scores)

    def subset(self, images: np.ndarray) -> ExitTable:
        """The table of the given images only (in their original order), renumbered 0..n-1.

        A held-out split is a subset of one table built over all evaluation images: one pass, one cache file.
        """
        keep = np.unique(np.asarray(images, dtype=np.int64).reshape(-1))
        if len(keep) and (keep[0] < 0 or keep[-1] >= self.num_images):
            raise ValueError(f"image index outside [0, {self.num_images})")
        new_id = np.full(self.num_images, -1, np.int64)
        new_id[keep] = np.arange(len(keep))

        def part(det: ExitDetections) -> ExitDetections:
            rows = new_id[det.image] >= 0
            return ExitDetections(new_id[det.image[rows]], det.score[rows], det.cls[rows], det.matches[rows])

        levels = tuple(part(d) for d in self.levels)
        return ExitTable(self.gate_scores[keep], self.gate_labels[keep], self.gt_counts[keep],
                         levels, self.macs_per_exit, self.gate_macs,  # type: ignore[arg-type]
                         {**self.metadata, "subset_images": len(keep)})

    def exit_levels(self, t1: float, t2: float) -> np.ndarray:
        """Exit level (N,) int8 of every image: 1 if gate 1 < t1, else 2 if gate 2 < t2, else 3.

        Scores are compared exactly (float32 widened to float64) against the thresholds; a threshold
        <= 0 lets every image through and one >= 1 stops every image, as the model does.
        """
        level = np.full(self.num_images, 3, dtype=np.int8)
        level[~passes(self.gate_scores[:, 1], t2)] = 2
        level[~passes(self.gate_scores[:, 0], t1)] = 1
        return level

    def mean_macs(self, t1: float, t2: float) -> float:
        """Mean MACs per image of the profile: the stages each image runs plus the gates computed."""
        if not self.num_images:
            return float("nan")
        levels = self.exit_levels(t1, t2)
        g1, g2 = gates_computed(t1, t2)
        per_image = self.macs_per_exit[levels - 1] + g1 * self.gate_macs[0] + (levels >= 2) * g2 * self.gate_macs[1]
        return float(per_image.mean())

    def _profile_index(self) -> _ProfileIndex:
        """Build (once) the COCO-ordered concatenation of all levels that profiles mask."""
        if self._index is None:
            image = np.concatenate([d.image for d in self.levels]).astype(np.int64)
            level = np.concatenate([np.full(len(d.image), k, np.int8) for k, d in enumerate(self.levels, 1)])
            score = np.concatenate([d.score for d in self.levels]).astype(np.float64)
            cls = np.concatenate([d.cls for d in self.levels]).astype(np.int64)
            matches = np.concatenate([d.matches for d in self.levels])
            # Ties in score fall back to image order, then position: COCOeval's stable sorts.
            order = np.lexsort((image, -score, cls))
            n_cls = self.gt_counts.shape[1]
            sorted_cls = cls[order]
            thr, pos = np.nonzero(matches[order].T)
            self._index = _ProfileIndex(  # int32 indices halve the memory traffic of each profile
                image=image[order].astype(np.int32),
                level=level[order],
                class_start=np.searchsorted(sorted_cls, np.arange(n_cls), side="left"),
                tp_pos=pos.astype(np.int32),
                tp_group=(thr * n_cls + sorted_cls[pos]).astype(np.int32),
                tp_cls=sorted_cls[pos].astype(np.int32),
                gt_total=self.gt_counts.sum(axis=0, dtype=np.int64),
            )
        return self._index

    def class_ap(self, levels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Per-class AP (C, 10) when image i keeps the detections of exit level ``levels[i]``.

        NaN for classes without ground truth; equal to COCOeval on those final detections. ``weights`` (N,)
        counts each image that many times (0 drops it), as a bootstrap resample with replacement draws it.
        """
        levels = np.asarray(levels, dtype=np.int8).reshape(-1)
        if len(levels) != self.num_images:
            raise ValueError(f"need one exit level per image ({self.num_images}), got {len(levels)}")
        idx = self._profile_index()
        keep = levels[idx.image] == idx.level
        if weights is not None:
            return self._weighted_class_ap(idx, keep, np.asarray(weights, dtype=np.int64).reshape(-1))
        kept_before = np.empty(len(keep) + 1, dtype=np.int32)  # kept detections before each position
        kept_before[0] = 0
        np.cumsum(keep, out=kept_before[1:])
        sel = np.flatnonzero(keep[idx.tp_pos])
        pos, cls = idx.tp_pos[sel], idx.tp_cls[sel]
        rank = kept_before[pos + 1] - kept_before[idx.class_start][cls]  # place among the kept of its class
        return class_ap_from_tp(idx.tp_group[sel], rank, idx.gt_total)

    def _weighted_class_ap(self, idx: _ProfileIndex, keep: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """class_ap with image i counted weights[i] times: its copies sit side by side in COCO order."""
        if len(weights) != self.num_images or (weights < 0).any():
            raise ValueError(f"need one non-negative weight per image ({self.num_images})")
        per_position = np.where(keep, weights[idx.image], 0)
        before = np.zeros(len(per_position) + 1, dtype=np.int64)  # weighted kept detections before each position
        np.cumsum(per_position, out=before[1:])
        sel = np.flatnonzero(per_position[idx.tp_pos] > 0)
        pos, cls = idx.tp_pos[sel], idx.tp_cls[sel]
        copies = per_position[pos]
        first = before[pos] - before[idx.class_start][cls]  # kept detections of the class ranked above
        entry = np.repeat(np.arange(len(sel)), copies)
        within = np.arange(len(entry)) - np.repeat(np.cumsum(copies) - copies, copies)
        gt_total = weights @ self.gt_counts.astype(np.int64)
        return class_ap_from_tp(idx.tp_group[sel][entry], first[entry] + within + 1, gt_total)

    def ap_for_levels(self, levels: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
        """AP50 and AP50:95 when image i keeps the detections of exit ``levels[i]``, however chosen
        (an oracle gate that knows the labels, say, rather than thresholds on the gate scores); ``weights``
        as in ``class_ap``."""
        gt_total = self._profile_index().gt_total if weights is None else weights @ self.gt_counts.astype(np.int64)
        summary = summarize(self.class_ap(levels, weights), gt_total, per_class=False)
        return {"ap50": summary["ap50"], "ap50_95": summary["ap50_95"]}

    def label_levels(self) -> np.ndarray:
        """Exit level (N,) int8 the Eq. 3-7 labels ask for: the deepest head an image needs."""
        level = np.where(self.gate_labels[:, 1], 3, 2).astype(np.int8)
        level[~self.gate_labels[:, 0]] = 1
        return level

    def evaluate(self, t1: float, t2: float, per_class: bool = False) -> ProfileMetrics:
        """Score the profile (t1, t2): AP, head usage, gate accuracy/recall and mean MACs.

        Gate 2 is judged on every image, since the cache ran it for all, not only those gate 1 let through.
        """
        levels = self.exit_levels(t1, t2)
        summary = summarize(self.class_ap(levels), self._profile_index().gt_total, per_class=per_class)
        predicted = np.stack([passes(self.gate_scores[:, 0], t1), passes(self.gate_scores[:, 1], t2)], axis=1)
        correct = predicted == self.gate_labels
        positives = self.gate_labels.sum(axis=0)
        caught = (predicted & self.gate_labels).sum(axis=0)
        recall = tuple(float(c / p) if p else float("nan") for c, p in zip(caught, positives))
        n = max(self.num_images, 1)
        return ProfileMetrics(
            t1=float(t1),
            t2=float(t2),
            ap50=summary["ap50"],
            ap50_95=summary["ap50_95"],
            exit_shares=np.bincount(levels, minlength=N_EXITS + 1)[1:] / n,
            gate_accuracy=(float(correct[:, 0].mean()), float(correct[:, 1].mean())) if self.num_images
            else (float("nan"), float("nan")),
            gate_recall=recall,  # type: ignore[arg-type]
            mean_macs=self.mean_macs(t1, t2),
            per_class=summary.get("per_class"),
        )

    def save(self, path: str | Path) -> None:
        """Write the table to a compressed .npz (metadata as a JSON string), atomically.

        Nothing in the file needs pickle, so it is safe to load from anywhere.
        """
        path = Path(path)
        arrays: dict[str, Any] = {  # Any: numpy's stub would match a value against savez's allow_pickle
            "format_version": np.array(FORMAT_VERSION),
            "metadata": np.array(json.dumps(self.metadata, sort_keys=True)),
            "gate_scores": self.gate_scores,
            "gate_labels": self.gate_labels,
            "gt_counts": self.gt_counts,
            "macs_per_exit": self.macs_per_exit,
            "gate_macs": self.gate_macs,
        }
        for k, det in enumerate(self.levels, start=1):
            for name in ("image", "score", "cls", "matches"):
                arrays[f"level{k}_{name}"] = getattr(det, name)
        with fsio.atomic_open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: str | Path, expect: dict[str, Any] | None = None) -> ExitTable | None:
        """Read a table saved by ``save``; None if ``expect`` disagrees with its stored metadata.

        Every key of ``expect`` must equal the stored value (after a JSON round trip). A corrupt
        file or another format version raises ExitTableError; a missing file FileNotFoundError.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such exit table")
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise ExitTableError(f"{path}: not a readable exit table ({exc})") from exc
        try:
            version = int(data["format_version"])
            metadata = json.loads(str(data["metadata"]))
        except KeyError as exc:
            raise ExitTableError(f"{path}: exit table lacks array {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ExitTableError(f"{path}: malformed exit table header ({exc})") from exc
        if version != FORMAT_VERSION:
            raise ExitTableError(f"{path}: exit table format {version}, this version reads {FORMAT_VERSION}")
        if not isinstance(metadata, dict):
            raise ExitTableError(f"{path}: exit table metadata is not a JSON object")
        if expect is not None:
            wanted = json.loads(json.dumps(expect, sort_keys=True))
            if any(metadata.get(k) != v for k, v in wanted.items()):
                return None
        try:
            levels = tuple(
                ExitDetections(*(data[f"level{k}_{n}"] for n in ("image", "score", "cls", "matches")))
                for k in range(1, N_EXITS + 1)
            )
            return cls(
                gate_scores=data["gate_scores"],
                gate_labels=data["gate_labels"],
                gt_counts=data["gt_counts"],
                levels=levels,  # type: ignore[arg-type]
                macs_per_exit=data["macs_per_exit"],
                gate_macs=data["gate_macs"],
                metadata=metadata,
            )
        except KeyError as exc:
            raise ExitTableError(f"{path}: exit table lacks array {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ExitTableError(f"{path}: malformed exit table ({exc})") from exc
