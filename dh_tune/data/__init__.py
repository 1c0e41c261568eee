"""Datasets for dh-tune: YOLO, COCO and TT100K readers, the synthetic default, gate labels.

Everything downstream sees one record type (absolute-pixel xyxy boxes), one problem list and
one torch dataset that letterboxes to the network input size. Names that need torch are
imported on first use (PEP 562), so torch-free parts such as the synthetic-scene workers start
quickly.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Light modules are imported at once; this also binds the name `letterbox` to the function
# rather than to its module.
from .letterbox import LetterboxInfo, boxes_from_network, boxes_to_network, letterbox, letterbox_info
from .problems import read_problems, summarize_problems, write_problems
from .records import DataError, Dataset, ImageRecord, Problem

_LAZY = {
    "gate_labels": ["cascade_labels", "deepest_head", "gate_targets", "head_responsibility"],
    "home": ["default_dataset", "dh_tune_home"],
    "loader": ["detect_format", "load_dataset"],
    "stats": ["dataset_stats", "split_stats"],
    "torch_dataset": ["DetectionDataset", "EpochSampler", "collate"],
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}
__all__ = [
    "DataError", "Dataset", "DetectionDataset", "EpochSampler", "ImageRecord", "LetterboxInfo", "Problem", "boxes_from_network",
    "boxes_to_network", "cascade_labels", "collate", "dataset_stats", "deepest_head", "default_dataset",
    "detect_format", "dh_tune_home", "gate_targets", "head_responsibility", "letterbox", "letterbox_info",
    "load_dataset", "read_problems", "split_stats", "summarize_problems", "write_problems",
]

if TYPE_CHECKING:
    from .gate_labels import cascade_labels, deepest_head, gate_targets, head_responsibility
    from .home import default_dataset, dh_tune_home
    from .loader import detect_format, load_dataset
    from .stats import dataset_stats, split_stats
    from .torch_dataset import DetectionDataset, EpochSampler, collate


def __getattr__(name: str) -> object:
    """Import an exported name from its submodule on first access."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Module attributes including the names not imported yet."""
    return sorted(set(globals()) | set(__all__))
