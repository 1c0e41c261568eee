"""Resource arithmetic of the search (cluster, trial shape -> trials at once) and the bookkeeping of early
stopping (per-epoch Tune results, how a trial ended, what Optuna records of a stopped trial)."""
from __future__ import annotations

import json

import optuna
import pytest

from dh_tune.pipeline import Pipeline
from dh_tune.ray_setup import ResourceError
from dh_tune.search.cluster import NodeResources, TrialShape, cluster_capacity, fits, plan_concurrency, trial_shape
from dh_tune.search.early_stop import asha_scheduler, epoch_result, last_values, optuna_search_class, trial_outcome
from dh_tune.search.records import TrialResult, TrialStatus
from dh_tune.search.space import Dimension, SearchSpaceError, check_points
from dh_tune.search.trial_docs import most_at_once

N = NodeResources


@pytest.mark.parametrize(("nodes", "shape", "expected"), [
    ([N(4)], TrialShape(1, 1.0), 3),  # 3 x (1 + 0.01) fit in 4 CPUs, a fourth share does not
    ([N(4)], TrialShape(1, 0.99), 4),
    ([N(16, 8), N(16, 8)], TrialShape(2, 4.0, 1.0), 3),  # CPUs bind: 4 workers a node, 7 beside the shares
    ([N(64, 8), N(64, 8)], TrialShape(2, 8.0, 1.0), 7),  # GPUs hold 8 trials, the shares cost one
    ([N(3, 1), N(3, 1)], TrialShape(2, 1.0, 1.0), 1),  # one trial spans both nodes, one GPU each
    ([N(8, 1)], TrialShape(2, 1.0, 1.0), 0),  # two GPU workers, one GPU
    ([N(1.5), N(1.5)], TrialShape(1, 2.0), 0),  # no node holds one worker, whatever the total
])
def test_cluster_capacity_places_whole_workers_on_nodes(nodes, shape, expected) -> None:
    assert cluster_capacity(nodes, shape) == expected
    assert fits(nodes, shape, expected) and not fits(nodes, shape, expected + 1)


def test_one_worker_trains_in_the_trial_process_holding_the_workers_resources() -> None:
    """A 2-CPU machine runs one 2-CPU trial: its own process holds the 2 CPUs, with no share beside them."""
    shape = trial_shape(1, 2.0, False, [N(2)])
    assert shape.in_process and shape.resources() == {"CPU": 2.0} and cluster_capacity([N(2)], shape) == 1
    gpu = trial_shape(1, 8.0, True, [N(64, 2)])
    assert gpu.resources() == {"CPU": 8.0, "GPU": 1.0} and cluster_capacity([N(64, 2)], gpu) == 2
    assert "in the trial's process (8 CPU, 1 GPU)" in gpu.describe()


def test_workers_give_up_the_trial_share_only_where_that_runs_more_trials() -> None:
    # 8-GPU, 64-CPU nodes, 2 x 8-CPU workers: 8 trials instead of 7 when each worker gives up 0.005 CPU.
    shape = trial_shape(2, 8.0, True, [N(64, 8)] * 2)
    assert shape.cpus_per_worker == pytest.approx(7.995) and cluster_capacity([N(64, 8)] * 2, shape) == 8
    assert not shape.in_process and shape.resources() == {"CPU": 0.01}
    # GPUs bind, CPUs to spare: the pipeline's request stands.
    assert trial_shape(2, 8.0, True, [N(64, 2)]).cpus_per_worker == 8.0


def test_concurrency_is_the_least_of_cluster_cap_and_trials_and_one_trial_must_fit() -> None:
    shape = TrialShape(1, 0.99)
    assert plan_concurrency([N(4)], shape, trials=16).concurrent == 4
    plan = plan_concurrency([N(4)], shape, trials=16, cap=3)
    assert (plan.concurrent, plan.cluster_fits, plan.limited_by) == (3, 4, "search.max_concurrent")
    assert plan_concurrency([N(4)], shape, trials=2).limited_by == "trials"
    assert "3 trial(s) at once" in plan.describe()
    with pytest.raises(ResourceError, match=r"needs 2 worker\(s\) x \(8 CPU, 1 GPU\).*16 CPU 1 GPU"):
        plan_concurrency([N(16, 1)], TrialShape(2, 8.0, 1.0), trials=16)


def test_pipeline_refuses_rungs_between_reports() -> None:
    with pytest.raises(ValueError, match="grace_epochs \\(5\\) must be a multiple of report_every \\(2\\)"):
        Pipeline.model_validate({"search": {"report_every": 2, "early_stop": {"grace_epochs": 5}}})


def test_asha_rungs_stop_before_the_last_epoch_and_short_trials_run_without() -> None:
    search = Pipeline.model_validate({"search": {"report_every": 10,
                                                 "early_stop": {"grace_epochs": 50, "reduction_factor": 3}}}).search
    scheduler, line = asha_scheduler(search, 300)
    assert scheduler is not None and "at epochs 50, 150 " in line  # 450 lies past the training
    none, why = asha_scheduler(Pipeline().search, 1)  # quickstart: one fine-tuning epoch, nothing to stop early
    assert none is None and "no rung before the last" in why


def test_an_epoch_with_a_front_report_becomes_a_tune_result() -> None:
    metrics = {"epoch": 9, "front_hv": 0.25, "budget_ap": 0.4, "budget_latency_ms": 3.0, "budget_feasible": 1.0,
               "ap50": 0.5, "ap50_95": 0.3, "gate1_acc": 0.9, "gate2_acc": 0.8, "lr": 0.01}
    result = epoch_result(metrics)
    assert result == {"epoch": 9, "front_hv": 0.25, "ap": 0.4, "latency_ms": 3.0, "feasible": 1.0, "final": 0.0,
                      "ap50": 0.5, "ap50_95": 0.3, "gate1_acc": 0.9, "gate2_acc": 0.8}
    assert epoch_result({"epoch": 10, "ap50": 0.5}) is None  # an epoch between reports: Tune hears nothing
    assert trial_outcome(result, error=False) == "pruned"  # the trial ended on an epoch's report
    assert trial_outcome({"final": 1.0, "status": "finished"}, error=False) == "complete"
    assert trial_outcome({"final": 1.0, "status": "duplicate"}, error=False) == "complete"
    assert trial_outcome({"final": 1.0, "status": "failed"}, error=False) == "failed"
    assert trial_outcome(None, error=True) == "failed"
    assert last_values(result)["last_front_hv"] == 0.25 and "last_final" not in last_values(result)


def test_optuna_records_a_stopped_trial_as_pruned_with_its_last_values_and_a_failed_one_as_failed() -> None:
    from ray import tune

    storage = optuna.storages.InMemoryStorage()
    searcher = optuna_search_class()(space={"x": tune.uniform(0.0, 1.0)}, metric=["ap", "latency_ms"],
                                     mode=["max", "min"], storage=storage, study_name="s")
    for trial_id in ("a", "b", "c"):
        searcher.suggest(trial_id)
    searcher.on_trial_complete("a", {"epoch": 9, "front_hv": 0.0, "ap": 0.0, "latency_ms": 4.0, "final": 0.0})
    searcher.on_trial_complete("b", {"final": 1.0, "status": "failed", "ap": 0.0, "latency_ms": 0.0,
                                     "error": "FloatingPointError: loss became nan"})
    searcher.on_trial_complete("c", {"final": 1.0, "status": "finished", "ap": 0.5, "latency_ms": 3.0})
    a, b, c = optuna.load_study(study_name="s", storage=storage).trials
    assert a.state.name == "PRUNED" and a.values is None
    assert a.user_attrs == {"last_epoch": 9.0, "last_front_hv": 0.0, "last_ap": 0.0, "last_latency_ms": 4.0}
    assert b.state.name == "FAIL" and "loss became nan" in b.user_attrs["error"]
    assert c.state.name == "COMPLETE" and c.values == [0.5, 3.0]


def _ran(started: float, ended: float | None = None) -> TrialResult:
    return TrialResult("t", {}, TrialStatus.FINISHED, started=started, ended=ended)


def test_most_at_once_counts_overlapping_trials() -> None:
    docs = [_ran(0, 10), _ran(2, 5), _ran(4, 12), _ran(10, 11), _ran(3)]  # the last never ended: not counted
    assert most_at_once(docs) == 3
    assert most_at_once([_ran(0, 1), _ran(1, 2)]) == 1  # one after the other


def test_first_points_must_name_every_dimension_inside_its_range() -> None:
    dims = [Dimension("gate_lambda", "float", 0.01, 1.0, True), Dimension("lr_scale", "float", 0.0, 1.0)]
    check_points([{"gate_lambda": 0.2, "lr_scale": 0.0}], dims, "search.first_points")
    with pytest.raises(SearchSpaceError, match=r"search.first_points\[0\]: missing lr_scale"):
        check_points([{"gate_lambda": 0.2}], dims, "search.first_points")
    with pytest.raises(SearchSpaceError, match=r"\[1\].lr_scale: 2.0 lies outside \[0, 1\]"):
        check_points([{"gate_lambda": 0.2, "lr_scale": 0.0}, {"gate_lambda": 0.2, "lr_scale": 2.0}], dims, "x")
    with pytest.raises(SearchSpaceError, match="eps is not in the search space"):
        check_points([{"gate_lambda": 0.2, "lr_scale": 0.0, "eps": 4.0}], dims, "x")


def test_a_trial_lost_for_good_or_stopped_is_recorded_only_while_it_still_says_running(tmp_path) -> None:
    from dh_tune.search.early_stop import record_lost, record_stopped
    from dh_tune.search.trial_docs import read_result, write_result

    for trial_id, status in (("a", "running"), ("b", "finished"), ("c", "running"), ("d", "failed")):
        write_result(tmp_path / "trials" / trial_id, TrialResult.from_dict(
            {"trial_id": trial_id, "params": {}, "status": status, "error": "ActorDiedError: stopped"}))
    stop = {"epoch": 9, "front_hv": 0.0, "ap": 0.0, "latency_ms": 4.0, "final": 0.0}
    record_lost(tmp_path, "a", "the trial failed 3 time(s), the last: NodeDiedError")
    record_lost(tmp_path, "b", "late news")
    record_stopped(tmp_path, "b", stop, None)
    record_stopped(tmp_path, "c", stop, None)
    record_stopped(tmp_path, "d", stop, None)  # it recorded itself failed as the stop reached it
    a, b, c, d = (json.loads((tmp_path / "trials" / t / "result.json").read_text()) for t in "abcd")
    assert a["status"] == "failed" and "NodeDiedError" in a["error"] and a["ended"] > 0
    assert b["status"] == "finished" and b["error"] != "late news"  # a trial that recorded its own end keeps it
    assert c["status"] == "pruned" and c["stopped_epoch"] == 9 and c["last"]["last_latency_ms"] == 4.0
    assert d["status"] == "pruned" and "error" not in d
    ended = c["ended"]
    record_stopped(tmp_path, "c", stop, None)  # recorded again once the processes are gone: unchanged
    assert read_result(tmp_path / "trials" / "c").to_dict() == {**c, "ended": ended}
