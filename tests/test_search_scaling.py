"""The search on more logical CPUs than one trial needs: trials overlap, a hopeless trial is stopped early and
recorded as pruned (Optuna, its result, MLflow), and trials whose process is killed (one-worker trials train in
it) finish after a restart that resumes their training."""
from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
import yaml

from dh_tune.search.__main__ import main as search_main
from dh_tune.search.trial_docs import most_at_once, result_docs

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def ray_with_4_cpus(monkeypatch, tmp_path):
    """A fresh in-process Ray with 4 logical CPUs whose workers run the kill hook of tests/train_hooks.py."""
    import ray

    from dh_tune.ray_setup import init_ray

    ray.shutdown()
    monkeypatch.setenv("DH_TUNE_EPOCH_HOOKS", "train_hooks:kill_search_processes_once")
    monkeypatch.setenv("DH_TUNE_TEST_KILL_MARKERS", str(tmp_path / "killed"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(TESTS), os.environ.get("PYTHONPATH")))))
    (tmp_path / "killed").mkdir()
    init_ray(num_cpus=4)
    yield tmp_path / "killed"
    ray.shutdown()


def _epochs_by_process(train_dir: Path) -> list[tuple[int, int]]:
    return [(int(e), int(p)) for e, p in (line.split() for line in (train_dir / "epochs.log").read_text().splitlines())]


def test_trials_overlap_a_hopeless_one_is_pruned_and_killed_ones_resume(
        ray_with_4_cpus, tiny_dataset, tiny_pipeline_doc, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    space = tmp_path / "space.yaml"
    space.write_text("gate_lambda: {type: float, low: 0.05, high: 0.5, log: true}\n"
                     "lr_scale: {type: float, low: 0.0, high: 1.0}\n")
    # One step an epoch (8 images, batch 8): no warm-up and a doubled rate give the trials that learn a front
    # (AP50 above 0) from epoch 5 in each of three seeds tried, so at the rung at epoch 9 the hopeless one is below.
    doc = tiny_pipeline_doc(tiny_dataset, imgsz=64, epochs=12, width=0.125, lr0=0.02, warmup_epochs=0)
    doc["ray"] = {"workers": 1, "cpus_per_worker": 1, "max_failures": 1}
    # Four trials from scratch, three at once: the paper's point and two more train; the fourth (learning rate 0,
    # so its front stays empty) starts when one of them ends, and is compared with them at epoch 9.
    doc["search"].update(trials=4, warm_start=False, trial_epochs=12, deploy_imgsz=[64], search_space=str(space),
                         max_concurrent=3, report_every=3, report_images=8, metric="ap50",
                         early_stop={"grace_epochs": 9, "reduction_factor": 2},
                         first_points=[{"gate_lambda": 0.1, "lr_scale": 1.0}, {"gate_lambda": 0.3, "lr_scale": 1.0},
                                       {"gate_lambda": 0.2, "lr_scale": 0.0}])
    pipeline = tmp_path / "tiny.yaml"
    pipeline.write_text(yaml.safe_dump(doc))
    out, uri = tmp_path / "search", f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert search_main(["--budget-ms", "50", "--pipeline", str(pipeline), "--out", str(out), "--tracking-uri", uri,
                        "--runtime", "torch"]) == 0

    docs = {d["trial_id"]: d for d in (json.loads(p.read_text()) for p in (out / "trials").glob("*/result.json"))}
    assert sorted(d["status"] for d in docs.values()) == ["finished", "finished", "finished", "pruned"]
    assert most_at_once([doc for _, doc in result_docs(out)]) >= 2  # trials overlapped in time
    state = json.loads((out / "search.json").read_text())["concurrency"]
    assert state["planned"] == 3 and state["limited_by"] == "search.max_concurrent" and state["cluster_fits"] == 4

    # The hopeless trial was stopped at ASHA's rung, not trained to the end, and is PRUNED in Optuna.
    (pruned,) = (d for d in docs.values() if d["status"] == "pruned")
    assert pruned["params"]["lr_scale"] == 0.0 and pruned["stopped_epoch"] == 9
    assert pruned["last"]["last_front_hv"] == 0.0
    assert max(e for e, _ in _epochs_by_process(out / "trials" / pruned["trial_id"] / "train")) < 12
    study = optuna.load_study(study_name="outer", storage=f"sqlite:///{out / 'optuna.db'}")
    states = {t.params["lr_scale"]: t for t in study.trials if t.params["lr_scale"] == 0.0 or t.state.name == "PRUNED"}
    assert [t.state.name for t in states.values()] == ["PRUNED"]
    assert states[0.0].user_attrs["last_epoch"] == 9 and "last_latency_ms" in states[0.0].user_attrs
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 3

    # Killed after their 2nd and 4th epochs: each trial starts again and resumes from its last checkpoint.
    worker_run = Path((ray_with_4_cpus / "worker").read_text())
    trial_run = Path((ray_with_4_cpus / "trial").read_text())
    for run in (worker_run, trial_run):
        epochs = _epochs_by_process(run)
        first_pid = epochs[0][1]
        resumed = [e for e, p in epochs if p != first_pid]
        assert resumed and 1 < min(resumed), epochs  # a new process went on from a checkpoint, not from epoch 1
        assert {e for e, _ in epochs} == set(range(1, 13))
        assert docs[run.parent.name]["status"] == "finished"
        assert docs[run.parent.name]["attempt"] == 2  # Tune started the trial again after its process was lost

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                              filter_string="tags.search_role = 'trial'")
    by_trial = {r.data.tags["trial_id"]: r for r in runs}
    assert by_trial[pruned["trial_id"]].info.status == "KILLED"
    assert by_trial[pruned["trial_id"]].data.tags["pruned"] == "true"
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED", "FINISHED", "KILLED"]
    assert "front_hv" in by_trial[trial_run.parent.name].data.metrics  # per-epoch reports reach the trial's run
    (parent,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                                   filter_string="tags.search_role = 'parent'")
    assert parent.data.tags["concurrent_trials_planned"] == "3" and parent.data.metrics["concurrent_trials_seen"] >= 2
    assert parent.data.metrics["pruned_trials"] == 1
