"""Dynamic profiles against static networks per budget, and a budget a static network wins exported as such."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dh_tune.gating import STATIC_THRESHOLDS, gates_computed, static_exit
from dh_tune.search.compare import compare_budget, model_summaries
from dh_tune.search.records import FrontPoint, TrialResult, TrialStatus
from dh_tune.search.space import is_paper_point
from dh_tune.threshold_profiles import load_profile


def _pt(t1, t2, ap, ms, trial="t", imgsz=128) -> FrontPoint:
    level = static_exit(t1, t2)
    return FrontPoint.from_dict({"imgsz": imgsz, "t1": t1, "t2": t2, "ap50": ap + 0.2, "ap50_95": ap, "latency_ms": ms,
            "latency_p90_ms": ms * 1.1, "exit_shares": [0.2, 0.3, 0.5], "gate_accuracy": [0.9, 0.9],
            "gate_recall": [0.9, 0.9], "mean_gmacs": 0.1, "source": "grid", "static_exit": level,
            "heads": {1: "P3 head", 2: "P3+P4 heads", 3: "all heads"}.get(level, "gated"), "trial_id": trial})


POINTS = [_pt(1.0, 1.0, 0.20, 5.0), _pt(0.3, 0.7, 0.30, 6.0), _pt(0.4, 0.6, 0.45, 7.0),
          _pt(0.0, 1.0, 0.50, 8.0), _pt(0.0, 0.0, 0.55, 11.0)]


def test_the_threshold_rule_names_static_networks() -> None:
    assert [static_exit(*STATIC_THRESHOLDS[k]) for k in (1, 2, 3)] == [1, 2, 3]
    assert static_exit(0.5, 0.0) is None and static_exit(0.0, 0.5) is None
    assert static_exit(1.0, 0.5) == 1  # gate 2 is never reached
    assert gates_computed(0.0, 0.0) == (False, False) and gates_computed(1.0, 0.5) == (False, False)
    assert gates_computed(0.5, 1.0) == (True, False) and gates_computed(-1.0, 0.3) == (False, True)


def test_compare_budget_finds_the_best_of_each_kind_and_the_gain() -> None:
    tight = compare_budget(POINTS, 6.5, "ap50_95")  # the gated profile beats P3 alone
    assert tight.best_static.t1 == 1.0 and tight.best_dynamic.t1 == 0.3
    assert tight.dynamic_gain == pytest.approx(0.10) and not tight.static_wins
    wide = compare_budget(POINTS, 9.0, "ap50_95")  # P3+P4 without gates beats every gated profile
    assert wide.best_static.heads == "P3+P4 heads" and wide.dynamic_gain == pytest.approx(-0.05)
    assert wide.static_wins
    assert compare_budget(POINTS, 1.0, "ap50_95").to_dict()["dynamic_gain"] is None


def test_a_gated_profile_must_beat_the_static_network_by_the_minimum_gain() -> None:
    near_tie = [_pt(0.0, 1.0, 0.5000, 9.4), _pt(0.04, 1.0, 0.5004, 9.8)]
    strict = compare_budget(near_tie, 10.0, "ap50_95")
    assert not strict.static_wins and strict.choice(near_tie[1]) is near_tie[1]
    margin = compare_budget(near_tie, 10.0, "ap50_95", min_gain=0.001)
    assert margin.static_wins and margin.choice(near_tie[1]) is near_tie[0]
    assert margin.to_dict()["static_wins"] and margin.to_dict()["min_dynamic_gain"] == 0.001


def test_paper_point_and_model_summaries() -> None:
    assert is_paper_point({"gate_lambda": 0.2, "eps": 4.0, "gate_trunk_grad": 1.0})
    assert not is_paper_point({"gate_lambda": 0.3, "eps": 4.0})
    docs = [TrialResult("a", {"gate_lambda": 0.2}, TrialStatus.FINISHED, front=POINTS[:3], static=[POINTS[0], POINTS[3]],
                        train_metrics={"ap50": 0.7, "gate1_acc": 0.95}),
            TrialResult("b", {"gate_lambda": 0.5}, TrialStatus.FINISHED, front=POINTS[:1], static=[])]
    rows = [r.to_dict() for r in model_summaries(docs, "ap50_95", 20.0)]
    assert rows[0]["paper_point"] and not rows[1]["paper_point"]
    assert rows[0]["hypervolume"] > rows[1]["hypervolume"] > 0  # more of the front, more volume
    assert rows[0]["gate_accuracy"] == [0.95, None]


def test_a_budget_a_static_network_wins_is_exported_as_that_static_network(trained_tiny, tmp_path) -> None:
    from test_search import _latency

    from dh_tune.pipeline import Pipeline
    from dh_tune.search.phases import PhaseClock
    from dh_tune.search.records import SearchRequest
    from dh_tune.search.summary import finish

    static = [p for p in POINTS if p.static_exit]
    doc = TrialResult("t", {"gate_lambda": 0.2}, TrialStatus.FINISHED, checkpoint=str(trained_tiny), front=POINTS,
                      static=static)
    req = SearchRequest(pipeline=Pipeline(), budgets=[6.5, 9.0], out=tmp_path / "out", track=False)
    clock = PhaseClock()
    with clock.phase("trials"):
        pass
    with clock.phase("finish"):
        outcome = finish(req, [doc], {128: _latency(128, 1.0)}, None, clock)
    assert outcome.summary.splitlines()[-1].startswith("Time per phase: trials 0 s, finish ")
    tight, wide = outcome.budgets
    assert tight.candidate.t1 == 0.3
    assert wide.candidate.heads == "P3+P4 heads" and "static network wins" in wide.reason
    prof = load_profile(wide.profile_path)
    assert prof.thresholds == (0.0, 1.0)
    assert prof.doc["configuration"] == {"kind": "static", "heads": "P3+P4 heads", "gates_computed": [False, False]}
    assert prof.doc["comparison"]["dynamic_gain"] == pytest.approx(-0.05)
    assert "static network wins" in prof.doc["note"]
    gated = load_profile(tight.profile_path)
    assert gated.doc["configuration"]["kind"] == "dynamic" and gated.doc["comparison"]["dynamic_gain"] > 0
    index = json.loads(Path(outcome.index_path).read_text())
    assert {p["heads"] for p in index["static_points"]} == {"P3 head", "P3+P4 heads", "all heads"}
