"""`python -m dh_tune.search` end to end: training trials through Ray Tune and Ray Train, profiles,
MLflow runs (local store and a real tracking server), resume after kill -9 without retraining or repeating a
point, repair of damaged files."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from dh_tune.runtimes import fastest_installed
from dh_tune.search.__main__ import main as search_main
from dh_tune.search.space import PAPER_POINT
from dh_tune.search.trial_docs import same_point
from dh_tune.threshold_profiles import load_profile

pytestmark = pytest.mark.slow
PAPER = {k: v for k, v in PAPER_POINT.items() if k != "lr_scale"}  # the default space searches the gate loss only
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def write_pipeline(tiny_pipeline_doc, tmp_path: Path) -> Callable[..., Path]:
    """Writes the tiny pipeline (two epochs, one trial at a time as the quickstart runs on 2 cores, some search keys
    replaced) to tmp_path/tiny.yaml; returns its path."""

    def write(data_yaml: str, **search) -> Path:
        doc = tiny_pipeline_doc(data_yaml, epochs=2)
        doc["search"].update({"max_concurrent": 1, **search})
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    return write


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("**/weights/last.pt")}


def _trial_docs(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "trials").glob("*/result.json"))]


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid` (from /proc: children, grandchildren, ...)."""
    parent_of = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent_of[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        frontier = [p for p, pp in parent_of.items() if pp in frontier]
        found += frontier
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the search and every process it started (Ray's own daemons included), as `kill -9` would."""
    family = _descendants(proc.pid)
    for pid in [proc.pid, *family]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in family) and time.time() < deadline:
        time.sleep(0.2)


def _start_and_kill_in_first_trial(args: list[str], env: dict[str, str], log: Path) -> None:
    """Run the search command in a subprocess and SIGKILL it once its first trial (the paper's point) has saved a
    checkpoint of its training."""
    out = Path(args[args.index("--out") + 1])
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "dh_tune.search", *args], env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 400
            while not any((out / "trials").glob("*/train/weights/last.pt")):
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.time() < deadline, "the search never reached its trial phase"
                time.sleep(0.5)
        finally:
            _kill_tree(proc)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_search_killed_in_a_trial_resumes_exports_profiles_logs_mlflow_and_repairs_damage(
        tiny_dataset, write_pipeline, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    pipeline = write_pipeline(tiny_dataset, trial_epochs=3, early_stop={"scheduler": "none"})
    out, uri = tmp_path / "search", f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--budget-ms", "6", "--budget-ms", "60", "--pipeline", str(pipeline), "--out", str(out),
            "--tracking-uri", uri]
    env = {**os.environ, "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    # kill -9 while the first trial trains, then the same command again: it resumes.
    _start_and_kill_in_first_trial(args, env, tmp_path / "killed.log")
    (killed,) = _trial_docs(out)
    assert killed["status"] == "running" and same_point(killed["params"], PAPER)
    trained = _mtimes(out)
    assert sorted(trained) == ["base/weights/last.pt", f"trials/{killed['trial_id']}/train/weights/last.pt"]
    killed_last = out / "trials" / killed["trial_id"] / "train" / "weights" / "last.pt"
    killed_at = torch.load(killed_last, weights_only=True)["history"]
    assert search_main(args) == 0
    err = capsys.readouterr().err
    assert "1 trial(s) of an earlier, stopped search marked interrupted" in err and "marked FAILED" in err
    base_only = {k: v for k, v in trained.items() if k.startswith("base")}
    assert {k: v for k, v in _mtimes(out).items() if k.startswith("base")} == base_only  # the base is not retrained

    trials = sorted(p.parent.name for p in (out / "trials").glob("*/result.json"))
    docs = _trial_docs(out)
    assert [d["status"] for d in docs].count("interrupted") == 1
    finished = [d for d in docs if d["status"] == "finished"]
    assert len(finished) == 2 and not same_point(finished[0]["params"], finished[1]["params"])
    # Its killed first attempt is tried again and takes over the killed training: the epochs it had are kept.
    (again,) = (d for d in finished if same_point(d["params"], PAPER))
    assert again["resumed_from"] == killed["trial_id"]
    history = torch.load(again["checkpoint"].replace("best.pt", "last.pt"), weights_only=True)["history"]
    assert len(history) == 3 and history[: len(killed_at)] == killed_at
    study = optuna.load_study(study_name="outer", storage=f"sqlite:///{out / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 2 and "RUNNING" not in states and "WAITING" not in states
    (device_dir,) = (out / "profiles").iterdir()
    index = json.loads((device_dir / "index.json").read_text())
    assert [b["budget_ms"] for b in index["budgets"]] == [6.0, 60.0]
    for b in index["budgets"]:
        prof = load_profile(device_dir / b["file"])
        assert prof.runtime == fastest_installed() != "torch"  # timed in the fastest installed runtime by default
        assert prof.checkpoint_path().is_file()
        assert prof.doc["budget_ms"] == b["budget_ms"]
        assert prof.doc["configuration"]["kind"] in ("static", "dynamic") and "comparison" in prof.doc
        # Chosen on calibration images, reported on the held-out half, with intervals, budgeted on p90.
        holdout = prof.doc["holdout"]
        assert holdout["calibration_images"] + holdout["test_images"] == 8 and holdout["test_fraction"] == 0.5
        assert prof.doc["expected"]["split"] == "test" and prof.doc["selection"]["split"] == "calibration"
        assert prof.doc["budget_stat"] == "p90" and prof.doc["intervals"]["resamples"] == 100
        low, high = prof.doc["intervals"]["latency_ms"]["p90"]
        assert low <= prof.doc["expected"]["latency_p90_ms"] <= high
    assert (device_dir / "pareto_front.png").stat().st_size > 1000
    assert "| # | profile |" in (device_dir / "profiles_compare.md").read_text()
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
    assert all(r.info.status != "RUNNING" for r in runs)
    roles = [r.data.tags.get("search_role") for r in runs]
    trial_status = sorted(r.info.status for r in runs if r.data.tags.get("search_role") == "trial")
    assert trial_status == ["FINISHED", "FINISHED"]  # the killed trial's run was resumed and finished
    assert roles.count("base") == 1 and roles.count("parent") == 1
    assert roles.count("static") == 6  # 2 sizes x (P3, P3+P4, all heads) of the static YOLOv5
    parent = next(r for r in runs if r.data.tags.get("search_role") == "parent")
    profiles = client.search_runs([exp.experiment_id], filter_string="tags.pareto = 'true'")
    assert sorted(float(r.data.tags["budget_ms"]) for r in profiles) == [6.0, 60.0]
    for r in profiles:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id and r.data.tags["device"]
        assert r.data.tags["runtime"] == fastest_installed()
        assert {"t1", "t2", "imgsz"} <= set(r.data.params)
        assert {"expected_latency_mean_ms", "selection_ap50_95", "ap50_95_ci_low"} <= set(r.data.metrics)
        names = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert any(n.endswith(".json") for n in names) and "pareto_front.png" in names

    # Damage every kind of file the search wrote: the same command repairs each, and trains nothing.
    profile = device_dir / "budget-60ms.json"
    damaged = [out / "search.json", profile, device_dir / "index.json", load_profile(profile).checkpoint_path(),
               out / "reference" / "base" / "result.json",
               # this machine's cached tables at this process's thread count (the next run's own)
               *(tmp_path / "home" / "devices").glob(f"*-{torch.get_num_threads()}-threads-*.json")]
    assert len(damaged) == 5 + 2  # a table per deployment size
    for path in damaged:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    (out / "search.json").write_bytes(b"")
    before = _mtimes(out)
    assert search_main(args) == 0  # same command, same --out: resumes, trains nothing again
    err = capsys.readouterr().err
    assert f"{out / 'search.json'}: unreadable" in err and "measuring again" in err
    assert _mtimes(out) == before
    assert sorted(p.parent.name for p in (out / "trials").glob("*/result.json")) == trials
    prof = load_profile(profile)
    assert _sha(prof.checkpoint_path()) == prof.checkpoint_sha256
    for path in damaged:
        if path.suffix == ".json":
            assert isinstance(json.loads(path.read_text()), dict), path
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


def test_search_logs_to_a_real_mlflow_server(trained_tiny, tiny_dataset, write_pipeline, tmp_path, monkeypatch) -> None:
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
        pipeline = write_pipeline(tiny_dataset)
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


def test_unreachable_tracking_server_still_exports_profiles(trained_tiny, tiny_dataset, write_pipeline, tmp_path,
                                                            capsys, monkeypatch) -> None:
    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    pipeline = write_pipeline(tiny_dataset)
    out = tmp_path / "search"
    # 0.001 ms cannot be met: its profile is exported for the record, marked so, and the exit status says it.
    assert search_main(["--budget-ms", "50", "--budget-ms", "0.001", "--checkpoint", str(trained_tiny),
                        "--pipeline", str(pipeline), "--out", str(out), "--tracking-uri",
                        f"http://127.0.0.1:{_free_port()}", "--runtime", "torch"]) == 3
    (profile,) = (out / "profiles").glob("*/budget-50ms.json")
    assert load_profile(profile).runtime == "torch"  # --runtime torch keeps eager PyTorch timings
    (missed,) = (out / "profiles").glob("*/budget-0.001ms.json")
    assert load_profile(profile).doc["feasible"] and not load_profile(missed).doc["feasible"]
    printed = capsys.readouterr()
    assert "MLflow" in printed.err and "no profile meets --budget-ms 0.001" in printed.err
    assert "(does not fit)" in printed.out  # the summary table flags the budget too


@pytest.mark.filterwarnings("ignore:Fixed parameter gate_lambda")  # the paper's point lies outside this space
def test_a_diverging_trial_is_recorded_as_failed_and_the_search_goes_on(tiny_dataset, tiny_pipeline_doc, tmp_path,
                                                                       monkeypatch) -> None:
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
