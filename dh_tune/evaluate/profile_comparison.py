"""Profiles side by side: device, budget, AP with its interval, latency and exit shares, across runs and devices.

Pairs whose AP intervals do not overlap are flagged: only between those does the difference in AP say more
than the images a profile was scored on.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import fsio
from ..threshold_profiles import Profile

COMPARISON_FILE = "profiles_compare.md"


def _interval(doc: dict[str, Any], key: str) -> tuple[float, float] | None:
    pair = (doc.get("intervals") or {}).get(key)
    if not pair or any(v is None for v in pair):
        return None
    return float(pair[0]), float(pair[1])


def _num(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"


def profile_metrics(doc: dict[str, Any]) -> dict[str, float]:
    """A profile's numbers as flat MLflow metrics: reported (test), as chosen (calibration), interval ends."""
    out: dict[str, float] = {}
    exp = doc["expected"]
    for key in ("ap50", "ap50_95", "latency_mean_ms", "latency_p90_ms", "latency_p99_ms"):
        if exp.get(key) is not None:
            out[f"expected_{key}"] = float(exp[key])
    for i, share in enumerate(exp.get("exit_shares") or [], start=1):
        out[f"share_exit{i}"] = float(share)
    for key, value in (doc.get("selection") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"selection_{key}"] = float(value)
    intervals = doc.get("intervals") or {}
    for key in ("ap50", "ap50_95"):
        pair = _interval(doc, key)
        if pair:
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = pair
    for stat, pair in (intervals.get("latency_ms") or {}).items():
        if pair and None not in pair:
            out[f"latency_{stat}_ms_ci_low"], out[f"latency_{stat}_ms_ci_high"] = float(pair[0]), float(pair[1])
    if "indistinguishable" in doc:
        out["indistinguishable_profiles"] = float(doc["indistinguishable"])
    return out


def compare_profiles(profiles: Sequence[Profile], metric: str | None = None) -> tuple[str, list[tuple[int, int]]]:
    """A Markdown table of the profiles and the pairs (i, j) whose `metric` intervals do not overlap.

    `metric` defaults to the first profile's own. Profiles without intervals are listed and never flagged.
    """
    if not profiles:
        raise ValueError("no profiles to compare")
    metric = metric or str(profiles[0].doc["metric"])
    name = "AP50" if metric == "ap50" else "AP50:95"
    lines = [f"| # | profile | device | runtime | budget | {name} (95% interval) | latency mean / p90 ms | "
             "exit shares 1/2/3 | test images |", "|---|---|---|---|---|---|---|---|---|"]
    for i, p in enumerate(profiles, start=1):
        d, exp = p.doc, p.doc["expected"]
        ci = _interval(d, metric)
        ap = _num(exp.get(metric)) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else " [no interval]")
        shares = "/".join(f"{s:.2f}" for s in exp.get("exit_shares") or [])
        images = (d.get("holdout") or {}).get("test_images", "-")
        stat = d.get("budget_stat", "mean")
        where = "/".join(p.path.parts[-2:]) if p.path else "-"
        lines.append(f"| {i} | {where} | {d['device']['name']} | {p.runtime} | "
                     f"{d['budget_ms']:g} ms ({stat}) | {ap} | {_num(exp.get('latency_mean_ms'))} / "
                     f"{_num(exp.get('latency_p90_ms'))} | {shares} | {images} |")
    apart = []
    for i in range(len(profiles)):
        for j in range(i + 1, len(profiles)):
            a, b = _interval(profiles[i].doc, metric), _interval(profiles[j].doc, metric)
            if a and b and (a[1] < b[0] or b[1] < a[0]):
                apart.append((i + 1, j + 1))
    if apart:
        lines.append("")
        lines += [f"- #{i} and #{j}: {name} intervals do not overlap (a real difference)" for i, j in apart]
    else:
        lines += ["", f"- no two profiles' {name} intervals are disjoint: their differences in {name} may be noise"]
    return "\n".join(lines), apart


def write_comparison(folder: Path, paths: Sequence[Path]) -> Path:
    """The comparison of the given profile files, written as a Markdown table into `folder`."""
    from ..threshold_profiles import load_profile

    text, _ = compare_profiles([load_profile(p) for p in paths])
    return fsio.write_text(Path(folder) / COMPARISON_FILE, text + "\n")
