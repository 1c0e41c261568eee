"""Threshold search: profiles and their schema, the inner search, and the whole command end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from latency_docs import part, table_document

from dh_tune.latency import LatencyTable, expected_latency
from dh_tune.search.inner import DeploymentSpace, front_of, inner_search
from dh_tune.search.records import FrontPoint
from dh_tune.search.space import SearchSpaceError, load_space, train_overrides
from dh_tune.threshold_profiles import ProfileError, check_checkpoint, load_profile, make_profile, save_profile

TORCH = {"name": "torch", "version": "2.13.0"}


def _candidate(**kw) -> dict:
    base = {"imgsz": 128, "t1": 0.4, "t2": 0.6, "ap50": 0.5, "ap50_95": 0.3, "latency_ms": 10.0,
            "latency_p90_ms": 12.0, "exit_shares": (0.2, 0.3, 0.5), "gate_accuracy": (0.9, 0.8),
            "gate_recall": (0.7, 0.6), "mean_gmacs": 0.1}
    return {**base, **kw}


def _profile(sha: str = "a" * 64) -> dict:
    return make_profile(device_name="Test CPU", table_digest="b" * 64, runtime=TORCH,
                        budget_ms=20, feasible=True,
                        candidate=FrontPoint.from_dict(_candidate()), metric="ap50_95", hyperparameters={"gate_lambda": 0.2},
                        checkpoint_rel="checkpoints/x.pt", checkpoint_sha256=sha, model={"scale": [0.33, 0.25], "nc": 3})


def test_profile_round_trip_and_schema_errors(tmp_path: Path) -> None:
    path = save_profile(_profile(), tmp_path / "p.json")
    prof = load_profile(path)
    assert prof.thresholds == (0.4, 0.6) and prof.imgsz == 128
    assert prof.checkpoint_path() == tmp_path / "checkpoints" / "x.pt"
    doc = json.loads(path.read_text())
    doc["thresholds"] = [0.4, 1.5]
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match=r"p.json: invalid profile at thresholds/1"):
        load_profile(path)
    path.write_text("{not json")
    with pytest.raises(ProfileError, match="not JSON"):
        load_profile(path)


def test_profile_refuses_another_checkpoint(tmp_path: Path) -> None:
    prof = load_profile(save_profile(_profile("c" * 64), tmp_path / "p.json"))
    check_checkpoint(prof, "same.pt", "c" * 64)
    with pytest.raises(ProfileError, match="made for checkpoint sha256 cccccccccccc"):
        check_checkpoint(prof, "other.pt", "d" * 64)


def test_search_space_file_is_validated(tmp_path: Path) -> None:
    dims = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "gate_loss.yaml")
    assert {d.name for d in dims} == {"gate_lambda", "lambda_pos_1", "lambda_pos_2", "eps", "gate_trunk_grad"}
    by_name = {d.name: d for d in dims}
    # The region that keeps the detector's accuracy is inside the space: small lambda, detached gates.
    assert by_name["gate_lambda"].low <= 0.0125 and by_name["gate_trunk_grad"].low == 0.0
    bad = tmp_path / "space.yaml"
    bad.write_text("gate_lambda: {type: float, low: 1.0, high: 0.5}\n")
    with pytest.raises(SearchSpaceError, match="gate_lambda: low"):
        load_space(bad)
    bad.write_text("gate_trunk_grad: {type: float, low: 0.0, high: 1.5}\n")
    with pytest.raises(SearchSpaceError, match=r"gate_trunk_grad: a share of the gradient lies in \[0, 1\]"):
        load_space(bad)
    bad.write_text("lambda: {type: float, low: 0.1, high: 0.5}\n")
    with pytest.raises(SearchSpaceError, match="lambda: unknown hyperparameter"):
        load_space(bad)
    assert train_overrides({"lambda_pos_2": 3.0, "eps": 5.0, "lr_scale": 0.5}, (0.28, 2.0)) == {
        "loss": {"eps": 5.0, "lambda_pos": [0.28, 3.0]}, "lr_scale": 0.5}


def _latency(imgsz: int, scale_ms: float) -> LatencyTable:
    parts = {"preprocess": 0.2, "stage1": 4.0, "gate1": 0.2, "stage2": 1.5, "gate2": 0.2, "stage3": 1.0, "nms": 0.3}
    return LatencyTable.from_dict(table_document(
        {"name": "Test CPU", "kind": "cpu", "threads": 2, "torch": "2.13.0"},
        {"scale": "n", "nc": 3, "imgsz": imgsz, "batch": 1, "checkpoint_sha256": None},
        {k: part(v * scale_ms, v * scale_ms * 1.2, 10) for k, v in parts.items()}, "2026-01-01T00:00:00+00:00"))


def test_inner_search_front_latency_and_hypervolume(exit_tables) -> None:
    latency = {s: _latency(s, s / 128) for s in exit_tables}
    space = DeploymentSpace(exit_tables, latency)
    result = inner_search(space, metric="ap50", grid_steps=11, n_trials=60, seed=0)
    assert len(result.candidates) >= 11 * 11 * len(exit_tables)
    for c in result.front[:5]:
        levels = exit_tables[c.imgsz].exit_levels(c.t1, c.t2)
        assert c.latency_ms == pytest.approx(expected_latency(levels, latency[c.imgsz], (c.t1, c.t2))[0])
        assert c.ap50 == pytest.approx(exit_tables[c.imgsz].evaluate(c.t1, c.t2).ap50)
    lat = [c.latency_ms for c in result.front]
    ap = [c.ap50 for c in result.front]
    assert lat == sorted(lat) and ap == sorted(ap)  # a front: slower only when more accurate
    assert 0.5 <= result.hv_ratio <= 1.01
    assert front_of(result.candidates, "ap50") == result.front
    with pytest.raises(ValueError, match="no latency table"):
        DeploymentSpace(exit_tables, {})


def test_chosen_on_calibration_images_reported_on_test_images_budgeted_on_p90(exit_tables) -> None:
    latency = {s: _latency(s, s / 128) for s in exit_tables}
    n = exit_tables[128].num_images
    cal, test = np.arange(0, n, 2), np.arange(1, n, 2)
    space = DeploymentSpace({s: t.subset(cal) for s, t in exit_tables.items()}, latency,
                            test_tables={s: t.subset(test) for s, t in exit_tables.items()}, budget_stat="p90")
    result = inner_search(space, metric="ap50", grid_steps=6, n_trials=20, seed=0)
    lat = [c.budget_latency_ms for c in result.front]
    assert lat == sorted(lat) and all(c.budget_latency_ms == c.latency_p90_ms for c in result.front)
    for c in result.front[:4]:
        held = space.held_out(c)
        assert held.ap50 == c.ap50 and held.test is not None
        assert held.test.ap50 == pytest.approx(exit_tables[c.imgsz].subset(test).evaluate(c.t1, c.t2).ap50)
        assert held.to_dict()["test"]["latency_p90_ms"] > 0
    plain = DeploymentSpace({s: t.subset(cal) for s, t in exit_tables.items()}, latency)
    assert plain.held_out(result.front[0]).test is None  # no test images: nothing to report on


def test_a_trial_setup_comes_back_whole_from_the_plain_form_ray_hands_to_trials() -> None:
    import pickle
    from dataclasses import asdict, replace

    from dh_tune.search.trial import TrialSetup
    from dh_tune.tracking import Tracking

    setup = TrialSetup(pipeline={"name": "tiny"}, out_dir="out", dataset="data.yaml", base_checkpoint=None,
                       latency_tables={96: "t96.json"}, budget_ms=5.0, cpus_per_worker=1.0,
                       tracking=Tracking("sqlite:///m.db", "parent-run", experiment="tiny"))
    back = TrialSetup.from_dict(asdict(setup))
    assert back == setup and isinstance(back.tracking, Tracking)
    assert pickle.loads(pickle.dumps(back)) == setup
    assert TrialSetup.from_dict(asdict(replace(setup, tracking=None))).tracking is None


def test_budget_statistic_and_selection_rule_come_from_the_command_line_or_the_pipeline(monkeypatch) -> None:
    from dh_tune.search import __main__ as cli
    from dh_tune.search.records import SearchRequest

    seen: list[SearchRequest] = []

    def fake_search(req: SearchRequest):
        seen.append(req)
        raise KeyboardInterrupt  # stop before anything runs

    monkeypatch.setattr("dh_tune.search.driver.run_search", fake_search)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["--budget-ms", "5", "--budget-stat", "p99", "--select", "safest"])
    assert (seen[0].pipeline.search.budget_stat, seen[0].pipeline.search.select) == ("p99", "safest")
    with pytest.raises(KeyboardInterrupt):
        cli.main(["--budget-ms", "5"])
    assert (seen[1].pipeline.search.budget_stat, seen[1].pipeline.search.select) == ("p90", "best")
    with pytest.raises(SystemExit):
        cli.parse_args(["--budget-ms", "5", "--budget-stat", "p50"])


def test_epoch_front_scores_the_same_front_the_inner_search_finds(trained_tiny, tiny_dataset, exit_tables) -> None:
    """The per-epoch report is the hypervolume of the static + grid front of the same exit table, as a share of
    the fixed reference box; a trained model covers more of it than an untrained one, which covers none."""
    from dh_tune.data import load_dataset
    from dh_tune.model import DHNet
    from dh_tune.model.checkpoint import load_model
    from dh_tune.search.epoch_front import EpochFront, reference_latency, report_records
    from dh_tune.search.inner import DeploymentSpace, front_hypervolume, front_of, grid_sweep, static_sweep

    val = load_dataset(tiny_dataset).splits["val"]
    assert [r.path for r in report_records(val, np.arange(len(val)), 3)] == [val[i].path for i in (0, 4, 7)]
    table = _latency(96, 1.0)
    scorer = EpochFront(list(val), 96, table, 4.0, "ap50", "p90", 50.0, grid_steps=6, every=3)
    assert [e for e in range(10) if scorer.due(e, 10)] == [2, 5, 8, 9]  # every 3 epochs and the last
    model, _ = load_model(trained_tiny)
    report = scorer(model, torch.device("cpu"))
    space = DeploymentSpace({96: exit_tables[96]}, {96: table}, budget_stat="p90")
    front = front_of(static_sweep(space) + grid_sweep(space, 6), "ap50")
    ref = reference_latency(table, "p90")
    assert report["front_hv"] == pytest.approx(front_hypervolume(front, "ap50", ref) / ref)
    assert 0.0 < report["front_hv"] < 1.0 and report["budget_feasible"] == 1.0
    assert report["budget_ap"] == pytest.approx(max(c.ap50 for c in front if c.budget_latency_ms <= 50.0))
    assert scorer(DHNet((0.33, 0.25), nc=model.nc), torch.device("cpu"))["front_hv"] < report["front_hv"]
