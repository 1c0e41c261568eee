"""The search's records through their JSON forms: what earlier searches wrote is read back and written unchanged."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dh_tune.search.records import FrontPoint, HeldOut, ReportedPoint, TrialResult, TrialStatus
from dh_tune.search.trial_docs import ended_trials, read_result, result_docs, write_result

# A finished trial's result.json as the search wrote it before its records were typed (captured from that code).
FINISHED_TRIAL = """{
 "trial_id": "abc_00000", "params": {"gate_lambda": 0.2, "eps": 4.0}, "status": "finished",
 "started": 1700000000.5, "attempt": 1, "pid": 4242, "resumed_from": "old_00001",
 "loss": {"gate_lambda": 0.2, "lambda_pos_1": 0.28, "lambda_pos_2": 2.0, "eps": 4.0, "gate_trunk_grad": 0.0},
 "checkpoint": "/o/trials/abc_00000/train/weights/best.pt",
 "train_metrics": {"ap50": 0.7, "ap50_95": 0.45, "gate1_acc": 0.9}, "freeze": "none", "mlflow_run_id": null,
 "cache_dir": "/o/trials/abc_00000/cache",
 "front": [{"imgsz": 128, "t1": 0.25, "t2": 0.75, "ap50": 0.61, "ap50_95": 0.42, "latency_ms": 5.5,
            "latency_p90_ms": 6.25, "exit_shares": [0.2, 0.3, 0.5], "gate_accuracy": [0.9, 0.8],
            "gate_recall": [0.7, 0.6], "mean_gmacs": 0.123, "source": "optuna", "latency_p99_ms": 7.5,
            "budget_stat": "p90",
            "test": {"ap50": 0.6, "ap50_95": 0.4, "exit_shares": [0.25, 0.25, 0.5], "latency_ms": 5.25,
                     "latency_p90_ms": 6.5, "latency_p99_ms": 7.75},
            "static_exit": null, "heads": "gated", "budget_latency_ms": 6.25}],
 "static": [{"imgsz": 128, "t1": 1.0, "t2": 1.0, "ap50": 0.3, "ap50_95": 0.2, "latency_ms": 3.0,
             "latency_p90_ms": 3.5, "exit_shares": [1.0, 0.0, 0.0], "gate_accuracy": [1.0, 1.0],
             "gate_recall": [0.0, 0.0], "mean_gmacs": 0.05, "source": "static", "latency_p99_ms": 4.0,
             "budget_stat": "p90", "test": null, "static_exit": 1, "heads": "P3 head", "budget_latency_ms": 3.5}],
 "hv_ratio": 0.97, "point": {"ap": 0.42, "latency_ms": 6.25, "feasible": 1.0, "hv_ratio": 0.97},
 "evaluated": 250,
 "holdout": {"calibration_images": 2, "test_images": 1, "seed": 0, "calibration_indices": [0, 2],
             "test_indices": [1]},
 "ended": 1700000100.25
}"""

# A reference model's result (OUT/reference/base) and a trial the scheduler stopped, as the search wrote them.
REFERENCE = """{"trial_id": "base", "role": "base", "status": "finished", "checkpoint": "/o/base/weights/best.pt",
 "key": {"checkpoint_sha256": "ab", "tables": {"128": "cd"}, "budget_ms": 10.0, "static_only": false},
 "checkpoint_sha256": "ab",
 "params": {"gate_lambda": 0.2, "lambda_pos_1": 0.28, "lambda_pos_2": 2.0, "eps": 4.0, "gate_trunk_grad": 0.0},
 "loss": {"gate_lambda": 0.2, "lambda_pos_1": 0.28, "lambda_pos_2": 2.0, "eps": 4.0, "gate_trunk_grad": 0.0},
 "train_metrics": {"ap50": 0.5}, "cache_dir": "/o/reference/base/cache", "front": [], "static": [],
 "hv_ratio": NaN, "point": {"ap": 0.0, "latency_ms": 3.5, "feasible": 0.0, "hv_ratio": NaN}, "evaluated": 3,
 "holdout": {}}"""
PRUNED = """{"trial_id": "abc_00002", "params": {"gate_lambda": 0.5, "eps": 3.0}, "status": "pruned",
 "started": 1.0, "attempt": 1, "pid": 7,
 "loss": {"gate_lambda": 0.5, "lambda_pos_1": 0.28, "lambda_pos_2": 2.0, "eps": 3.0, "gate_trunk_grad": 0.0},
 "ended": 2.0, "stopped_epoch": 3, "last": {"last_epoch": 3.0, "last_latency_ms": 4.0},
 "point": {"ap": 0.0, "latency_ms": 4.0, "feasible": 0.0, "hv_ratio": 0.0}, "resumed_by": "x",
 "written_by_a_later_version": [1, 2]}"""


def _same_json(a: object, b: object) -> bool:
    """Equal as JSON text (NaN written as NaN on both sides)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize("text", [FINISHED_TRIAL, REFERENCE, PRUNED], ids=["finished", "reference", "pruned"])
def test_a_result_document_reads_back_typed_and_writes_the_same_keys_and_values(text: str, tmp_path: Path) -> None:
    doc = json.loads(text)
    record = TrialResult.from_dict(doc)
    assert isinstance(record.status, TrialStatus) and record.trial_id == doc["trial_id"]
    assert _same_json(record.to_dict(), doc)
    assert _same_json(TrialResult.from_dict(record.to_dict()).to_dict(), doc)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "result.json").write_text(text)
    back = read_result(tmp_path / "t")
    assert back is not None
    write_result(tmp_path / "t", back)
    assert _same_json(json.loads((tmp_path / "t" / "result.json").read_text()), doc)


def test_a_finished_trial_written_before_typing_is_read_as_its_fields(tmp_path: Path) -> None:
    record = TrialResult.from_dict(json.loads(FINISHED_TRIAL))
    assert list(record.to_dict()) == list(json.loads(FINISHED_TRIAL))  # a trained trial's keys keep their order
    assert record.finished and record.status == "finished" and record.mlflow_run_id is None
    (front,), (static,) = record.front, record.static
    assert front.test == HeldOut(0.6, 0.4, (0.25, 0.25, 0.5), 5.25, 6.5, 7.75)
    assert front.budget_latency_ms == 6.25 and not front.is_static and front.heads == "gated"
    assert static.is_static and static.static_exit == 1 and static.heads == "P3 head"
    assert record.point == ReportedPoint(0.42, 6.25, 1.0, 0.97)
    assert record.hyperparameters["gate_trunk_grad"] == 0.0  # the loss section, over the sampled params
    assert [p.trial_id for p in record.points()] == ["abc_00000", "abc_00000"]
    (tmp_path / "trials" / "abc_00000").mkdir(parents=True)
    (tmp_path / "trials" / "abc_00000" / "result.json").write_text(FINISHED_TRIAL)
    assert [d.trial_id for d in ended_trials(tmp_path)] == ["abc_00000"]
    assert [d.trial_id for _, d in result_docs(tmp_path)] == ["abc_00000"]


def test_unknown_keys_are_kept_and_the_status_stays_a_bare_string() -> None:
    record = TrialResult.from_dict(json.loads(PRUNED))
    assert record.extra == {"written_by_a_later_version": [1, 2]} and record.resumed_by == "x"
    text = json.dumps(record.to_dict())
    assert '"status": "pruned"' in text and "TrialStatus" not in text


def test_a_trial_names_its_mlflow_run_beside_its_checkpoint_even_without_one() -> None:
    running = TrialResult("t", {}, TrialStatus.RUNNING, started=1.0)
    assert "mlflow_run_id" not in running.to_dict() and "checkpoint" not in running.to_dict()
    trained = TrialResult("t", {}, TrialStatus.FINISHED, checkpoint="best.pt")
    assert trained.to_dict()["mlflow_run_id"] is None
    reference = TrialResult("base", {}, TrialStatus.FINISHED, role="base", checkpoint="best.pt")
    assert "mlflow_run_id" not in reference.to_dict()


def test_a_front_point_round_trips_through_its_json_form() -> None:
    doc = json.loads(FINISHED_TRIAL)["front"][0]
    point = FrontPoint.from_dict(doc)
    written = json.loads(json.dumps(point.to_dict()))
    assert written == doc and list(written) == list(doc)  # same keys and values, in the same order
    pooled = point.of_trial("abc_00000")
    assert json.loads(json.dumps(pooled.to_dict())) == {**doc, "trial_id": "abc_00000"}
    assert FrontPoint.from_dict(pooled.to_dict()) == pooled


def test_a_point_written_before_budget_statistics_compares_its_mean() -> None:
    doc = {"imgsz": 64, "t1": 0.0, "t2": 1.0, "ap50": 0.5, "ap50_95": 0.3, "latency_ms": 4.0, "latency_p90_ms": 5.0,
           "exit_shares": [0.0, 1.0, 0.0], "gate_accuracy": [1.0, 1.0], "gate_recall": [1.0, 1.0],
           "mean_gmacs": 0.1, "static_exit": 2, "heads": "P3+P4 heads"}
    point = FrontPoint.from_dict(doc)
    assert point.budget_latency_ms == 4.0 and point.heads == "P3+P4 heads" and math.isnan(point.latency_p99_ms)


def test_a_held_out_record_round_trips() -> None:
    held = HeldOut(0.6, 0.4, (0.25, 0.25, 0.5), 5.25, 6.5, 7.75)
    assert HeldOut.from_dict(held.to_dict()) == held
    assert held.latency("p90") == 6.5 and held.ap("ap50") == 0.6
    assert ReportedPoint.from_dict(ReportedPoint.nothing(3.0).to_dict()) == ReportedPoint(0.0, 3.0, 0.0, 0.0)


def test_phase_clock_sums_phases_over_runs_and_counts_the_running_one() -> None:
    from dh_tune.search.phases import PhaseClock

    clock = PhaseClock(earlier={"device tables": 30.0, "base training": 90.0})
    with clock.phase("base training"):
        inside = clock.totals()
    assert inside["base training"] >= 90.0 and list(inside) == ["device tables", "base training"]
    with clock.phase("trials"):
        pass
    totals = clock.totals()
    assert totals["device tables"] == 30.0 and 90.0 <= totals["base training"] < 91.0 and totals["trials"] < 1.0
    line = clock.line()
    assert line.startswith("Time per phase (this search's earlier runs included): device tables 30 s, "
                           "base training 1.5 min, trials 0 s; total 2.0 min")
    assert PhaseClock().line() == "Time per phase: nothing timed"
