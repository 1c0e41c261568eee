"""Reference numbers printed in the DH-Net paper, for side-by-side comparison with our measurements.

Nothing here is measured: results pages label these values as the paper's.
"""
from __future__ import annotations

TABLE2: dict[str, dict[str, tuple[float, float, float, float]]] = {
    # scale: {exit: (params saved, params saved %, GMACs saved, GMACs saved %)}; nc=33 (TT100K), 1024 px.
    # "one" = only head 1 runs (stages 2+3 and gate 2 skipped); "two" = heads 1-2 run (stage 3 skipped).
    "n": {"one": (0.65e6, 34.7, 1.06, 19.0), "two": (0.47e6, 25.4, 0.48, 8.6)},
    "s": {"one": (2.49e6, 34.0, 4.09, 19.4), "two": (1.83e6, 24.9, 1.87, 8.9)},
    "m": {"one": (7.39e6, 34.3, 12.1, 19.2), "two": (5.55e6, 25.8, 5.68, 9.0)},
}
"""Table 2: decrease in parameters and FLOPs (GMACs) when only one or two heads run."""

TABLE1: dict[str, dict[str, int]] = {
    "train": {"all": 5840, "large": 1918, "medium": 4550, "small": 5802},
    "test": {"all": 2941, "large": 926, "medium": 2304, "small": 2909},
}
"""Table 1: TT100K images (33 classes) with large, medium and small objects per split."""
