"""`python -m dh_tune.search` end to end: training trials through Ray Tune and Ray Train, profiles,
MLflow runs (local store and a real tracking server), resume without retraining."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import tiny_pipeline_doc
from dh_tune.profiles import load_profile
from dh_tune.runtimes import fastest_installed
from dh_tune.search.__main__ import main as search_main

pytestmark = pytest.mark.slow


def _write_pipeline(tmp_path: Path, data_yaml: str, **search) -> Path:
    doc = tiny_pipeline_doc(data_yaml, epochs=2)
    doc["search"].update(search)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("**/weights/last.pt")}


def test_search_trains_trials_exports_profiles_logs_mlflow_and_resumes(tiny_dataset, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    pipeline = _write_pipeline(tmp_path, tiny_dataset)
    out, uri = tmp_path / "search", f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--budget-ms", "3", "--budget-ms", "60", "--pipeline", str(pipeline), "--out", str(out),
            "--tracking-uri", uri]
    assert search_main(args) == 0

    trials = sorted(p.parent.name for p in (out / "trials").glob("*/result.json"))
    assert len(trials) == 2
    docs = [json.loads((out / "trials" / t / "result.json").read_text()) for t in trials]
    assert all(d["status"] == "finished" for d in docs)
    assert docs[0]["params"] != docs[1]["params"]
    (device_dir,) = (out / "profiles").iterdir()
    index = json.loads((device_dir / "index.json").read_text())
    assert [b["budget_ms"] for b in index["budgets"]] == [3.0, 60.0]
    for b in index["budgets"]:
        prof = load_profile(device_dir / b["file"])
        assert prof.runtime == fastest_installed() != "torch"  # timed in the fastest installed runtime by default
        assert prof.checkpoint_path().is_file()
        assert prof.doc["budget_ms"] == b["budget_ms"]
        assert prof.doc["configuration"]["kind"] in ("static", "dynamic") and "comparison" in prof.doc
    assert (device_dir / "pareto_front.png").stat().st_size > 1000
    # Static YOLOv5 is on the same front: the base (a plain detector, its gates on detached features) run with
    # one, two and three heads at every deployment size, no gate computed.
    base_doc = json.loads((out / "reference" / "base" / "result.json").read_text())
    assert {(p["imgsz"], p["heads"]) for p in base_doc["static"]} == {
        (s, h) for s in (96, 128) for h in ("P3 head", "P3+P4 heads", "all heads")}
    assert {(p["imgsz"], p["heads"]) for p in index["static_points"] if p["trial_id"] == "base"} == {
        (p["imgsz"], p["heads"]) for p in base_doc["static"]}
    assert not (out / "static").exists()  # the base is the plain detector: no second training
    roles_in_index = {m["role"] for m in index["models"]}
    assert roles_in_index == {"base", "trial"} and sum(m["paper_point"] for m in index["models"]) == 1

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    roles = [r.data.tags.get("search_role") for r in runs]
    assert roles.count("trial") == 2 and roles.count("base") == 1 and roles.count("parent") == 1
    assert roles.count("static") == 6  # 2 sizes x (P3, P3+P4, all heads) of the static YOLOv5
    parent = next(r for r in runs if r.data.tags.get("search_role") == "parent")
    profiles = client.search_runs([exp.experiment_id], filter_string="tags.pareto = 'true'")
    assert sorted(float(r.data.tags["budget_ms"]) for r in profiles) == [3.0, 60.0]
    for r in profiles:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id and r.data.tags["device"]
        assert r.data.tags["runtime"] == fastest_installed()
        assert {"t1", "t2", "imgsz"} <= set(r.data.params) and "latency_mean_ms" in r.data.metrics
        names = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert any(n.endswith(".json") for n in names) and "pareto_front.png" in names

    before = _mtimes(out)
    assert search_main(args) == 0  # same command, same --out: resumes, trains nothing again
    assert _mtimes(out) == before
    assert sorted(p.parent.name for p in (out / "trials").glob("*/result.json")) == trials
    profiles = client.search_runs([exp.experiment_id], filter_string="tags.pareto = 'true'")
    assert len(profiles) == 2  # the profile runs were replaced, not duplicated
    static_runs = client.search_runs([exp.experiment_id], filter_string="tags.search_role = 'static'")
    assert len(static_runs) == 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, data: dict | None = None) -> dict:
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"{}")


def test_search_logs_to_a_real_mlflow_server(trained_tiny, tiny_dataset, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not come up")
                time.sleep(0.5)
        pipeline = _write_pipeline(tmp_path, tiny_dataset)
        out = tmp_path / "search"
        assert search_main(["--budget-ms", "50", "--checkpoint", str(trained_tiny), "--pipeline", str(pipeline),
                            "--out", str(out), "--tracking-uri", base, "--runtime", "torch"]) == 0
        exp = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=tiny")["experiment"]
        runs = _get(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]],
                                                          "filter": "tags.pareto = 'true'"})["runs"]
        assert len(runs) == 1
        tags = {t["key"]: t["value"] for t in runs[0]["data"]["tags"]}
        assert tags["budget_ms"] == "50" and tags["device"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_unreachable_tracking_server_still_exports_profiles(trained_tiny, tiny_dataset, tmp_path, capsys,
                                                            monkeypatch) -> None:
    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    pipeline = _write_pipeline(tmp_path, tiny_dataset)
    out = tmp_path / "search"
    assert search_main(["--budget-ms", "50", "--checkpoint", str(trained_tiny), "--pipeline", str(pipeline),
                        "--out", str(out), "--tracking-uri", f"http://127.0.0.1:{_free_port()}",
                        "--runtime", "torch"]) == 0
    (profile,) = (out / "profiles").glob("*/budget-50ms.json")
    assert load_profile(profile).runtime == "torch"  # --runtime torch keeps eager PyTorch timings
    assert "MLflow" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Fixed parameter gate_lambda")  # the paper's point lies outside this space
def test_a_diverging_trial_is_recorded_as_failed_and_the_search_goes_on(tiny_dataset, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    space = tmp_path / "space.yaml"  # any lambda sampled from here makes the loss overflow
    space.write_text("gate_lambda: {type: float, low: 1.0e+39, high: 1.0e+40, log: true}\n")
    doc = tiny_pipeline_doc(tiny_dataset, epochs=1)
    doc["train"]["loss"] = {"gate_trunk_grad": 1.0}  # end to end: the base is no plain detector any more
    doc["ray"]["max_failures"] = 0
    doc["search"].update(search_space=str(space), deploy_imgsz=[96])
    pipeline = tmp_path / "tiny.yaml"
    pipeline.write_text(yaml.safe_dump(doc))
    out = tmp_path / "search"
    # The first trial is the paper's point (lambda 0.2); the second samples the bad range and fails.
    assert search_main(["--budget-ms", "50", "--pipeline", str(pipeline), "--out", str(out), "--no-mlflow",
                        "--runtime", "torch"]) == 0
    docs = {d["status"]: d for d in (json.loads(p.read_text()) for p in (out / "trials").glob("*/result.json"))}
    assert set(docs) == {"finished", "failed"}
    failed = docs["failed"]
    assert "loss became" in failed["error"] + failed.get("traceback", "") and failed["params"]["gate_lambda"] >= 1e39
    (device_dir,) = (out / "profiles").iterdir()
    index = json.loads((device_dir / "index.json").read_text())
    assert index["failed_trials"] == 1 and index["trials"] == 1
    assert (device_dir / "budget-50ms.json").is_file()
    # An end-to-end base changed its detector, so a static YOLOv5 was trained with gate weight 0 to compare with.
    static = json.loads((out / "reference" / "static" / "result.json").read_text())
    assert static["params"]["gate_lambda"] == 0.0 and {p["heads"] for p in static["static"]} == {
        "P3 head", "P3+P4 heads", "all heads"}
    assert all(p["static_exit"] for p in static["front"])  # its untrained gates are never used
    assert {p["trial_id"] for p in index["static_points"]} >= {"static", "base"}
