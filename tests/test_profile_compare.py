"""Profiles that report held-out numbers with intervals: what the choice saw is kept apart from what is promised,
and `evaluate --compare` flags only the pairs whose intervals do not overlap."""
from __future__ import annotations

from pathlib import Path

import pytest

from dh_tune.evaluate.__main__ import main as evaluate_main
from dh_tune.evaluate.profile_comparison import compare_profiles, profile_metrics, write_comparison
from dh_tune.search.records import FrontPoint
from dh_tune.threshold_profiles import load_profile, make_profile, save_profile

TORCH = {"name": "torch", "version": "2.13.0"}
SEEN = {"imgsz": 64, "t1": 0.5, "t2": 0.5, "ap50": 0.62, "ap50_95": 0.40, "latency_ms": 5.0, "latency_p90_ms": 6.0,
        "latency_p99_ms": 7.0, "exit_shares": (0.3, 0.3, 0.4), "gate_accuracy": (0.9, 0.8), "gate_recall": (0.7, 0.6),
        "mean_gmacs": 0.05}
HOLDOUT = {"source": "the 'val' split divided", "seed": 0, "test_fraction": 0.5, "calibration_images": 150,
           "test_images": 150, "calibration_sha256": "a" * 64, "test_sha256": "b" * 64,
           "calibration_indices": [0, 2], "test_indices": [1, 3]}


def _profile(folder: Path, name: str, ap50: float, ci: tuple[float, float], device: str = "Test CPU") -> Path:
    test = {"ap50": ap50, "ap50_95": ap50 / 2, "latency_ms": 5.2, "latency_p90_ms": 6.3, "latency_p99_ms": 7.1,
            "exit_shares": [0.28, 0.32, 0.40]}
    doc = make_profile(device_name=device, table_digest="e" * 64, runtime=TORCH, budget_ms=10, feasible=True,
                       candidate=FrontPoint.from_dict({**SEEN, "test": test}), metric="ap50", hyperparameters={}, checkpoint_rel="m.pt",
                       checkpoint_sha256="c" * 64, model={"scale": [0.33, 0.25], "nc": 2}, holdout=HOLDOUT,
                       table_created_at="2026-11-26T10:00:00+00:00",
                       confidence={"budget_stat": "p90", "select": "best", "indistinguishable": 3, "compared_with": 7,
                                   "intervals": {"ap50": list(ci), "ap50_95": [ci[0] / 2, ci[1] / 2],
                                                 "latency_ms": {"mean": [5.0, 5.4], "p90": [6.0, 6.6]}}})
    folder.mkdir(parents=True, exist_ok=True)
    return save_profile(doc, folder / name)


def test_a_profile_promises_the_test_numbers_and_keeps_the_calibration_ones(tmp_path: Path) -> None:
    doc = load_profile(_profile(tmp_path, "p.json", 0.55, (0.50, 0.60))).doc
    assert doc["expected"]["ap50"] == 0.55 and doc["expected"]["split"] == "test"
    assert doc["selection"]["ap50"] == 0.62 and doc["selection"]["split"] == "calibration"
    assert doc["holdout"]["test_images"] == 150 and "test_indices" not in doc["holdout"]
    assert doc["budget_stat"] == "p90" and doc["indistinguishable"] == 3
    assert doc["device"]["table_created_at"].startswith("2026-11-26")
    metrics = profile_metrics(doc)
    assert metrics["expected_ap50"] == 0.55 and metrics["selection_ap50"] == 0.62
    assert (metrics["ap50_ci_low"], metrics["ap50_ci_high"]) == (0.50, 0.60)
    assert metrics["latency_p90_ms_ci_high"] == 6.6 and metrics["indistinguishable_profiles"] == 3


def test_without_held_out_numbers_the_profile_reports_what_it_was_chosen_on(tmp_path: Path) -> None:
    doc = make_profile(device_name="Test CPU", table_digest="e" * 64, runtime=TORCH, budget_ms=10, feasible=True,
                       candidate=FrontPoint.from_dict(SEEN), metric="ap50", hyperparameters={}, checkpoint_rel="m.pt",
                       checkpoint_sha256="c" * 64, model={"scale": [0.33, 0.25], "nc": 2})
    assert doc["expected"]["ap50"] == 0.62 and "selection" not in doc and "intervals" not in doc


def test_compare_flags_only_disjoint_intervals(tmp_path: Path, capsys) -> None:
    a = _profile(tmp_path / "a", "budget-10ms.json", 0.55, (0.50, 0.60))
    b = _profile(tmp_path / "b", "budget-10ms.json", 0.58, (0.53, 0.63), device="Other CPU")
    c = _profile(tmp_path / "c", "budget-10ms.json", 0.70, (0.65, 0.75))
    text, apart = compare_profiles([load_profile(p) for p in (a, b, c)])
    assert apart == [(1, 3), (2, 3)]  # a and b overlap; c lies above both (0.63 < 0.65)
    assert "Other CPU" in text and "[0.500, 0.600]" in text and "b/budget-10ms.json" in text
    text, apart = compare_profiles([load_profile(p) for p in (a, b)])
    assert apart == [] and "may be noise" in text
    assert evaluate_main(["--compare", str(a), str(b), str(c)]) == 0
    out = capsys.readouterr().out
    assert "#1 and #3" in out and "#2 and #3" in out
    assert write_comparison(tmp_path, [a, c]).read_text().count("\n| ") == 2  # a row each
    assert evaluate_main(["--compare", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--checkpoint", "x.pt", "--compare", "p.json"], []])
def test_evaluate_takes_one_thing_to_do(flags: list[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        evaluate_main(flags)
    assert stop.value.code == 2
