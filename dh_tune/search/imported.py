"""A search over a detector trained elsewhere (`--from-yolov5 BEST.pt`): import it, fit the pipeline to it.

The imported YOLOv5 is the search's base and its static reference; each trial trains the gates on it, so the
pipeline takes the checkpoint's scale and training size, and the dataset must have the checkpoint's classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fsio import sha256_of, slug
from ..messages import InputError
from ..model.checkpoint import CheckpointPipeline, load_checkpoint
from ..pipeline import Pipeline
from ..resources import default_search_space, packaged_file

IMPORT_DIR = "imported"
GATES_ONLY_SPACE = "gates_only.yaml"
SIZE_FACTORS = (0.5, 0.75, 1.0)
"""Deployment sizes of an imported detector, as shares of the size it was trained at (unless the pipeline names
them): smaller inputs are the cheap end of every front; larger ones than trained rarely pay on a budget."""


@dataclass(frozen=True)
class ImportedBase:
    """The imported detector as the search uses it: its dh-tune checkpoint, origin and class names."""

    checkpoint: Path
    source: dict[str, Any]
    names: list[str]

    def tags(self) -> dict[str, str]:
        """MLflow tags naming the source checkpoint and its classes."""
        return source_tags(self.source)


def source_tags(source: dict[str, Any] | None) -> dict[str, str]:
    """MLflow tags naming an imported detector's file, sha256 and class names (none for one the search trained)."""
    if not source:
        return {}
    return {"source_file": str(source.get("file")), "source_sha256": str(source.get("sha256")),
            "source_format": str(source.get("format")), "class_names": ",".join(source.get("names", []))[:5000]}


def import_once(src: Path, out: Path) -> ImportedBase:
    """OUT/imported/<name>-<sha>.pt from the YOLOv5 file: imported on the first run, read back on a re-run."""
    from ..import_yolov5 import import_yolov5

    if not src.is_file():
        raise InputError(f"--from-yolov5 {src}: no such file")
    sha = sha256_of(src)
    target = out / IMPORT_DIR / f"{slug(src.stem)}-{sha[:12]}.pt"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        import_yolov5(src, target)
    ckpt = load_checkpoint(target)
    return ImportedBase(target, dict(ckpt["source"]), list(ckpt["names"]))


def search_name(pipeline_name: str, src: Path) -> str:
    """Name of a search over an imported detector (its MLflow experiment and default folder)."""
    return f"{pipeline_name}-yolov5-{slug(src.stem)}"[:60]


def sizes_around(imgsz: int) -> list[int]:
    """Deployment sizes for a detector trained at `imgsz`: SIZE_FACTORS of it, rounded to multiples of 32."""
    return sorted({max(32, int(imgsz * f / 32 + 0.5) * 32) for f in SIZE_FACTORS})


def fit_pipeline(pipeline: Pipeline, base: ImportedBase, named: bool) -> Pipeline:
    """The pipeline a search over the imported detector runs: its scale, size and a gates-only schedule.

    `named`: the user named the pipeline, so its deployment sizes and search space are kept when it sets them.
    Gate labels (Eq. 3-5) are computed at the training size, which is the checkpoint's.
    """
    ckpt = load_checkpoint(base.checkpoint)
    imgsz = CheckpointPipeline.of(ckpt).imgsz
    sc = pipeline.search
    search: dict[str, Any] = {"trial_epochs": sc.gate_epochs, "warm_start": True}
    if not (named and sc.deploy_imgsz):
        search["deploy_imgsz"] = sizes_around(imgsz)
    if not (named and sc.search_space != default_search_space()):
        search["search_space"] = str(packaged_file("search_spaces", GATES_ONLY_SPACE))
    fitted = pipeline.with_overrides(model={"scale": list(ckpt["model_args"]["scale"]), "init_from": None},
                                     data={"imgsz": imgsz}, train={"loss": {"gate_trunk_grad": 0.0}}, search=search)
    return fitted.model_copy(update={"name": search_name(pipeline.name, Path(str(base.source.get("file"))))})


def check_classes(base: ImportedBase, dataset: str, fmt: str | None) -> None:
    """InputError before any training when the dataset's classes are not the checkpoint's (count or names)."""
    from ..data import load_dataset

    names = list(load_dataset(dataset, fmt=fmt).names)
    file = base.source.get("file")
    named = base.source.get("weights") != "state_dict"  # a bare state dict carries no class names
    if len(names) != len(base.names):
        raise InputError(f"{dataset}: {len(names)} classes, but {file} detects {len(base.names)} "
                         f"({', '.join(base.names[:6])}{', ...' if len(base.names) > 6 else ''}): "
                         "give the dataset the checkpoint was trained on")
    for i, (ours, theirs) in enumerate(zip(names, base.names)):
        if named and ours != theirs:
            raise InputError(f"{dataset}: class {i} is {ours!r}, but in {file} it is {theirs!r}: "
                             "the dataset's classes must be the checkpoint's, in the same order")


def static_ap(base: ImportedBase, pipeline: Pipeline, dataset: str, cache_dir: Path) -> dict[str, float]:
    """AP with all heads of the imported detector on the validation images at its training size, exactly as
    `python -m dh_tune.evaluate --thresholds 0 0` scores it (the number to hold against YOLOv5's own val.py)."""
    from ..data import load_dataset
    from ..evaluate.exit_cache import cached_exit_table
    from ..model.checkpoint import file_sha256, load_model

    model, ckpt = load_model(base.checkpoint)
    dc = pipeline.data
    records = load_dataset(dataset, fmt=dc.format).splits[dc.val_split][: dc.val_limit]
    table = cached_exit_table(model, file_sha256(base.checkpoint), records, dc.imgsz, eps=CheckpointPipeline.of(ckpt).eps,
                              cache_dir=cache_dir, progress=False)
    m = table.evaluate(0.0, 0.0)
    return {"ap50": float(m.ap50), "ap50_95": float(m.ap50_95), "images": float(len(records))}

